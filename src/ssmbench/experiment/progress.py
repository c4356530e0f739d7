"""What a sweep shows while it runs.

On a terminal: a live display of jobs done / total (the cells to train and the cost
measurements, one per model and shape) and, for each running cell, its step, loss,
validation accuracy and time left. Elsewhere (a pipe, a file, CI): plain lines, never wrapped,
one when a cell starts, one when it ends, and a progress line per running cell at most every
`log_every` seconds. Every message is plain text: model, user and exception text is never read as
rich markup (`[/B, T]` or `[cuda]` print as they are).
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from ssmbench.experiment.results import Status


def result_line(cell_id: str, payload: Any) -> str:
    """`cell: status — accuracy … in … steps`, or the first line of its error."""
    status, metrics = payload.status, payload.metrics or {}
    detail = (
        f"accuracy {metrics['accuracy']:.3f} in {metrics['steps']} steps"
        if "accuracy" in metrics
        else ((payload.error or "").splitlines() or [""])[0]
        if status != Status.DONE
        else "measured"
    )
    return f"{cell_id}: {status} — {detail}"


def progress_line(payload: dict[str, Any]) -> str:
    return (
        f"step {payload['step']}/{payload['max_steps']}  loss {payload['train_loss']:.3f}  "
        f"val acc {payload['val_accuracy']:.3f}"
    )


class SweepDisplay:
    def __init__(self, total: int, console: Console | None = None, log_every: float = 10.0) -> None:
        self.console = console or Console(stderr=True)
        self.live = self.console.is_terminal
        self.log_every, self.total, self.finished = log_every, total, 0
        self.last_logged: dict[str, float] = {}
        self.progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}", markup=False),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            disable=not self.live,
        )
        self.overall = self.progress.add_task("jobs", total=total, info="")
        self.cells: dict[str, TaskID] = {}

    def __enter__(self) -> SweepDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def say(self, line: str) -> None:
        """One plain line: above the live display, or as is on a pipe (no markup, no wrap)."""
        if self.live:
            self.console.print(Text(line), soft_wrap=True)
        else:
            stream: TextIO = self.console.file or sys.stderr
            stream.write(line + "\n")
            stream.flush()

    def event(self, kind: str, cell_id: str, payload: Any) -> None:
        if kind == "start":
            self.cells[cell_id] = self.progress.add_task(cell_id, total=None, info="starting")
            self.last_logged[cell_id] = time.monotonic()
            if not self.live:
                self.say(f"{cell_id}: started ({self.finished}/{self.total} jobs finished)")
        elif kind == "progress" and "warning" in payload:
            self.say(f"{cell_id}: warning: {payload['warning']}")
        elif kind == "progress" and cell_id in self.cells:
            self.progress.update(
                self.cells[cell_id],
                completed=payload["step"],
                total=payload["max_steps"],
                info=f"loss {payload['train_loss']:.3f}  val acc {payload['val_accuracy']:.3f}",
            )
            now = time.monotonic()
            if not self.live and now - self.last_logged.get(cell_id, 0.0) >= self.log_every:
                self.last_logged[cell_id] = now
                self.say(f"{cell_id}: {progress_line(payload)}")
        elif kind == "result":
            task = self.cells.pop(cell_id, None)
            self.last_logged.pop(cell_id, None)
            if task is not None:
                self.progress.remove_task(task)
            self.progress.advance(self.overall)
            self.finished += 1
            self.say(result_line(cell_id, payload))
