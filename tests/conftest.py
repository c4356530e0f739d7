import os
from pathlib import Path

import ssmbench  # noqa: F401  first: the test process waits as ssmbench's own processes do

# isort: split
import torch

TESTS = str(Path(__file__).parent)

# Worker processes (local and Ray) import the fault-injecting plugin from here.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (TESTS, os.environ.get("PYTHONPATH")) if p)
torch.set_num_threads(min(2, torch.get_num_threads()))
