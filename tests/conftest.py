import os
import sys
from pathlib import Path

import ssmbench  # noqa: F401  first: the test process waits as ssmbench's own processes do

# isort: split
import pytest
import torch

from ssmbench.models import restored_registry
from ssmbench.tasks.registry import REGISTRY as TASKS

TESTS = str(Path(__file__).parent)

# Worker processes (local and Ray) import the fault-injecting plugin from here.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (TESTS, os.environ.get("PYTHONPATH")) if p)
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def isolated_registries():
    """Whatever a test registers is gone after it: models, tasks, and the plugin modules it
    imported from tests/ (a config naming `--plugins faulty_models` imports it in this process)."""
    task_classes, modules = dict(TASKS), set(sys.modules)
    with restored_registry():
        yield
    TASKS.clear()
    TASKS.update(task_classes)
    for name in set(sys.modules) - modules:
        if (getattr(sys.modules[name], "__file__", None) or "").startswith(TESTS):
            del sys.modules[name]
