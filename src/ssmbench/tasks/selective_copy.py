"""Copying and selective copying: remember M tokens across a stretch of blanks, recall in order.

Selective copying (Gu & Dao 2023, §4.1.1 and App. E.1; the study's definition), with S = seq_len,
M = n_tokens and V = vocab_size; inputs have length T = S + 2M:

    positions 0 .. S+M-1     M data tokens, uniform in {1, .., V-2}, at sorted, distinct,
                             uniformly random positions; blank (0) everywhere else
    positions S+M .. S+2M-1  M markers (V-1)
    labels                   the M data tokens in order at the M marker positions, -100 elsewhere

Worked example, S=6, M=2, V=8 (blank 0, marker 7):

    inputs  0    3    0    0    0    5    0    0    7    7
    labels -100 -100 -100 -100 -100 -100 -100 -100  3    5

Copying (Arjovsky et al. 2016; state-spaces/s4 `copying.py`) is the same with the data tokens at
the first M positions (no selection needed), so a model whose memory is a fixed convolution can
solve it: inputs `3 5 0 0 0 0 0 0 7 7`, labels as above. Unlike mad-lab's generator, which draws
the blank insert positions from numpy's global RNG, every draw here comes from the generator given.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field, model_validator

from ssmbench.tasks.base import IGNORE_INDEX, Task, random_subsets

BLANK = 0


class Copy(Task):
    name: ClassVar[str] = "copy"
    summary: ClassVar[str] = "recall M tokens given first, after S blanks, in order"
    source: ClassVar[str] = "Arjovsky et al. 2016; state-spaces/s4 copying.py"
    key_fields: ClassVar[dict[str, str]] = {"n_tokens": "M", "vocab_size": "V"}

    n_tokens: int = Field(16, gt=0, description="M, the number of tokens to copy")

    @model_validator(mode="after")
    def _check(self) -> Copy:
        if self.vocab_size < 3:
            raise ValueError(
                f"vocab_size must be >= 3 (blank, marker and a data token), got {self.vocab_size}"
            )
        return self

    @property
    def input_len(self) -> int:
        return self.seq_len + 2 * self.n_tokens

    @property
    def marker(self) -> int:
        return self.vocab_size - 1

    def _data_positions(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        return torch.arange(self.n_tokens).expand(batch_size, -1)  # (B, M)

    def _draw(
        self, batch_size: int, generator: torch.Generator, train: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        S, M = self.seq_len, self.n_tokens
        data = torch.randint(1, self.vocab_size - 1, (batch_size, M), generator=generator)
        positions = self._data_positions(batch_size, generator)  # (B, M), sorted
        inputs = torch.full((batch_size, S + 2 * M), BLANK, dtype=torch.long)  # (B, T)
        inputs.scatter_(1, positions, data)
        inputs[:, S + M :] = self.marker
        labels = torch.full_like(inputs, IGNORE_INDEX)  # (B, T)
        labels[:, S + M :] = data
        return inputs, labels


class SelectiveCopy(Copy):
    name: ClassVar[str] = "selective-copy"
    summary: ClassVar[str] = "recall M tokens scattered among S blanks, in order (content-aware)"
    source: ClassVar[str] = "Gu & Dao 2023 (Mamba) §4.1.1, App. E.1"

    def _data_positions(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        slots = self.seq_len + self.n_tokens
        subsets = random_subsets(batch_size, slots, self.n_tokens, generator)  # (B, M)
        return subsets.sort(dim=1).values
