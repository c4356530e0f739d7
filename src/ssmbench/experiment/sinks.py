"""Logging sinks: a TensorBoard and a W&B run per cell, written by the worker that runs the cell.

Off unless a sweep asks (`log: [tensorboard, wandb]`, `ssmbench run --log ...`). A training job
logs into its cell's run the training loss, validation accuracy and lr at every point the trainer
reports as progress, then the test accuracy and the training's own figures (`END`) and its
status. Costs are measured after all training, once per model and input shape, and a cost job
logs the cost figures (`measure.MEASURES`, as `cost/...`).

- TensorBoard: one folder per cell, OUT/tb/<cell id, filesystem-safe> (`safe_name`), the cell's
  config as hparams. A resumed cell purges the points its interrupted attempt logged past the
  checkpoint. A cost job adds an event file with the cost figures to the folder of every cell
  sharing them (the same run in TensorBoard).
- W&B: one run per cell (job type "train"), its id derived from the sweep and the cell so that a
  resumed cell resumes it, grouped by sweep (`LogSpec.group`), config = the cell's config, files
  under OUT/wandb, in the mode of the driver's WANDB_MODE (offline: nothing leaves the machine;
  the workers' own environment may not be the driver's). A cost measurement is a run of its own
  in the group (job type "cost", named by the cost id): an offline run cannot be reopened to add
  to it. Workers have no terminal, so W&B never prompts: without credentials it fails as any
  sink does.

A sink that fails to import, open or write gives one warning line (through the job's progress
channel, which the driver shows) and is dropped for the rest of the job; the job's result, which
the driver records in the store, is never touched by a logger.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from ssmbench.experiment.config import CellConfig, SinkName, SweepConfig
from ssmbench.experiment.measure import MEASURES
from ssmbench.experiment.results import CellResult, Status
from ssmbench.experiment.train import Progress, lr_at, warn
from ssmbench.files import own_folder

# What a training job logs at its end: tag -> the metric of its result.
END = {
    "test/accuracy": "accuracy",
    "test/exact_match": "exact_match",
    "val/best_accuracy": "val_accuracy",
    "train/seconds": "train_s",
    "model/params": "params",
}


def safe_name(job_id: str) -> str:
    """`job_id` as one file name: characters but letters, digits and `._@=+-` become `_`; a name
    too long for a file system is cut and keeps a digest of the whole id."""
    name = re.sub(r"[^A-Za-z0-9._@=+-]", "_", job_id)
    if len(name) <= 200:
        return name
    return f"{name[:180]}-{hashlib.blake2b(job_id.encode(), digest_size=8).hexdigest()}"


@dataclass(frozen=True)
class LogSpec:
    """What every job of a sweep logs to, as the driver saw it (it travels to the workers)."""

    sinks: tuple[SinkName, ...]
    sweep: str  # a digest of the sweep's fingerprint
    runs: dict[str, tuple[str, ...]]  # cost id -> the training cells that share its cost
    wandb_mode: str | None  # the driver's WANDB_MODE

    def group(self, out_dir: Path) -> str:
        """The sweep's name in the dashboards: its output folder's name and its digest."""
        return f"{Path(out_dir).name}-{self.sweep}"


def log_spec(config: SweepConfig) -> LogSpec | None:
    """The config's logging (None when it asks for none)."""
    if not config.log:
        return None
    runs: dict[str, list[str]] = {}
    for cell in config.cells():
        runs.setdefault(cell.cost_id, []).append(cell.id)
    return LogSpec(
        sinks=tuple(config.log),
        sweep=hashlib.blake2b(config.fingerprint().encode(), digest_size=4).hexdigest(),
        runs={cost_id: tuple(ids) for cost_id, ids in runs.items()},
        wandb_mode=os.environ.get("WANDB_MODE"),
    )


def usable(config: SweepConfig) -> tuple[SweepConfig, list[str]]:
    """The config without the sinks whose package does not import here, and one warning line
    for each of those (the run goes on without it)."""
    kept, warnings = [], []
    for name in config.log:
        try:
            importlib.import_module(SINKS[name].module)
        except Exception as e:  # noqa: BLE001 - a broken install is as missing as an absent one
            warnings.append(
                f"--log {name} is off: {type(e).__name__}: {_first_line(e)} "
                f'(pip install "ssmbench[{name}]")'
            )
            continue
        kept.append(name)
    return config.model_copy(update={"log": kept}), warnings


@dataclass(frozen=True)
class Run:
    """One run in the dashboards: a cell's, or (W&B) a cost measurement's."""

    name: str  # the cell id, or the cost id
    group: str
    config: dict[str, Any] | None  # the job's cell config; None: a run reopened for its costs
    job_type: str = "train"  # "cost": a W&B run of a cost measurement


class Sink(Protocol):
    """One run in one dashboard, for the length of a job."""

    module: ClassVar[str]  # what it imports: the package it needs
    costs_apart: ClassVar[bool]  # a cost job logs in a run of its own, not in the cells' runs

    def __init__(self, run: Run, out_dir: Path, log: LogSpec) -> None: ...

    def point(self, scalars: dict[str, float], step: int) -> None:
        """A learning-curve point at training step `step`."""

    def summary(self, values: dict[str, float | str]) -> None:
        """The run's final figures (test accuracy, costs) and its status."""

    def close(self) -> None:
        """Flush and close (the job is over, or interrupted)."""


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, float | str | bool]:
    """A nested config as TensorBoard's hparams: dotted keys, lists and None as JSON text."""
    flat: dict[str, float | str | bool] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        elif isinstance(value, bool | int | float | str):
            flat[f"{prefix}{key}"] = value
        else:
            flat[f"{prefix}{key}"] = json.dumps(value)
    return flat


class TensorBoardSink:
    """The folder OUT/tb/<cell id made safe>, opened at the first point (a training job purges
    the steps from there on) with the cell's config as hparams, beside its scalars."""

    module = "torch.utils.tensorboard"
    costs_apart = False

    def __init__(self, run: Run, out_dir: Path, log: LogSpec) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.run, self.step = run, 0
        self.folder = own_folder(Path(out_dir) / "tb" / safe_name(run.name))
        self.writer: SummaryWriter | None = None
        self._new_writer = SummaryWriter

    def _writer(self, step: int) -> Any:
        if self.writer is None:
            training = self.run.config is not None  # a run reopened for its costs has none
            purge = step if training else None
            self.writer = self._new_writer(str(self.folder), purge_step=purge)
            if training:
                from torch.utils.tensorboard.summary import hparams

                for part in hparams(_flat(self.run.config), dict.fromkeys(END, 0.0)):
                    self.writer.file_writer.add_summary(part)
        return self.writer

    def point(self, scalars: dict[str, float], step: int) -> None:
        writer, self.step = self._writer(step), step
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, step)

    def summary(self, values: dict[str, float | str]) -> None:
        writer = self._writer(self.step)
        for tag, value in values.items():
            if isinstance(value, str):
                writer.add_text(tag, value, self.step)
            else:
                writer.add_scalar(tag, value, self.step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def wandb_id(group: str, name: str) -> str:
    """The W&B run id of a cell (or cost) of a sweep: the same in every job that logs to it."""
    return hashlib.blake2b(f"{group}/{name}".encode(), digest_size=8).hexdigest()


class WandbSink:
    """The W&B run, created or resumed by its id; final figures go to its summary."""

    module = "wandb"
    costs_apart = True

    def __init__(self, run: Run, out_dir: Path, log: LogSpec) -> None:
        import wandb

        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "ssmbench"),
            id=wandb_id(run.group, run.name),
            name=run.name,
            group=run.group,
            job_type=run.job_type,
            config=run.config,
            dir=str(out_dir),  # W&B writes OUT/wandb/
            mode=log.wandb_mode,  # type: ignore[arg-type]
            resume="allow",
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
        )

    def point(self, scalars: dict[str, float], step: int) -> None:
        self.run.log(scalars, step=step)

    def summary(self, values: dict[str, float | str]) -> None:
        self.run.summary.update(values)

    def close(self) -> None:
        self.run.finish()


SINKS: dict[SinkName, type[Sink]] = {"tensorboard": TensorBoardSink, "wandb": WandbSink}


def _first_line(text: object) -> str:
    """The first line of an error or its text, at most 300 characters."""
    return (str(text).splitlines() or [""])[0][:300]


class JobLog:
    """The sinks of one job. Every call to a sink is guarded: its first failure drops that sink
    with one warning, and nothing is raised to the job."""

    def __init__(
        self, log: LogSpec | None, cell: CellConfig, out_dir: Path, on_progress: Progress | None
    ) -> None:
        self.log = log or LogSpec(sinks=(), sweep="", runs={}, wandb_mode=None)
        self.cell, self.out_dir, self.on_progress = cell, Path(out_dir), on_progress
        self.names = self.log.sinks
        self.dropped: set[str] = set()
        self.open: dict[str, Sink] = {}

    def _guard(self, name: str, action: Any) -> None:
        if name in self.dropped:
            return
        try:
            action()
        except Exception as e:  # noqa: BLE001 - a logger never fails the job
            self.dropped.add(name)
            sink = self.open.pop(name, None)
            warn(self.on_progress, f"{name} logging off for this job: {type(e).__name__}: "
                                   f"{_first_line(e)}")  # fmt: skip
            if sink is not None:
                with contextlib.suppress(Exception):  # already reported once
                    sink.close()

    def _sink(self, name: SinkName, run: Run) -> Sink:
        return SINKS[name](run, self.out_dir, self.log)

    def start(self) -> None:
        """Open the cell's run in every sink (a training job)."""
        config = self.cell.model_dump(mode="json")
        run = Run(self.cell.id, self.log.group(self.out_dir), config)
        for name in self.names:
            self._guard(name, lambda name=name: self.open.__setitem__(name, self._sink(name, run)))

    def on_point(self) -> Progress | None:
        """The trainer's progress callback: the job's own, and the sinks' when there are any."""
        return self._progress if self.names else self.on_progress

    def _progress(self, point: dict[str, Any]) -> None:
        if "step" not in point:  # a warning: where the job's own warnings go
            warn(self.on_progress, point["warning"])
            return
        if self.on_progress is not None:
            self.on_progress(point)
        hp = self.cell.train
        scalars = {
            "train/loss": point["train_loss"],
            "val/accuracy": point["val_accuracy"],
            "train/lr": lr_at(hp.lr, hp, point["step"] - 1),  # that of the step just taken
        }
        for name, sink in list(self.open.items()):
            self._guard(name, lambda sink=sink: sink.point(scalars, point["step"]))

    def finish(self, result: CellResult) -> None:
        """A training job's outcome into its run."""
        metrics = result.metrics or {}
        values: dict[str, float | str] = {
            tag: metrics[key] for tag, key in END.items() if metrics.get(key) is not None
        }
        for length, accuracy in (metrics.get("accuracy_by_length") or {}).items():
            if accuracy is not None:
                values[f"test/accuracy_L{length}"] = accuracy
        values["status"] = str(result.status) + (f": {_first_line(result.error)}"
                                                 if result.error else "")  # fmt: skip
        for name, sink in list(self.open.items()):
            self._guard(name, lambda sink=sink: sink.summary(values))

    def costs(self, result: CellResult) -> None:
        """A cost job's figures: into every training run of its model and input shape, or into
        a run of its own (a sink whose runs cannot be reopened)."""
        if not self.names or result.status != Status.DONE or result.metrics is None:
            return
        figures = {k: result.metrics[k] for k in MEASURES if _is_number(result.metrics.get(k))}
        values: dict[str, float | str] = {f"cost/{key}": v for key, v in figures.items()}
        group, config = self.log.group(self.out_dir), self.cell.model_dump(mode="json")
        apart = [Run(self.cell.cost_id, group, config, job_type="cost")]
        cells = [Run(cell_id, group, None) for cell_id in self.log.runs.get(self.cell.cost_id, ())]
        for name in self.names:
            for run in apart if SINKS[name].costs_apart else cells:
                self._guard(name, lambda name=name, run=run: self._reopen(name, run, values))

    def _reopen(self, name: SinkName, run: Run, values: dict[str, float | str]) -> None:
        sink = self._sink(name, run)
        try:
            sink.summary(values)
        finally:
            sink.close()

    def close(self) -> None:
        for name, sink in list(self.open.items()):
            self._guard(name, sink.close)
        self.open.clear()


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@contextmanager
def job_log(
    log: LogSpec | None,
    kind: str,
    cell: CellConfig,
    out_dir: Path,
    on_progress: Progress | None,
) -> Iterator[JobLog]:
    """The sinks of a job of `kind` ('train' opens the cell's runs now), closed at its end,
    interrupted or not (with no sinks when `log` is None)."""
    sinks = JobLog(log, cell, out_dir, on_progress)
    if kind == "train":
        sinks.start()
    try:
        yield sinks
    finally:
        sinks.close()
