"""One writer per results folder: `run` holds an OS lock on `OUT/.ssmbench.lock` for its life.

The kernel drops an `fcntl.flock` lock when its holder exits, however it exits (SIGKILL too), so
a stale lock cannot block a later run. The file holds the holder's PID, for the message a second
run prints. `report` and `export` only read, and take no lock.
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ssmbench.experiment.config import ConfigError

LOCKFILE = ".ssmbench.lock"


def _holder(handle: object) -> str:
    handle.seek(0)  # type: ignore[attr-defined]
    pid = handle.read().strip()  # type: ignore[attr-defined]
    return f"PID {pid}" if pid.isdigit() else "another process"


@contextmanager
def folder_lock(out: Path, wait: bool = False) -> Iterator[None]:
    """Hold `out`'s writer lock; ConfigError naming the holder if it is taken and not `wait`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCKFILE, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(handle)
            if not wait:
                raise ConfigError(
                    f"{out} is being written by another ssmbench run ({holder}); "
                    "wait for it to end, add --wait, or choose another --out"
                ) from None
            print(f"waiting for {holder} to finish writing {out}", file=sys.stderr)
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
