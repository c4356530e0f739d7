"""Induction heads: after the trigger token, recall the token that followed its first occurrence.

Mamba paper (Gu & Dao 2023) §4.1.2 and App. E.1, after HazyResearch/safari's synthetics with one
trigger and a one-token pattern. With T = seq_len, V = vocab_size and the trigger t = V-1:

    inputs   T tokens uniform in {0, .., V-2}; the trigger once at a position p uniform in
             {0, .., T-3}, so the token after it, X = inputs[p+1], is an ordinary token; and the
             trigger again at the last position T-1
    labels   X at position T-1, -100 elsewhere (trained and scored on the last position only)

Worked example, T=8, V=6 (trigger 5), p=2:

    inputs   1    4    5    3    0    2    1    5
    labels -100 -100 -100 -100 -100 -100 -100  3

Chance accuracy is 1/(V-1). The Mamba paper trains at T=256 and tests up to 2^20.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from ssmbench.tasks.base import IGNORE_INDEX, Task


class InductionHeads(Task):
    name: ClassVar[str] = "induction-heads"
    summary: ClassVar[str] = (
        "after the trigger, recall the token that followed its first occurrence"
    )
    source: ClassVar[str] = "Gu & Dao 2023 (Mamba) §4.1.2, App. E.1; HazyResearch/safari"

    seq_len: int = Field(256, ge=3, description="sequence length, trigger at the end included")
    vocab_size: int = Field(16, ge=3, description="number of token ids, the trigger included")

    @property
    def trigger(self) -> int:
        return self.vocab_size - 1

    def _draw(
        self, batch_size: int, generator: torch.Generator, train: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        B, T = batch_size, self.seq_len
        inputs = torch.randint(0, self.trigger, (B, T), generator=generator)  # (B, T)
        first = torch.randint(0, T - 2, (B,), generator=generator)  # (B,) in [0, T-3]
        rows = torch.arange(B)
        inputs[rows, first] = self.trigger
        inputs[:, -1] = self.trigger
        labels = torch.full_like(inputs, IGNORE_INDEX)  # (B, T)
        labels[:, -1] = inputs[rows, first + 1]
        return inputs, labels
