"""One job, in whatever process runs it: train a cell (`run_cell`) or measure the cost of its
model and input shape (`measure_cell`), and describe the environment.

Neither raises for a failure of the job itself: it returns the outcome as a status
(done / diverged / oom / failed) with the error text, so one bad cell cannot stop a sweep. A job
stopped by its output (a full disk, a link where its checkpoint belongs) has no outcome: it is
returned as still `running`, which the sweep stops on and a rerun retries.
"""

from __future__ import annotations

import errno
import os
import signal
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import torch

from ssmbench.experiment.config import CellConfig
from ssmbench.experiment.measure import environment, measure, resolve_device
from ssmbench.experiment.results import CellResult, Status
from ssmbench.experiment.sinks import LogSpec, job_log
from ssmbench.experiment.train import (
    CompileBackend,
    Diverged,
    Progress,
    as_compile_failure,
    build_model,
    describe_groups,
    make_optimizer,
    train,
)
from ssmbench.files import ForeignFile, OutputError, cannot_write, own_folder
from ssmbench.models import get
from ssmbench.models.kernels import recorded_backends
from ssmbench.ops.scan import set_default_backend

CHECKPOINTS = "checkpoints"
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@contextmanager
def sigterm_as_sigint() -> Iterator[None]:
    """While the block runs, SIGTERM (a scheduler's preemption, `timeout`, `kill`) raises
    KeyboardInterrupt as SIGINT does, so the sweep's driver and its workers stop the one way
    Ctrl-C stops them: checkpoint saved, workers stopped, lock released, resumable. Outside the
    main thread signals are not ours to set, and the block runs as it is."""
    try:
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def checkpoint_path(out_dir: Path, cell_id: str) -> Path:
    return Path(out_dir) / CHECKPOINTS / (cell_id.replace("/", "_") + ".pt")


def by_length_metrics(by_length: dict[int, dict[str, Any]]) -> dict[str, dict[int, Any]]:
    """accuracy_by_length, exact_match_by_length (None where oom) and status_by_length."""
    return {
        f"{name}_by_length": {length: result[name] for length, result in by_length.items()}
        for name in ("accuracy", "exact_match", "status")
    }


def _prepare(cell: CellConfig) -> torch.device:
    """Threads and scan backend as the cell asks, in this process; the device it runs on."""
    if cell.threads is not None:
        torch.set_num_threads(cell.threads)
    set_default_backend(cell.scan)
    return resolve_device(cell.device)


def _describe(cell: CellConfig, model: torch.nn.Module, device: torch.device) -> dict[str, Any]:
    """Parameters, the registry's facts (display name, family, state size...), the environment,
    and the backend of each kernel family the model's modules call (scan, conv, SSD)."""
    sizes = cell.arch.build_kwargs(cell.model)  # d_model, n_layers, d_state and the options
    d_model, d_state = sizes.pop("d_model"), sizes.pop("d_state")
    sizes.pop("n_layers")
    facts = get(cell.model).describe(d_model, d_state, cell.seq_len, **sizes)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        **facts,
        **environment(device),
        **recorded_backends(model, device),
    }


def _unwritten(error: BaseException) -> CellResult | None:
    """A job stopped because its output could not be written (full disk or quota anywhere, an
    OutputError, a ForeignFile): no outcome of the cell, which stays `running` for the next run
    to retry; the error is the one line the sweep stops with. None for every other error."""
    if isinstance(error, ForeignFile):
        return CellResult(Status.RUNNING, error=str(error))
    if isinstance(error, OutputError) or (
        isinstance(error, OSError) and error.errno in _DISK_FULL
    ):  # without a file name: most likely a temporary file (compiler caches)
        where = error.filename or tempfile.gettempdir()
        return CellResult(Status.RUNNING, error=str(cannot_write(error, where)))
    return None


def _failure(error: BaseException, curve: list[dict[str, float]]) -> CellResult:
    """A failed cell's outcome: diverged, out of memory, or failed with the end of its traceback;
    a job its output stopped is not failed (`_unwritten`)."""
    unwritten = _unwritten(error)
    if unwritten is not None:
        return unwritten
    if isinstance(error, Diverged):
        return CellResult(Status.DIVERGED, error=str(error), curve=curve)
    compile_failure = as_compile_failure(error)
    if compile_failure is not None:  # one line: the traceback is torch's, not the model's
        return CellResult(Status.FAILED, error=str(compile_failure), curve=curve)
    if isinstance(error, torch.cuda.OutOfMemoryError):
        message = str(error).splitlines()[0] if str(error) else "CUDA out of memory"
        return CellResult(Status.OOM, error=message, curve=curve)
    detail = traceback.format_exc(limit=-3)
    message = f"{type(error).__name__}: {error}\n{detail}"
    return CellResult(Status.FAILED, error=message, curve=curve)


def run_cell(
    cell: CellConfig,
    out_dir: Path,
    on_progress: Progress | None = None,
    compile_backend: CompileBackend = "inductor",
) -> CellResult:
    """Train one cell (resuming from its checkpoint) and score it; its cost is measured apart.
    `compile_backend` is torch.compile's backend when the cell asks to compile."""
    checkpoint = checkpoint_path(out_dir, cell.id)
    curve: list[dict[str, float]] = []
    started_at = time.time()
    try:
        own_folder(checkpoint.parent)
        device = _prepare(cell)
        model, outcome = train(cell, device, checkpoint, on_progress, compile_backend)
        curve = outcome.curve
        metrics: dict[str, Any] = {
            "accuracy": outcome.accuracy,
            "exact_match": outcome.exact_match,
            "val_accuracy": outcome.best_val_accuracy,
            "steps": outcome.steps,
            "best_step": outcome.best_step,
            "train_s": outcome.train_s,
            "stop_reason": outcome.stop_reason,
            "compiled": cell.compile,
            "compile_s": outcome.compile_s,
            **_describe(cell, model, device),
            "task_key": cell.task.key,
            "optimizer_groups": describe_groups(make_optimizer(model, cell.train)),
            **by_length_metrics(outcome.by_length),
            "started_at": started_at,
            "ended_at": time.time(),
        }
        checkpoint.unlink(missing_ok=True)
        return CellResult(Status.DONE, metrics, curve=curve)
    except Exception as e:  # noqa: BLE001 - any failure of the cell is recorded, not raised
        return _failure(e, curve)


def measure_cell(cell: CellConfig, compile_backend: CompileBackend = "inductor") -> CellResult:
    """The cost of the cell's model on its input shape, with the conditions it was taken under.

    A freshly initialized model (seed `cell.seed`) on one batch of `cell.train.batch_size`
    sequences; the training step is the cell's own (optimizer, weight decay, clipping, warm-up).
    With `cell.compile` the model runs under torch.compile: the step times exclude compilation,
    timed apart as compile_s.
    """
    started_at = time.time()
    try:
        device = _prepare(cell)
        load_avg = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
        torch.manual_seed(cell.seed)
        task = cell.task.build(cell.seq_len)
        model = build_model(cell, task).to(device)
        inputs, labels = task.sample(
            cell.train.batch_size, torch.Generator().manual_seed(0), train=True
        )
        hp, spec = cell.train, cell.measure
        metrics = measure(model, inputs, labels, device, spec.warmup, spec.repeats, hp,
                          compile=cell.compile, compile_backend=compile_backend)  # fmt: skip
        conditions = {
            "batch_size": hp.batch_size,
            "compiled": cell.compile,
            "load_avg_1min": load_avg,
            "measured_lr": hp.lr,
            "measured_weight_decay": hp.weight_decay,
            "measured_from": started_at,
            "measured_to": time.time(),
        }
        return CellResult(Status.DONE, metrics | _describe(cell, model, device) | conditions)
    except Exception as e:  # noqa: BLE001 - a failed measurement is recorded, not raised
        return _failure(e, [])


Kind = Literal["train", "cost"]


def job_id(kind: Kind, cell: CellConfig) -> str:
    """A training job is known by its cell's id, a cost measurement by the cell's cost_id."""
    return cell.id if kind == "train" else cell.cost_id


def run_job(
    kind: Kind,
    cell: CellConfig,
    out_dir: Path,
    on_progress: Progress | None = None,
    log: LogSpec | None = None,
) -> CellResult:
    """Run one job; `log`: the sweep's logging sinks, fed from here and never failing it."""
    with job_log(log, kind, cell, out_dir, on_progress) as sinks:
        if kind == "train":
            result = run_cell(cell, out_dir, sinks.on_point())
            sinks.finish(result)
        else:
            result = measure_cell(cell)
            sinks.costs(result)
    return result
