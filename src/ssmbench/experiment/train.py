"""Training one cell: Adam on the task's training stream, validation, early stopping, checkpoints.

Nothing here knows a task's layout: the task gives (inputs, labels) with -100 where nothing is
scored, and the loss, per-token accuracy and exact match come from `ssmbench.tasks.metrics`. The
model is trained on the task's training labels and scored on its evaluation labels. The
best-validation weights are kept and scored on the fixed test set, then on a fixed test set at
each evaluation length (a length that does not fit in memory is recorded as oom).

With `cell.compile` the model's forward runs under torch.compile (in place, so checkpoints keep
their keys): the first training step of the process (tracing and code generation of forward and
backward, plus that step) is timed apart as `compile_s`; `train_s` is the whole wall time, that
included. A failure of torch.compile ends the cell with `CompileFailed`, one line saying so.

A checkpoint holds everything the loop needs to continue bit-identically (weights, optimizer,
best weights, early-stopping state, curve, both random generators). One that cannot be loaded
(truncated, corrupt, another cell's, other shapes) is moved aside to `*.corrupt` with a one-line
warning and the cell starts again from step 0.
"""

from __future__ import annotations

import copy
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ssmbench.experiment.config import CellConfig, TrainConfig
from ssmbench.files import atomic_write
from ssmbench.layers.marks import marks_of
from ssmbench.models import build, get
from ssmbench.models.autoencoder import with_readout
from ssmbench.tasks import Score, Task, loss, score
from ssmbench.tasks.data import Batch, TrainingStream, fixed_test_set, held_out

Progress = Callable[[dict[str, Any]], None]
# What torch.compile takes as `backend`: a name ('inductor', 'eager', ...) or a callable.
CompileBackend = str | Callable[..., Any]


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


class CompileFailed(RuntimeError):
    """torch.compile could not compile the model (e.g. inductor unavailable): one line."""


def compile_model(model: nn.Module, backend: CompileBackend = "inductor") -> nn.Module:
    """`model` with its forward under torch.compile, in place (state_dict keys unchanged); the
    one compile helper of the trainer, `measure` and `bench`. Compilation happens lazily, at the
    first call."""
    model.compile(backend=backend)
    return model


def _raised_by_compiler(error: BaseException) -> bool:
    """Whether `error` is dynamo's or inductor's: one of their exception types, or raised in
    their code (e.g. an AssertionError of dynamo's bytecode rewriting)."""
    from torch._dynamo.exc import TorchDynamoException

    if isinstance(error, TorchDynamoException):
        return True
    frame = error.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    where = Path(frame.tb_frame.f_code.co_filename).parts if frame is not None else ()
    return "torch" in where and bool({"_dynamo", "_inductor"} & set(where))


def as_compile_failure(error: BaseException) -> CompileFailed | None:
    """A torch.compile failure (dynamo's or inductor's error) as one line saying so; None for
    every other error."""
    if isinstance(error, CompileFailed):
        return error
    if not _raised_by_compiler(error):
        return None
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    detail = " ".join(lines[:2])[:300]
    return CompileFailed(
        f"torch.compile failed ({type(error).__name__}: {detail}); run without --compile"
    )


class CheckpointError(Exception):
    """A checkpoint file that cannot be used to resume this cell."""


@dataclass
class EarlyStopping:
    """Stop when validation accuracy has not improved for `patience` steps, or reached `target`."""

    patience: int | None
    target: float | None = None
    best: float = -1.0
    best_step: int = 0

    def update(self, step: int, accuracy: float) -> bool:
        """Record an evaluation; True when it is a new best."""
        if accuracy > self.best:
            self.best, self.best_step = accuracy, step
            return True
        return False

    def stop_reason(self, step: int) -> str | None:
        if self.target is not None and self.best >= self.target:
            return "target accuracy reached"
        if self.patience is not None and step - self.best_step >= self.patience:
            return f"no validation gain for {self.patience} steps"
        return None


@dataclass
class TrainOutcome:
    accuracy: float
    exact_match: float
    steps: int
    best_step: int
    best_val_accuracy: float
    train_s: float
    stop_reason: str
    compile_s: float | None = None  # the first compiled step's wall time; None when eager
    curve: list[dict[str, float]] = field(default_factory=list)
    by_length: dict[int, dict[str, Any]] = field(default_factory=dict)  # L -> accuracy, ...


@dataclass
class Checkpoint:
    """Everything needed to continue a cell's training exactly where it stopped."""

    cell: str  # the cell's id: a checkpoint of another cell is refused
    step: int
    elapsed_s: float
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    best_model: dict[str, torch.Tensor]
    best: float
    best_step: int
    curve: list[dict[str, float]]
    data: dict[str, Any]  # the training stream's state
    torch_rng: torch.Tensor

    def save(self, path: Path) -> None:
        atomic_write(
            path,
            lambda file: torch.save({f.name: getattr(self, f.name) for f in fields(self)}, file),
        )

    @classmethod
    def load(cls, path: Path, cell_id: str, device: torch.device) -> Checkpoint:
        """The checkpoint at `path`, or CheckpointError saying why it cannot be used."""
        try:
            state = torch.load(path, map_location=device, weights_only=True)
        except Exception as e:  # noqa: BLE001 - truncated, garbage, not a torch file
            raise CheckpointError(f"unreadable ({type(e).__name__})") from None
        if not isinstance(state, dict) or set(state) != set(cls.__dataclass_fields__):
            raise CheckpointError("not an ssmbench checkpoint")
        if state["cell"] != cell_id:
            raise CheckpointError(f"it belongs to cell {state['cell']}")
        return cls(**state)


def _hyperparameters(name: str, mark: dict[str, Any], hp: TrainConfig) -> tuple[float, float]:
    """(lr, weight decay) of one parameter under hp.param_groups: `uniform` the run's;
    `upstream` the layer's mark over the run's (a fixed lr, an lr cap, a decay: layers/marks.py);
    `mad` mad-lab's configure_optimizers: no decay on biases, norms and parameters marked with
    weight decay 0, the run's lr for all."""
    if hp.param_groups == "uniform":
        return hp.lr, hp.weight_decay
    if hp.param_groups == "mad":
        no_decay = mark.get("weight_decay") == 0 or "bias" in name or "norm" in name
        return hp.lr, 0.0 if no_decay else hp.weight_decay
    lr = mark.get("lr", min(hp.lr, mark.get("lr_max", hp.lr)))
    return lr, mark.get("weight_decay", hp.weight_decay)


def param_groups(model: nn.Module, hp: TrainConfig) -> list[dict[str, Any]]:
    """The optimizer's parameter groups, one per (lr, weight decay) in order of first use, each
    with its parameters' names (`names`) and its lr before any schedule (`base_lr`)."""
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    marks = marks_of(model)
    for name, p in model.named_parameters():
        if p.requires_grad:
            lr, decay = _hyperparameters(name, marks[name], hp)
            group = groups.setdefault(
                (lr, decay),
                {"params": [], "names": [], "lr": lr, "base_lr": lr, "weight_decay": decay},
            )
            group["params"].append(p)
            group["names"].append(name)
    return list(groups.values())


def describe_groups(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """What a result records of its optimizer: per group its lr (before schedules), weight decay,
    parameter count and the names of its parameters."""
    return [
        {
            "lr": group["base_lr"],
            "weight_decay": group["weight_decay"],
            "params": sum(p.numel() for p in group["params"]),
            "names": list(group["names"]),
        }
        for group in optimizer.param_groups
    ]


def make_optimizer(model: nn.Module, hp: TrainConfig) -> torch.optim.Optimizer:
    """Adam or AdamW over param_groups(model, hp)."""
    opt_class = torch.optim.AdamW if hp.optimizer == "adamw" else torch.optim.Adam
    return opt_class(param_groups(model, hp), lr=hp.lr, weight_decay=hp.weight_decay)


def lr_at(base: float, hp: TrainConfig, step: int) -> float:
    """The lr of a group with lr `base` at step k (from 0): a linear warm-up factor
    min(1, (k + 1) / warmup) times, for hp.schedule cosine, m + (base - m)(1 + cos(π e / E)) / 2
    with m = min(min_lr, base), e the epoch of k and E the epochs in max_steps (every step its
    own epoch unless schedule_epochs is set), as torch's CosineAnnealingLR stepped once an epoch."""
    warm = min(1.0, (step + 1) / max(hp.warmup_steps, 1))
    if hp.schedule == "constant":
        return base * warm
    per = -(-hp.max_steps // (hp.schedule_epochs or hp.max_steps))  # steps per epoch
    epoch, epochs = min(step, hp.max_steps - 1) // per, -(-hp.max_steps // per)
    floor = min(hp.min_lr, base)
    return warm * (floor + (base - floor) * (1 + math.cos(math.pi * epoch / epochs)) / 2)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    hp: TrainConfig,
    step: int,
) -> float:
    """One update on batch (x (B, T), labels y (B, T)) with each group's lr at this step
    (`lr_at`: warm-up and schedule) and gradient clipping, as `hp` says (the trainer's step, and
    the step `measure` times)."""
    for group in optimizer.param_groups:
        group["lr"] = lr_at(group["base_lr"], hp, step)
    value = loss(model(x), y)
    if not torch.isfinite(value):
        raise Diverged(f"training loss became {value.item()} at step {step + 1}")
    optimizer.zero_grad(set_to_none=True)
    value.backward()
    if hp.grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), hp.grad_clip)
    optimizer.step()
    return value.item()


@torch.inference_mode()
def evaluate(
    model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int
) -> Score:
    """The model's score on a fixed set (inputs, labels (N, T)), in batches."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total = Score()
    for x, y in zip(inputs.split(batch_size), labels.split(batch_size), strict=True):
        total += score(model(x.to(device)), y.to(device))
    model.train(was_training)
    return total


@contextmanager
def _deferred_interrupts() -> Iterator[list[int]]:
    """Turn SIGINT/SIGTERM into a flag checked between steps, so a checkpoint is always whole."""
    received: list[int] = []
    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda signum, frame: received.append(signum))
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass
class TrainState:
    """The live state of one cell's training loop."""

    cell: CellConfig
    model: nn.Module
    optimizer: torch.optim.Optimizer
    data: TrainingStream
    stopper: EarlyStopping
    best_state: dict[str, torch.Tensor]
    curve: list[dict[str, float]] = field(default_factory=list)
    step: int = 0
    elapsed_before: float = 0.0
    started: float = field(default_factory=time.perf_counter)
    compile_s: float | None = None  # set by the first step of a compiled model

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started

    def checkpoint(self) -> Checkpoint:
        return Checkpoint(
            cell=self.cell.id,
            step=self.step,
            elapsed_s=self.elapsed(),
            model=self.model.state_dict(),
            optimizer=self.optimizer.state_dict(),
            best_model=self.best_state,
            best=self.stopper.best,
            best_step=self.stopper.best_step,
            curve=self.curve,
            data=self.data.state_dict(),
            torch_rng=torch.get_rng_state(),
        )

    def restore(self, ckpt: Checkpoint) -> None:
        """Continue from `ckpt`; raises CheckpointError (state unchanged) if it does not fit."""
        try:
            self.model.load_state_dict(ckpt.model)
            self.optimizer.load_state_dict(ckpt.optimizer)
            if any("base_lr" not in group for group in self.optimizer.param_groups):
                raise KeyError("base_lr")  # saved before per-group lrs: start again
            self.data.load_state_dict(ckpt.data)
            torch.set_rng_state(ckpt.torch_rng)
        except Exception as e:  # noqa: BLE001 - wrong keys or shapes: another model's weights
            raise CheckpointError(f"does not fit this model ({type(e).__name__})") from None
        self.best_state, self.curve = ckpt.best_model, ckpt.curve
        self.stopper.best, self.stopper.best_step = ckpt.best, ckpt.best_step
        self.step, self.elapsed_before = ckpt.step, ckpt.elapsed_s
        self.started = time.perf_counter()


def build_model(cell: CellConfig, task: Task) -> nn.Module:
    """The cell's model with the task's readout (the model's own head, or MAD's autoencoder),
    sized for the longest input the cell trains or evaluates on (a model's `l_max`)."""
    longest = max(task.at_length(n).input_len for n in {cell.seq_len, *cell.eval_lengths})
    options = get(cell.model).sized_for(cell.arch.build_kwargs(cell.model), longest)
    model = build(cell.model, task.vocab_size, **options)
    return with_readout(model, task.readout)


def new_state(
    cell: CellConfig, device: torch.device, exclude: frozenset[bytes] = frozenset()
) -> TrainState:
    """Fresh model (seeded by the cell's seed), optimizer, training stream and stopper; the
    stream never yields an example whose inputs' digest is in `exclude` (the held-out sets)."""
    task = cell.task.build(cell.seq_len)
    torch.manual_seed(cell.seed)
    model = build_model(cell, task).to(device)
    return TrainState(
        cell=cell,
        model=model,
        optimizer=make_optimizer(model, cell.train),
        data=TrainingStream(task, cell.seed, cell.train.batch_size, exclude),
        stopper=EarlyStopping(cell.train.patience, cell.train.target_accuracy),
        best_state=copy.deepcopy(model.state_dict()),
    )


def warn(on_progress: Progress | None, message: str) -> None:
    """A one-line warning, through the progress channel when there is one (plain text)."""
    if on_progress is not None:
        on_progress({"warning": message})
    else:
        print(f"warning: {message}", file=sys.stderr)


def resume_or_start(
    cell: CellConfig,
    device: torch.device,
    path: Path | None,
    on_progress: Progress | None,
    exclude: frozenset[bytes] = frozenset(),
) -> TrainState:
    """The state saved at `path` if it is usable; else a fresh one, the bad file set aside."""
    state = new_state(cell, device, exclude)
    if path is None or not path.exists():
        return state
    try:
        state.restore(Checkpoint.load(path, cell.id, device))
    except CheckpointError as e:
        aside = path.with_name(path.name + ".corrupt")
        os.replace(path, aside)
        warn(on_progress, f"checkpoint {path} {e}: moved to {aside.name}; {cell.id} restarts")
        # restore may have touched the model before failing: start from a fresh state
        state = new_state(cell, device, exclude)
    return state


def validate(state: TrainState, train_loss: float, val: Batch) -> dict[str, float]:
    """Score the validation set, keep the best weights, append and return the curve point."""
    accuracy = evaluate(state.model, *val, state.cell.train.batch_size).accuracy
    if state.stopper.update(state.step, accuracy):
        state.best_state = copy.deepcopy(state.model.state_dict())
    point = {
        "step": state.step,
        "train_loss": train_loss,
        "val_accuracy": accuracy,
        "elapsed_s": state.elapsed(),
    }
    state.curve.append(point)
    return point


def _step(state: TrainState, x: torch.Tensor, y: torch.Tensor) -> float:
    """One training step; the first of a compiled model is timed apart as `compile_s`."""
    hp = state.cell.train
    if not state.cell.compile or state.compile_s is not None:
        return train_step(state.model, state.optimizer, x, y, hp, state.step)
    started = time.perf_counter()
    value = train_step(state.model, state.optimizer, x, y, hp, state.step)
    state.compile_s = time.perf_counter() - started
    return value


def run_loop(
    state: TrainState,
    val: Batch,
    device: torch.device,
    checkpoint: Path | None,
    on_progress: Progress | None,
) -> str | None:
    """Train until a stop reason, the step budget, or an interrupt (checkpoint saved first)."""
    hp = state.cell.train
    reason = state.stopper.stop_reason(state.step) if state.curve else None
    with _deferred_interrupts() as interrupts:
        while reason is None and state.step < hp.max_steps:
            x, y = state.data.next()
            train_loss = _step(state, x.to(device), y.to(device))
            state.step += 1
            if state.step % hp.eval_every == 0 or state.step == hp.max_steps:
                point = validate(state, train_loss, val)
                reason = state.stopper.stop_reason(state.step)
                if on_progress is not None:
                    on_progress({**point, "max_steps": hp.max_steps})
            if (
                hp.time_budget_s is not None
                and state.elapsed() >= hp.time_budget_s
                and reason is None
            ):
                reason = f"time budget of {hp.time_budget_s:g} s spent"
            if checkpoint is not None and (state.step % hp.checkpoint_every == 0 or interrupts):
                state.checkpoint().save(checkpoint)
            if interrupts:
                raise KeyboardInterrupt(f"interrupted at step {state.step}; checkpoint saved")
    return reason


def _out_of_memory(error: BaseException) -> bool:
    if isinstance(error, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def score_at_lengths(
    model: nn.Module, task: Task, cell: CellConfig, test: Batch
) -> dict[int, dict[str, Any]]:
    """Accuracy and exact match of `model` on a fixed test set at each evaluation length.

    The training length uses the held-out `test` set; every other length L a fixed test set of
    `length_test_size` examples, in batches of about batch_size·T_train/T_L sequences (the same
    tokens per batch). A length that runs out of memory is recorded as oom; the others go on.
    """
    hp = cell.train
    results: dict[int, dict[str, Any]] = {}
    for length in sorted({cell.seq_len, *cell.eval_lengths}):
        try:
            at = task.at_length(length)
            inputs, labels = (
                test
                if length == cell.seq_len
                else fixed_test_set(at, hp.length_test_size or hp.test_size)
            )
            batch = max(1, hp.batch_size * task.input_len // at.input_len)
            result = evaluate(model, inputs, labels, batch)
            results[length] = {
                "status": "done",
                "accuracy": result.accuracy,
                "exact_match": result.exact_match,
            }
        except Exception as e:
            if not _out_of_memory(e):
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            results[length] = {"status": "oom", "accuracy": None, "exact_match": None}
    return results


def train(
    cell: CellConfig,
    device: torch.device,
    checkpoint: Path | None = None,
    on_progress: Progress | None = None,
    compile_backend: CompileBackend = "inductor",
) -> tuple[nn.Module, TrainOutcome]:
    """Train one cell to its step budget or early stop; resume from `checkpoint` if it exists.
    With `cell.compile`, the model is compiled with `compile_backend` (CompileFailed if that
    fails)."""
    hp = cell.train
    task = cell.task.build(cell.seq_len)
    sets = held_out(task, hp.val_size, hp.test_size)
    state = resume_or_start(cell, device, checkpoint, on_progress, sets.digests)
    if cell.compile:
        compile_model(state.model, compile_backend)
    state.model.train()
    try:
        reason = run_loop(state, sets.validation, device, checkpoint, on_progress)
        train_s = state.elapsed()
        state.model.load_state_dict(state.best_state)
        by_length = score_at_lengths(state.model, task, cell, sets.test)
    except Exception as e:
        failure = as_compile_failure(e)
        if failure is None:
            raise
        raise failure from None
    return state.model, TrainOutcome(
        accuracy=by_length[cell.seq_len]["accuracy"],
        exact_match=by_length[cell.seq_len]["exact_match"],
        steps=state.step,
        best_step=state.stopper.best_step,
        best_val_accuracy=state.stopper.best,
        train_s=train_s,
        stop_reason=reason or f"step budget of {hp.max_steps} spent",
        compile_s=state.compile_s,
        curve=state.curve,
        by_length=by_length,
    )
