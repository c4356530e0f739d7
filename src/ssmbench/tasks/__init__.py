"""Synthetic memory tasks."""

from ssmbench.tasks.copying import MAX_TRAIN_SEED, TASKS, Copy, SelectiveCopy, make_task

__all__ = ["MAX_TRAIN_SEED", "TASKS", "Copy", "SelectiveCopy", "make_task"]
