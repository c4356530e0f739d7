"""Cumulative parity: at every position, the parity of the bits so far.

Zoology's circuit tasks (HazyResearch/zoology `zoology/data/circuits.py`, `cumulative_parity`).
An example of length n:

    positions 0 .. n-1   bits uniform in {0, 1}
    labels               at position t, (x_0 + .. + x_t) mod 2
    positions n .. T-1   pad (2), labelled -100

Worked example, T = 6, an example of length 5:

    inputs   1    0    1    1    0    2
    labels   1    1    0    1    1 -100

Zoology draws fixed-length examples (input_seq_len - 1 bits, no pad); here every example has
length seq_len too unless `train_lengths` / `test_lengths` ask for a range. V = 3: two bits and
the pad.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field, model_validator

from ssmbench.tasks.base import VariableLengthTask

PAD = 2


class CumulativeParity(VariableLengthTask):
    name: ClassVar[str] = "cumulative-parity"
    summary: ClassVar[str] = "the parity of the bits so far, at every position"
    source: ClassVar[str] = "Arora et al. 2023 (Zoology); HazyResearch/zoology data/circuits.py"
    key_fields: ClassVar[dict[str, str]] = {"train_lengths": "tr", "test_lengths": "te"}

    vocab_size: int = Field(3, description="two bits and the pad: must be 3")

    @model_validator(mode="after")
    def _check(self) -> CumulativeParity:
        if self.vocab_size != 3:
            raise ValueError(f"vocab_size must be 3 (bits 0, 1 and the pad), got {self.vocab_size}")
        return self

    @property
    def pad_token(self) -> int:
        return PAD

    def _draw(
        self, batch_size: int, generator: torch.Generator, train: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = self.example_lengths(batch_size, generator, train)  # (B,)
        bits = torch.randint(0, 2, (batch_size, self.seq_len), generator=generator)  # (B, T)
        return self.pad_beyond(bits, bits.cumsum(1) % 2, lengths)
