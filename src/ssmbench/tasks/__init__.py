"""Synthetic memory tasks behind one interface (see `ssmbench.tasks.base`), by name."""

from ssmbench.tasks.base import IGNORE_INDEX, MAX_TRAIN_SEED, Task
from ssmbench.tasks.metrics import Score, loss, score
from ssmbench.tasks.registry import REGISTRY, build, names, parameters, register, task_class
from ssmbench.tasks.selective_copy import Copy, SelectiveCopy

__all__ = [
    "IGNORE_INDEX",
    "MAX_TRAIN_SEED",
    "REGISTRY",
    "Copy",
    "Score",
    "SelectiveCopy",
    "Task",
    "build",
    "loss",
    "names",
    "parameters",
    "register",
    "score",
    "task_class",
]
