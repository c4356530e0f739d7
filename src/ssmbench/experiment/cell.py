"""One cell, end to end, in whatever process runs it: train, measure, describe the environment.

`run_cell` never raises for a failure of the cell itself: it returns the outcome as a status
(done / diverged / oom / failed) with the error text, so one bad cell cannot stop a sweep.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

import torch

from ssmbench.experiment.config import CellConfig
from ssmbench.experiment.measure import environment, measure, resolve_device
from ssmbench.experiment.results import CellResult, Status
from ssmbench.experiment.train import Diverged, Progress, train
from ssmbench.layers.s6 import S6
from ssmbench.ops.scan import resolve_backend, set_default_backend

CHECKPOINTS = "checkpoints"


def checkpoint_path(out_dir: Path, cell_id: str) -> Path:
    return Path(out_dir) / CHECKPOINTS / (cell_id.replace("/", "_") + ".pt")


def by_length_metrics(by_length: dict[int, dict[str, Any]]) -> dict[str, dict[int, Any]]:
    """accuracy_by_length, exact_match_by_length (None where oom) and status_by_length."""
    return {
        f"{name}_by_length": {length: result[name] for length, result in by_length.items()}
        for name in ("accuracy", "exact_match", "status")
    }


def run_cell(cell: CellConfig, out_dir: Path, on_progress: Progress | None = None) -> CellResult:
    """The outcome of one cell; resumes from its checkpoint."""
    checkpoint = checkpoint_path(out_dir, cell.id)
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    curve: list[dict[str, float]] = []
    try:
        if cell.threads is not None:
            torch.set_num_threads(cell.threads)
        set_default_backend(cell.scan)
        device = resolve_device(cell.device)
        model, outcome = train(cell, device, checkpoint, on_progress)
        curve = outcome.curve
        metrics: dict[str, Any] = {
            "accuracy": outcome.accuracy,
            "exact_match": outcome.exact_match,
            "steps": outcome.steps,
            "best_step": outcome.best_step,
            "best_val_accuracy": outcome.best_val_accuracy,
            "train_s": outcome.train_s,
            "stop_reason": outcome.stop_reason,
            "params": sum(p.numel() for p in model.parameters()),
            "task_key": cell.task.key,
            **by_length_metrics(outcome.by_length),
        }
        if cell.measure.enabled:
            task = cell.task.build(cell.seq_len)
            inputs, labels = task.sample(
                cell.train.batch_size, torch.Generator().manual_seed(0), train=True
            )
            metrics |= measure(
                model,
                inputs,
                labels,
                device,
                warmup=cell.measure.warmup,
                repeats=cell.measure.repeats,
                lr=cell.train.lr,
            )
        uses_scan = any(isinstance(m, S6) for m in model.modules())
        metrics |= environment(device)
        metrics["scan_backend"] = resolve_backend(device) if uses_scan else None
        checkpoint.unlink(missing_ok=True)
        return CellResult(Status.DONE, metrics, curve=curve)
    except Diverged as e:
        return CellResult(Status.DIVERGED, error=str(e), curve=curve)
    except torch.cuda.OutOfMemoryError as e:
        message = str(e).splitlines()[0] if str(e) else "CUDA out of memory"
        return CellResult(Status.OOM, error=message, curve=curve)
    except Exception as e:  # noqa: BLE001 - any failure of the cell is recorded, not raised
        detail = traceback.format_exc(limit=-3)
        return CellResult(Status.FAILED, error=f"{type(e).__name__}: {e}\n{detail}", curve=curve)
