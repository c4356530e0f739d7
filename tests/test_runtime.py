"""The OpenMP set-up of processes ssmbench owns (ssmbench.runtime)."""

import os
import subprocess
import sys

import pytest

from ssmbench import runtime


def test_sets_the_wait_policy_before_torch_loads(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch")
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert runtime.configure_process()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    assert runtime.worker_env() == {"OMP_WAIT_POLICY": "PASSIVE"}


def test_keeps_what_the_user_set(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch")
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert runtime.configure_process()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    assert runtime.worker_env() == {"OMP_WAIT_POLICY": "ACTIVE"}


def test_too_late_once_torch_is_loaded(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert "torch" in sys.modules
    assert not runtime.configure_process()
    assert "OMP_WAIT_POLICY" not in os.environ


@pytest.mark.slow
@pytest.mark.parametrize("first", ["ssmbench.cli", "ssmbench", "ssmbench.models"])
def test_importing_ssmbench_sets_it_before_torch_loads(first):
    """Importing the CLI module (what the `ssmbench` script does first), or any part of the
    library before torch (a notebook's `import ssmbench`), sets the policy before torch, and so
    its OpenMP runtime, is loaded."""
    code = (
        f"import sys, os; import {first}; import torch; from ssmbench import runtime; "
        "print(os.environ.get('OMP_WAIT_POLICY'), runtime.CONFIGURED_BEFORE_TORCH)"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["PASSIVE", "True"], out.stderr
