"""Copying tasks: remember a few tokens across a long stretch of blanks, then recall them in order.

Selective copying (Gu & Dao 2023, the study's definition), with S = seq_len, M = n_tokens and
V = vocab_size:

    tokens  0 .. S+M-1 : M data tokens, uniform in {1, .., V-2}, at sorted, distinct, uniformly
                         random positions; blank (0) everywhere else
    tokens  S+M .. S+2M-1 : M markers (V-1)
    targets : the M data tokens in order, predicted at the M marker positions

Copying is the same with the data tokens at the first M positions (no selection needed), so a
model whose memory is a fixed convolution can solve it; selective copying needs content-aware
memory. Both yield inputs (B, S+2M) and targets (B, M), int64.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

BLANK = 0
VALIDATION_SEED = 2**40 + 1  # fixed held-out sets; training seeds are checked to stay below 2**40
TEST_SEED = 2**40 + 2
MAX_TRAIN_SEED = 2**40


@dataclass(frozen=True)
class Copy:
    """Non-selective copying: data tokens first, then blanks, then markers."""

    seq_len: int
    n_tokens: int
    vocab_size: int = 16

    def __post_init__(self) -> None:
        for name in ("seq_len", "n_tokens", "vocab_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        if self.seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {self.seq_len}")
        if self.n_tokens < 1:
            raise ValueError(f"n_tokens must be >= 1, got {self.n_tokens}")
        if self.vocab_size < 3:
            raise ValueError(
                f"vocab_size must be >= 3 (blank, marker and at least one data token), "
                f"got {self.vocab_size}"
            )

    @property
    def input_len(self) -> int:
        return self.seq_len + 2 * self.n_tokens

    @property
    def marker(self) -> int:
        return self.vocab_size - 1

    def _data_positions(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        return torch.arange(self.n_tokens).expand(batch_size, -1)  # (B, M)

    def sample(
        self, batch_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw a batch: inputs (B, S+2M) int64, targets (B, M) int64."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        S, M = self.seq_len, self.n_tokens
        data = torch.randint(1, self.vocab_size - 1, (batch_size, M), generator=generator)  # (B, M)
        positions = self._data_positions(batch_size, generator)  # (B, M), sorted
        inputs = torch.full((batch_size, S + 2 * M), BLANK, dtype=torch.long)
        inputs.scatter_(1, positions, data)
        inputs[:, S + M :] = self.marker
        return inputs, data

    def fixed_set(self, split: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The held-out 'validation' or 'test' set: the same for every run and training seed."""
        seeds = {"validation": VALIDATION_SEED, "test": TEST_SEED}
        if split not in seeds:
            raise ValueError(f"split must be 'validation' or 'test', got {split!r}")
        return self.sample(size, torch.Generator().manual_seed(seeds[split]))


@dataclass(frozen=True)
class SelectiveCopy(Copy):
    """Selective copying: data tokens at random sorted positions among the first S+M slots."""

    def _data_positions(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        slots = self.seq_len + self.n_tokens
        keys = torch.rand(batch_size, slots, generator=generator)  # (B, S+M)
        # The M smallest of S+M i.i.d. keys sit at a uniformly random M-subset of the slots.
        return keys.topk(self.n_tokens, dim=1, largest=False).indices.sort(dim=1).values


TASKS = {"selective-copy": SelectiveCopy, "copy": Copy}


def make_task(name: str, seq_len: int, n_tokens: int, vocab_size: int = 16) -> Copy:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name](seq_len, n_tokens, vocab_size)
