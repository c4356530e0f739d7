"""Held-out sets and the training stream, kept disjoint for every task.

The validation and test sets are drawn from fixed seeds, so they are the same for every run and
training seed. No held-out example ever reaches training: every example's inputs are hashed
(BLAKE2b, 16 bytes a row), the test set is drawn away from the validation set, and every training
example, fresh or from a fixed training set, is drawn away from both (a row that collides is
replaced by a fresh draw). A task whose example space is too small to allow this is an error.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch

from ssmbench.tasks.base import TEST_SEED, VALIDATION_SEED, Task

Batch = tuple[torch.Tensor, torch.Tensor]  # inputs (B, T), labels (B, T)
MAX_REDRAWS = 64


def row_digests(inputs: torch.Tensor) -> list[bytes]:
    """One 16-byte digest per row of inputs (B, T)."""
    rows = inputs.detach().to("cpu", torch.int64).numpy()
    return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in rows]


def draw_disjoint(
    task: Task,
    size: int,
    generator: torch.Generator,
    exclude: set[bytes] | frozenset[bytes],
    train: bool = False,
) -> Batch:
    """`size` examples none of whose inputs are in `exclude`; colliding rows are redrawn."""
    inputs, labels, need = [], [], size
    for _ in range(MAX_REDRAWS):
        x, y = task.sample(need, generator, train=train)  # (need, T)
        keep = torch.tensor([d not in exclude for d in row_digests(x)], dtype=torch.bool)
        inputs.append(x[keep])
        labels.append(y[keep])
        need -= int(keep.sum())
        if need == 0:
            return torch.cat(inputs), torch.cat(labels)
    raise ValueError(
        f"task {task.key} at seq_len {task.seq_len} has too few distinct examples to draw "
        f"{size} outside the {len(exclude)} held out; use a larger vocab_size or seq_len, "
        f"or smaller val_size/test_size"
    )


@dataclass(frozen=True)
class HeldOut:
    """The fixed validation and test sets of a task, and the digests of all their inputs."""

    validation: Batch
    test: Batch
    digests: frozenset[bytes]


def held_out(task: Task, val_size: int, test_size: int) -> HeldOut:
    """Validation from VALIDATION_SEED, then test from TEST_SEED drawn away from validation."""
    validation = task.sample(val_size, torch.Generator().manual_seed(VALIDATION_SEED))
    seen = set(row_digests(validation[0]))
    test = draw_disjoint(task, test_size, torch.Generator().manual_seed(TEST_SEED), seen)
    return HeldOut(validation, test, frozenset(seen.union(row_digests(test[0]))))


def fixed_test_set(task: Task, size: int) -> Batch:
    """A fixed test set of `size` examples (evaluation at a length other than training's)."""
    return task.sample(size, torch.Generator().manual_seed(TEST_SEED))


class TrainingStream:
    """Training batches (inputs, training labels) that never hold a held-out example.

    train_examples None: fresh examples every batch. An integer N: a training set of N examples
    drawn once from the seed, then served in random order epoch after epoch.
    """

    def __init__(self, task: Task, seed: int, batch_size: int, exclude: frozenset[bytes]) -> None:
        self.task, self.batch_size, self.exclude = task, batch_size, exclude
        self.generator = torch.Generator().manual_seed(seed)
        self.fixed: Batch | None = None
        self.order = torch.empty(0, dtype=torch.long)  # indices left in the current epoch
        if task.train_examples is not None:
            self.fixed = draw_disjoint(
                task, task.train_examples, self.generator, exclude, train=True
            )

    def next(self) -> Batch:
        if self.fixed is None:
            return draw_disjoint(
                self.task, self.batch_size, self.generator, self.exclude, train=True
            )
        n = len(self.fixed[0])
        while len(self.order) < self.batch_size:
            self.order = torch.cat([self.order, torch.randperm(n, generator=self.generator)])
        index, self.order = self.order[: self.batch_size], self.order[self.batch_size :]
        return self.fixed[0][index], self.fixed[1][index]

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.generator.get_state(), "order": self.order.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["rng"])
        self.order = state["order"].clone()
