"""Synthetic memory tasks behind one interface (see `ssmbench.tasks.base`), by name."""

from ssmbench.tasks.base import IGNORE_INDEX, MAX_TRAIN_SEED, Task
from ssmbench.tasks.copying import TASKS, Copy, SelectiveCopy, make_task
from ssmbench.tasks.metrics import Score, loss, score
from ssmbench.tasks.registry import REGISTRY, build, names, parameters, register, task_class

__all__ = [
    "IGNORE_INDEX",
    "MAX_TRAIN_SEED",
    "REGISTRY",
    "TASKS",
    "Copy",
    "Score",
    "SelectiveCopy",
    "Task",
    "build",
    "loss",
    "make_task",
    "names",
    "parameters",
    "register",
    "score",
    "task_class",
]
