"""What a sweep would cost, before running it: a few timed training and inference steps per
(model, input shape), scaled by the cells' step budgets.

For a (model, shape) with training step time t_train and inference step time t_infer (medians of
a few steps, on this machine, now), each of its cells costs at most
    max_steps · t_train + (max_steps / eval_every) · ceil(val_size / batch) · t_infer
seconds (early stopping can only shorten it); the sweep's wall time is their sum over `workers`.
Steps are timed with the torch threads a worker of the sweep gets (local workers split the
cores), one (model, shape) at a time: workers running side by side also share the memory
bandwidth, which the estimate does not see. The figure is rough: a few steps, taken while
whatever else runs on the machine runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ssmbench.experiment.config import CellConfig, SweepConfig
from ssmbench.experiment.executors.local import sharing_cores
from ssmbench.experiment.measure import measure, resolve_device
from ssmbench.experiment.train import build_model


@dataclass(frozen=True)
class ShapeEstimate:
    cell: CellConfig  # the first cell of the (model, shape)
    cells: int  # how many cells share it
    train_ms: float
    infer_ms: float
    compile_s: float = 0.0  # with --compile: the first compiled step, paid once per cell

    @property
    def seconds_per_cell(self) -> float:
        hp = self.cell.train
        evals = hp.max_steps / hp.eval_every
        batches = math.ceil(hp.val_size / hp.batch_size)
        steps_s = (hp.max_steps * self.train_ms + evals * batches * self.infer_ms) / 1e3
        return self.compile_s + steps_s


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads set to n (None: left as they are) inside the block."""
    before = torch.get_num_threads()
    torch.set_num_threads(n or before)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def estimate(config: SweepConfig, steps: int = 3) -> list[ShapeEstimate]:
    """Time `steps` training and inference steps (after one untimed) per (model, shape), with
    the threads each of the sweep's workers gets."""
    workers = config.workers if config.executor == "local" else 1
    groups: dict[str, list[CellConfig]] = {}
    for cell in config.cells():
        groups.setdefault(cell.cost_id, []).append(cell)
    found = []
    for cells in groups.values():
        cell = sharing_cores(cells[0], workers)
        device = resolve_device(cell.device)
        torch.manual_seed(cell.seed)
        task = cell.task.build(cell.seq_len)
        model = build_model(cell, task)
        batch = task.sample(cell.train.batch_size, torch.Generator().manual_seed(0), train=True)
        with _threads(cell.threads):
            cost = measure(model, *batch, device, warmup=1, repeats=steps, hp=cell.train,
                           compile=cell.compile)  # fmt: skip
        compile_s = cost.get("compile_s") or 0.0  # None when eager
        found.append(ShapeEstimate(cell, len(cells), cost["train_ms"], cost["infer_ms"], compile_s))
    return found


def format_cells(config: SweepConfig) -> list[str]:
    cells = config.cells()
    return [f"{len(cells)} cells:"] + [f"  {cell.id}" for cell in cells]


def dry_run(config: SweepConfig) -> str:
    """What `ssmbench run --dry-run` prints: the cells and the estimate, or only the cells where
    the config's device is not on this machine (a GPU preset on a CPU machine)."""
    try:
        resolve_device(config.device)
    except ValueError:
        return "\n".join([
            *format_cells(config),
            f"no estimate: --device {config.device} is not available on this machine "
            "(--device cpu would time the CPU instead)",
        ]) + "\n"  # fmt: skip
    return format_estimate(config, estimate(config))


def format_estimate(config: SweepConfig, found: list[ShapeEstimate]) -> str:
    """The cells, then a line per (model, shape) and the total, as plain text."""
    lines = format_cells(config)
    threads = {shape.cell.threads for shape in found} - {None}
    each = f", {'/'.join(map(str, sorted(threads)))} torch thread(s) each" if threads else ""
    lines.append(f"estimate from a few timed steps per (model, shape){each}, on this machine, now:")
    total = 0.0
    for shape in found:
        cost = shape.cells * shape.seconds_per_cell
        total += cost
        lines.append(
            f"  {shape.cell.cost_id}: {shape.train_ms:.1f} ms/train step, {shape.cells} cells "
            f"x {shape.cell.train.max_steps} steps = {cost / 60:.1f} min"
        )
    workers = config.workers if config.executor == "local" else 1
    lines.append(
        f"total: at most {total / 60:.1f} min of training"
        + (f", about {total / 60 / workers:.1f} min with {workers} workers" if workers > 1 else "")
        + " (early stopping can only shorten it), plus one cost measurement per (model, shape)"
    )
    return "\n".join(lines) + "\n"
