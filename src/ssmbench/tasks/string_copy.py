"""String copy: a random string, a delimiter, then the same string again, trained short and
tested long.

Jelassi et al. 2024 ("Repeat After Me: Transformers are Better than State Space Models at
Copying") §4, after sjelassi/transformers_ssm_copy `synthetic_exps/data_utils.py` (task
`copy`). With V = vocab_size and A = V - 4 letters, the tokens are the source's:

    0 .. A-1 the letters,  A `$` (BOS),  A+1 `|` (delimiter),  A+2 `.` (EOS),  A+3 `*` (pad)

An example holding a string s of m letters uniform in 0 .. A-1 is `$ s | s .`, n = 2m + 3 tokens:

    inputs          positions 0 .. 2m+2: `$`, s, `|`, s, `.`; then pad (labelled -100)
    scored labels   the next token at positions m+1 .. 2m (`|` to the second copy's next-to-last
                    letter): the copy, s, read off the model's predictions as the source scores
                    it (string accuracy = exact match)
    train labels    the same and the `.` predicted after the copy (the source's training mask)

Worked example, V = 8 (letters 0-3, `$` 4, `|` 5, `.` 6, `*` 7), T = 12, s = 2 0 1 (m = 3):

    inputs          4    2    0    1    5    2    0    1    6    7    7    7
    scored labels -100 -100 -100 -100   2    0    1 -100 -100 -100 -100 -100
    train labels  -100 -100 -100 -100   2    0    1    6 -100 -100 -100 -100

Lengths (`train_lengths`, `test_lengths`, seq_len) count tokens, as for every variable-length
task: a batch at lengths lo .. hi holds strings of m uniform over those whose n = 2m + 3 lies in
lo .. hi (the longest that fits in hi when none reaches lo), so an even length leaves its last
position to the pad. Defaults follow the source: 26 letters (`launch.py`), strings of 8 .. 50
letters in training and 40 .. 200 in tests (`main.py`'s min/max train and eval lengths), i.e.
train_lengths 19-103 and test_lengths 83-403. Differences from the source, on purpose: the source
packs training examples back to back into its context (the last one cut and unscored), here each
row holds one example and its pad, as the source's evaluation rows do; its option to copy a
prefix of the string only (`length_answer`) is not offered. Every draw comes from the generator
given.
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
from ssmbench.tasks.recall import next_token_labels

SPECIALS = 4  # $ | . * after the letters, as the source's tokenizer


def string_lengths(
    span: tuple[int, int],
    slope: int,
    offset: int,
    shortest: int,
    batch_size: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """(B,) string lengths m, uniform over m >= shortest whose examples of slope * m + offset
    tokens lie in span = (lo, hi); the longest that fits in hi when none reaches lo."""
    lo, hi = span
    top = (hi - offset) // slope
    bottom = min(top, max(shortest, -(-(lo - offset) // slope)))
    return torch.randint(bottom, top + 1, (batch_size,), generator=generator)


def answer_labels(
    inputs: torch.Tensor, start: torch.Tensor, length: torch.Tensor, train: bool
) -> torch.Tensor:
    """labels (B, T): the next token where it is one of the `length` (B,) answer tokens that
    begin at `start` (B,), and also the EOS that follows them when training; -100 elsewhere."""
    position = torch.arange(inputs.shape[1])  # (T,)
    end = start + length + int(train)  # (B,) one past the last token predicted
    predicts = (position >= start[:, None] - 1) & (position < end[:, None] - 1)  # (B, T)
    return next_token_labels(inputs).masked_fill(~predicts, IGNORE_INDEX)


class StringCopy(VariableLengthTask):
    name: ClassVar[str] = "string-copy"
    summary: ClassVar[str] = "copy a random string after a delimiter, trained short, tested long"
    source: ClassVar[str] = "Jelassi et al. 2024; sjelassi/transformers_ssm_copy data_utils.py"
    key_fields: ClassVar[dict[str, str]] = {
        "vocab_size": "V",
        "train_lengths": "tr",
        "test_lengths": "te",
    }
    min_length: ClassVar[int] = 5  # `$ a | a .`

    seq_len: int = Field(103, gt=0, description="sequence length (padded)")
    vocab_size: int = Field(30, ge=SPECIALS + 2, description="A = vocab_size - 4 letters, + $|.*")
    train_lengths: LengthRange | None = train_lengths_field("19-103")
    test_lengths: LengthRange | None = test_lengths_field("83-403")

    @property
    def letters(self) -> int:
        return self.vocab_size - SPECIALS

    @property
    def pad_token(self) -> int:
        return self.vocab_size - 1

    def _draw(
        self, batch_size: int, generator: torch.Generator, train: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, A = batch_size, self.seq_len, self.letters
        m = string_lengths(self.length_range(train), 2, 3, 1, B, generator)  # (B,)
        letters = torch.randint(0, A, (B, T), generator=generator)  # (B, T) s = the first m
        p, end = torch.arange(T)[None, :], m[:, None]  # (1, T), (B, 1)
        source = torch.where(p <= end, p - 1, p - end - 2).clamp(0, T - 1)  # (B, T) s, its copy
        inputs = letters.gather(1, source)  # (B, T)
        inputs = torch.where(p == 0, A, inputs)  # $
        inputs = torch.where(p == end + 1, A + 1, inputs)  # |
        inputs = torch.where(p == 2 * end + 2, A + 2, inputs)  # .
        labels = answer_labels(inputs, m + 2, m, train)  # (B, T)
        return self.pad_beyond(inputs, labels, 2 * m + 3)
