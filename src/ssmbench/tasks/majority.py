"""Majority: after a string of bits and an end token, say whether ones are more than half.

Zoology's circuit tasks (HazyResearch/zoology `zoology/data/circuits.py`, `majority`). An example
of length n:

    positions 0 .. n-2   bits uniform in {0, 1}
    position  n-1        the end token (2), labelled 1 if the n-1 bits hold more ones than
                         zeros, else 0 (a tie is 0, as zoology's `ones / len > 0.5`)
    positions n .. T-1   pad (3), labelled -100

Worked example, T = 7, an example of length 6 (bits 1 0 1 1 0: three ones of five):

    inputs   1    0    1    1    0    2    3
    labels -100 -100 -100 -100 -100   1 -100

Zoology draws fixed-length examples (input_seq_len - 1 bits and the end token); here every
example has length seq_len too unless `train_lengths` / `test_lengths` ask for a range. With an
even number of bits ties are possible and a constant 0 beats chance; an odd number (even seq_len)
keeps the two answers equally likely. V = 4: two bits, the end token and the pad.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field, model_validator

from ssmbench.tasks.base import IGNORE_INDEX, VariableLengthTask

END, PAD = 2, 3


class Majority(VariableLengthTask):
    name: ClassVar[str] = "majority"
    summary: ClassVar[str] = "whether a bit string holds more ones than zeros, at its end token"
    source: ClassVar[str] = "Arora et al. 2023 (Zoology); HazyResearch/zoology data/circuits.py"
    key_fields: ClassVar[dict[str, str]] = {"train_lengths": "tr", "test_lengths": "te"}
    min_length: ClassVar[int] = 2

    vocab_size: int = Field(4, description="two bits, the end token and the pad: must be 4")

    @model_validator(mode="after")
    def _check(self) -> Majority:
        if self.vocab_size != 4:
            raise ValueError(f"vocab_size must be 4 (bits, end and pad), got {self.vocab_size}")
        return self

    @property
    def pad_token(self) -> int:
        return PAD

    def _draw(
        self, batch_size: int, generator: torch.Generator, train: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        B, T = batch_size, self.seq_len
        lengths = self.example_lengths(B, generator, train)  # (B,)
        bits = torch.randint(0, 2, (B, T), generator=generator)  # (B, T)
        end = lengths - 1  # (B,) position of the end token
        ones = (bits * (torch.arange(T) < end[:, None])).sum(1)  # (B,)
        rows = torch.arange(B)
        bits[rows, end] = END
        labels = torch.full_like(bits, IGNORE_INDEX)  # (B, T)
        labels[rows, end] = (2 * ones > end).long()
        return self.pad_beyond(bits, labels, lengths)
