"""Flip-flop language modelling: write, ignore and read instructions on a one-bit register.

Liu et al. 2023 ("Exposing Attention Glitches with Flip-Flop Language Modeling", NeurIPS), whose
data is synthseq/flipflop: FFL(p) sequences of T/2 instructions, each followed by a bit, with the
tokens of the dataset's card:

    0 `w` (write)   1 `r` (read)   2 `i` (ignore)   3 the bit 0   4 the bit 1

    instructions   at even positions: the first `w`, the last `r`, the others i.i.d.: `i` with
                   probability p, `w` and `r` with (1-p)/2 each
    bits           at odd positions: after `w` or `i` uniform; after `r` the bit of the latest
                   `w` (the register's content)
    scored labels  at each `r`, the bit that follows it (the only deterministic tokens), -100
                   elsewhere
    train labels   the next token at every position (the paper trains language models; -100 at
                   the last), or the scored labels when lm_loss is False

Worked example, T = 12, w 1 i 0 r 1 w 0 i 1 r 0:

    inputs          0    4    2    3    1    4    0    3    2    4    1    3
    scored labels -100 -100 -100 -100   4 -100 -100 -100 -100 -100   3 -100
    train labels    4    2    3    1    4    0    3    2    4    1    3 -100

Defaults follow the paper and the dataset: T = 512 (256 instructions), trained on FFL(0.8);
`test_p_ignore` sets the distribution scored (the held-out sets and every evaluation length):
0.98 is the paper's sparse test (long gaps between reads and writes), 0.1 its dense one; None
scores FFL(p_ignore), the dataset's `val` split. Chance is 1/2 per read.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field, model_validator

from ssmbench.tasks.base import IGNORE_INDEX, Task
from ssmbench.tasks.recall import next_token_labels

WRITE, READ, IGNORE, ZERO = 0, 1, 2, 3  # the bit b is ZERO + b


class FlipFlop(Task):
    name: ClassVar[str] = "flip-flop"
    summary: ClassVar[str] = "at each read instruction, the bit of the latest write"
    source: ClassVar[str] = "Liu et al. 2023 (flip-flop language modeling); synthseq/flipflop"
    key_fields: ClassVar[dict[str, str]] = {
        "p_ignore": "pi",
        "test_p_ignore": "te",
        "lm_loss": "lm",
    }

    seq_len: int = Field(512, ge=4, description="sequence length (even): T/2 instructions")
    vocab_size: int = Field(5, description="w, r, i and the two bits: must be 5")
    p_ignore: float = Field(0.8, ge=0, le=1, description="p, P(i) in training; P(w) = P(r)")
    test_p_ignore: float | None = Field(
        None, ge=0, le=1, description="P(i) of the scored sets (None: p_ignore)"
    )
    lm_loss: bool = Field(True, description="train on every next token (else the reads only)")

    @model_validator(mode="after")
    def _check(self) -> FlipFlop:
        if self.vocab_size != 5:
            raise ValueError(f"vocab_size must be 5 (w, r, i, 0, 1), got {self.vocab_size}")
        if self.seq_len % 2:
            raise ValueError(f"seq_len must be even (instruction, bit pairs), got {self.seq_len}")
        return self

    def _draw(
        self, batch_size: int, generator: torch.Generator, train: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        B, N = batch_size, self.seq_len // 2
        p = self.p_ignore if train or self.test_p_ignore is None else self.test_p_ignore
        u = torch.rand(B, N, generator=generator, dtype=torch.float64)  # (B, N)
        ops = torch.where(u < p, IGNORE, torch.where(u < (1 + p) / 2, WRITE, READ))  # (B, N)
        ops[:, 0], ops[:, -1] = WRITE, READ
        bits = torch.randint(0, 2, (B, N), generator=generator)  # (B, N)
        steps = torch.arange(N).expand(B, N)  # (B, N)
        last_write = torch.where(ops == WRITE, steps, 0).cummax(1).values  # (B, N)
        reads = ops == READ  # (B, N)
        bits = torch.where(reads, bits.gather(1, last_write), bits)  # (B, N)
        inputs = torch.stack([ops, ZERO + bits], dim=2).view(B, 2 * N)  # (B, T)
        scored = torch.full_like(inputs, IGNORE_INDEX)  # (B, T)
        scored[:, 0::2] = torch.where(reads, ZERO + bits, IGNORE_INDEX)
        if train and self.lm_loss:
            return inputs, next_token_labels(inputs)
        return inputs, scored
