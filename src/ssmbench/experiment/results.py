"""Results as types: one `Status` enum and the typed record a cell's run returns.

The store's CHECK constraint, the set of finished statuses the sweep skips, the report's failure
table and the executors all derive from `Status`; a cell's outcome travels from worker to driver
to store as a `CellResult`, never as a loose dict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Status(str, Enum):
    """Where a cell stands. Its value is the word stored and shown."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    DIVERGED = "diverged"
    OOM = "oom"

    def __str__(self) -> str:
        return self.value


# Outcomes of the config itself: a rerun skips them. Failed and running cells are retried.
FINISHED = frozenset({Status.DONE, Status.DIVERGED, Status.OOM})
# Outcomes that produced no result: the report lists them with their error.
FAILURES = frozenset({Status.FAILED, Status.DIVERGED, Status.OOM})


@dataclass
class CellResult:
    """What running one job (a training cell or a cost measurement) gave.

    `metrics` maps a metric name to its value (None unless done); `curve` holds the learning
    curve's points {step, train_loss, val_accuracy, elapsed_s}, possibly partial on failure.
    """

    status: Status
    metrics: dict[str, Any] | None = None
    error: str | None = None
    curve: list[dict[str, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.status = Status(self.status)

    @classmethod
    def lost(cls, job_id: str, why: str) -> CellResult:
        """The result of a job whose worker vanished without reporting."""
        return cls(Status.FAILED, error=f"worker running {job_id} died: {why}")
