"""The live progress display: cells done / total, and for each running cell its step, loss,
validation accuracy and time left. Quiet (one line per finished cell) when not on a terminal."""

from __future__ import annotations

from typing import Any

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


class SweepDisplay:
    def __init__(self, total: int, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            disable=not self.console.is_terminal,
        )
        self.overall = self.progress.add_task("cells", total=total, info="")
        self.cells: dict[str, TaskID] = {}

    def __enter__(self) -> SweepDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def event(self, kind: str, cell_id: str, payload: Any) -> None:
        if kind == "start":
            self.cells[cell_id] = self.progress.add_task(cell_id, total=None, info="starting")
        elif kind == "progress" and "warning" in payload:
            self.console.print(Text(f"{cell_id}: warning: {payload['warning']}"))
        elif kind == "progress" and cell_id in self.cells:
            info = f"loss {payload['train_loss']:.3f}  val acc {payload['val_accuracy']:.3f}"
            self.progress.update(
                self.cells[cell_id],
                completed=payload["step"],
                total=payload["max_steps"],
                info=info,
            )
        elif kind == "result":
            task = self.cells.pop(cell_id, None)
            if task is not None:
                self.progress.remove_task(task)
            self.progress.advance(self.overall)
            status, metrics = payload.status, payload.metrics or {}
            detail = (
                f"accuracy {metrics['accuracy']:.3f} in {metrics['steps']} steps"
                if "accuracy" in metrics
                else (payload.error or "").splitlines()[0]
                if status != Status.DONE
                else "measured"
            )
            self.console.print(f"{cell_id}: {status} — {detail}", highlight=False)
