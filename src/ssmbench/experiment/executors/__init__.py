"""Executors run cells and report events to the sweep's driver, which alone writes the store.

Events are `(kind, cell_id, payload)`: `start` (payload None) when a worker begins a cell,
`progress` (a learning-curve point) during training, and `result` (a `CellResult`) at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from ssmbench.experiment.config import CellConfig

Emit = Callable[[str, str, Any], None]


class Executor(Protocol):
    def run(self, cells: list[CellConfig], out_dir: Path, emit: Emit, kind: str = "train") -> None:
        """Run every cell's job of `kind` (cell.job_id names it in the events): 'train' trains
        the cell, 'cost' measures the cost of its model and input shape."""
