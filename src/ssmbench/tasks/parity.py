"""Parity: after a string of bits, say whether it holds an odd number of ones.

Grazzi et al. 2025 ("Unlocking State-Tracking in Linear RNNs Through Negative Eigenvalues") §5,
after the xLSTM formal-language harness (NX-AI/xlstm and adankow/unlocking_state_tracking,
`experiments/data/formal_language/tasks/parity.py`). With V = vocab_size, an example of length n:

    positions 0 .. n-1   n tokens uniform in {1, .., V-1}; token v stands for the digit v-1
    position  n-1        labelled 1 + (sum of the n digits mod V-1): V = 3 is parity, with 1
                         for even and 2 for odd (larger V: the sum mod V-1, as in the source)
    positions n .. T-1   pad (0), labelled -100

Worked example, T = 6, V = 3, an example of length 4 (digits 1 0 1 1: three ones, odd):

    inputs   2    1    2    2    0    0
    labels -100 -100 -100   2 -100 -100

Defaults follow the paper's protocol (its `parity_*.yaml`): V = 3, trained on lengths 3 .. 40 and
tested on 40 .. 256, so L = 40 is the training length. The source writes the answer into the
sequence and trains on the next token, so its length n counts the answer slot: its examples of
length n are ours of length n-1 (the same bits and label).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from ssmbench.tasks.base import (
    IGNORE_INDEX,
    LengthRange,
    VariableLengthTask,
    test_lengths_field,
    train_lengths_field,
)

PAD = 0


class Parity(VariableLengthTask):
    name: ClassVar[str] = "parity"
    summary: ClassVar[str] = "the parity (sum mod V-1) of a bit string, at its last position"
    source: ClassVar[str] = "Grazzi et al. 2025; NX-AI/xlstm formal_language/tasks/parity.py"
    key_fields: ClassVar[dict[str, str]] = {
        "vocab_size": "V",
        "train_lengths": "tr",
        "test_lengths": "te",
    }

    seq_len: int = Field(40, gt=0, description="sequence length (padded)")
    vocab_size: int = Field(3, ge=3, description="pad (0) and V-1 digit tokens")
    train_lengths: LengthRange | None = train_lengths_field("3-40")
    test_lengths: LengthRange | None = test_lengths_field("40-256")

    @property
    def pad_token(self) -> int:
        return PAD

    def _draw(
        self, batch_size: int, generator: torch.Generator, train: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, base = batch_size, self.seq_len, self.vocab_size - 1
        lengths = self.example_lengths(B, generator, train)  # (B,)
        tokens = torch.randint(1, base + 1, (B, T), generator=generator)  # (B, T)
        inside = torch.arange(T) < lengths[:, None]  # (B, T)
        answer = ((tokens - 1) * inside).sum(1) % base + 1  # (B,)
        labels = torch.full_like(tokens, IGNORE_INDEX)  # (B, T)
        labels[torch.arange(B), lengths - 1] = answer
        return self.pad_beyond(tokens, labels, lengths)
