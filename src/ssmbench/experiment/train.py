"""Training one cell: Adam on fresh batches, periodic validation, early stopping, checkpoints.

The objective is the cross-entropy of the M target tokens predicted at the M marker positions;
accuracy is per target token (the study's metric), exact match counts sequences with all M right.
The best-validation weights are kept and scored on the fixed test set.
"""

from __future__ import annotations

import copy
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ssmbench.experiment.config import CellConfig
from ssmbench.models import build
from ssmbench.tasks import make_task

Progress = Callable[[dict[str, Any]], None]


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


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
    curve: list[dict[str, float]] = field(default_factory=list)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of targets (B, M) against the last M positions of logits (B, T, V)."""
    M = targets.shape[1]
    return F.cross_entropy(logits[:, -M:].flatten(0, 1), targets.flatten())


@torch.inference_mode()
def evaluate(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int
) -> tuple[float, float]:
    """(per-token accuracy, exact-match rate) of model on a fixed set, in batches."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = exact = 0
    M = targets.shape[1]
    for x, y in zip(inputs.split(batch_size), targets.split(batch_size), strict=True):
        hits = model(x.to(device))[:, -M:].argmax(-1) == y.to(device)  # (b, M)
        correct += int(hits.sum())
        exact += int(hits.all(dim=1).sum())
    model.train(was_training)
    return correct / targets.numel(), exact / len(targets)


def _save_atomic(state: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


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


def train(
    cell: CellConfig,
    device: torch.device,
    checkpoint: Path | None = None,
    on_progress: Progress | None = None,
) -> tuple[nn.Module, TrainOutcome]:
    """Train one cell to its step budget or early stop; resume from `checkpoint` if it exists."""
    hp = cell.train
    task = make_task(cell.task.name, cell.seq_len, cell.task.n_tokens, cell.task.vocab_size)
    val_x, val_y = task.fixed_set("validation", hp.val_size)
    test_x, test_y = task.fixed_set("test", hp.test_size)

    torch.manual_seed(cell.seed)
    model = build(cell.model, cell.task.vocab_size, **cell.arch.build_kwargs(cell.model)).to(device)
    opt_class = torch.optim.AdamW if hp.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt_class(model.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
    data = torch.Generator().manual_seed(cell.seed)
    stopper = EarlyStopping(hp.patience, hp.target_accuracy)
    best_state = copy.deepcopy(model.state_dict())
    curve: list[dict[str, float]] = []
    step, elapsed_before = 0, 0.0

    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        best_state = state["best_model"]
        data.set_state(state["data_rng"])
        torch.set_rng_state(state["torch_rng"])
        stopper.best, stopper.best_step = state["best"], state["best_step"]
        curve, step, elapsed_before = state["curve"], state["step"], state["elapsed_s"]

    def save() -> None:
        if checkpoint is not None:
            _save_atomic(
                {
                    "cell": cell.id,
                    "step": step,
                    "elapsed_s": elapsed(),
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "best_model": best_state,
                    "best": stopper.best,
                    "best_step": stopper.best_step,
                    "curve": curve,
                    "data_rng": data.get_state(),
                    "torch_rng": torch.get_rng_state(),
                },
                checkpoint,
            )

    started = time.perf_counter()

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - started

    model.train()
    reason = stopper.stop_reason(step) if curve else None
    with _deferred_interrupts() as interrupts:
        while reason is None and step < hp.max_steps:
            x, y = task.sample(hp.batch_size, data)
            for group in optimizer.param_groups:
                group["lr"] = hp.lr * min(1.0, (step + 1) / max(hp.warmup_steps, 1))
            loss = cross_entropy(model(x.to(device)), y.to(device))
            if not torch.isfinite(loss):
                raise Diverged(f"training loss became {loss.item()} at step {step + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if hp.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), hp.grad_clip)
            optimizer.step()
            step += 1

            if step % hp.eval_every == 0 or step == hp.max_steps:
                accuracy, _ = evaluate(model, val_x, val_y, hp.batch_size)
                if stopper.update(step, accuracy):
                    best_state = copy.deepcopy(model.state_dict())
                point = {
                    "step": step,
                    "train_loss": loss.item(),
                    "val_accuracy": accuracy,
                    "elapsed_s": elapsed(),
                }
                curve.append(point)
                reason = stopper.stop_reason(step)
                if on_progress is not None:
                    on_progress({**point, "max_steps": hp.max_steps})
            if hp.time_budget_s is not None and elapsed() >= hp.time_budget_s and reason is None:
                reason = f"time budget of {hp.time_budget_s:g} s spent"
            if step % hp.checkpoint_every == 0:
                save()
            if interrupts:
                save()
                raise KeyboardInterrupt(f"interrupted at step {step}; checkpoint saved")

    train_s = elapsed()
    model.load_state_dict(best_state)
    accuracy, exact_match = evaluate(model, test_x, test_y, hp.batch_size)
    return model, TrainOutcome(
        accuracy=accuracy,
        exact_match=exact_match,
        steps=step,
        best_step=stopper.best_step,
        best_val_accuracy=stopper.best,
        train_s=train_s,
        stop_reason=reason or f"step budget of {hp.max_steps} spent",
        curve=curve,
    )
