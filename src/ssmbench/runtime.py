"""Process set-up for the processes ssmbench owns: the `ssmbench` command, its local worker
processes (they inherit the environment) and Ray workers (`worker_env()`).

OpenMP (torch's CPU thread pool) spin-waits by default at the end of every parallel region. When
another process shares the cores, the spinning thread holds a core that the thread it waits for
needs, and each region can last a whole scheduler time slice instead of microseconds: training
steps measured 4-19x slower beside one busy process (issue 12). Waiting passively (sleeping) costs
a wake-up per region instead, which is small now that the selective scan is one parallel region
per call (the fused 'cpp' backend) rather than thousands. The wait policy is read once, when
the OpenMP runtime loads (when torch is imported), so it is set before that; a value the user set
is kept. Importing this module does it (the `ssmbench` command imports it first).
"""

from __future__ import annotations

import os
import sys

OPENMP_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def configure_process() -> bool:
    """Set OPENMP_ENV (where the user has not) before torch loads; False if torch already has."""
    if "torch" in sys.modules:
        return False
    for key, value in OPENMP_ENV.items():
        os.environ.setdefault(key, value)
    return True


def worker_env() -> dict[str, str]:
    """The environment variables of OPENMP_ENV as this process has them, for worker processes
    started elsewhere (Ray's runtime_env)."""
    return {key: os.environ.get(key, value) for key, value in OPENMP_ENV.items()}


CONFIGURED_BEFORE_TORCH = configure_process()
