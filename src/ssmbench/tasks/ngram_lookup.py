"""N-gram lookup (prefix key): an n-gram, a string, then the letters that follow the n-gram in it.

Jelassi et al. 2024 ("Repeat After Me") §4, the "prefix key" variant of n-gram lookup, after
sjelassi/transformers_ssm_copy `synthetic_exps/data_utils.py` (task `prefix_ngram`). Tokens as
in `string-copy`: A = V - 4 letters, then `$` (BOS), `|`, `.` (EOS), `*` (pad). With n = n_gram
and a = length_answer, an example over a string s of m letters uniform in 0 .. A-1 is

    `$ key | s | answer .`, then pad (labelled -100), where, as the source draws them:
    s          redrawn (at most 10 times, then an error) until one of its candidate n-grams
               occurs once among them; the candidates start at 0 .. m-n-a-2 (a > 0) or
               0 .. m-n-2 (a = 0)
    key        the n-gram at a start uniform in 0 .. (number of candidates) - 2
    answer     the a letters after the key's first occurrence in s (a = 0: all the rest of s)
    scored     the next token from the second `|` to the answer's next-to-last letter: the
               answer (string accuracy = exact match, as the source scores it)
    trained    the same and the `.` after the answer (the source's training mask)

Worked example, V = 8 (letters 0-3, `$` 4, `|` 5, `.` 6, `*` 7), n = 2, a = 1, T = 16,
s = 3 1 0 2 2 1 3 0, key 0 2 (found at 2; followed by 2):

    inputs          4    0    2    5    3    1    0    2    2    1    3    0    5    2    6    7
    scored labels   -100 at every position but 12 (2, the answer)
    train labels    the same and 6 (`.`) at 13

Lengths count tokens, as for every variable-length task. With a > 0 an example is m + n + a + 4
tokens, and a batch at lengths lo .. hi holds strings of m uniform over those whose examples lie
in lo .. hi (the longest that fits in hi when none reaches lo); with a = 0 the answer's length
depends on where the key falls, so m is drawn so that the longest possible example, 2m + 4
tokens, lies in lo .. hi, and an example may end before lo. Defaults follow the source: n = 3
(its dataset's default), a = 0 (`main.py`), 26 letters (`launch.py`), strings of 8 .. 50 letters
in training and 40 .. 200 in tests (`main.py`), i.e. train_lengths 20-104 and test_lengths
84-404. Differences from the source, on purpose: one example a row (the source packs training
examples back to back; its evaluation rows are one example and pad, as here); the letters come
from the generator given (one Python RNG seeded from it per batch).
"""

from __future__ import annotations

import random
from collections import Counter
from typing import ClassVar

import torch
from pydantic import Field, model_validator

from ssmbench.tasks.base import (
    LengthRange,
    VariableLengthTask,
    length_range,
    test_lengths_field,
    train_lengths_field,
)
from ssmbench.tasks.string_copy import SPECIALS, answer_labels, string_lengths

MAX_DRAWS = 10  # the source's tries for a string with an n-gram found once

Example = tuple[list[int], list[int], list[int]]  # string, key, answer (letter ids)


def lookup_example(m: int, n: int, a: int, letters: int, rng: random.Random) -> Example:
    """A string of m letters, its key n-gram and the answer, drawn as the source draws them."""
    candidates = m - n - a - 1 if a > 0 else m - n - 1  # n-grams the key is drawn from
    for _ in range(MAX_DRAWS):
        string = [rng.randrange(letters) for _ in range(m)]
        grams = [tuple(string[i : i + n]) for i in range(candidates)]
        if 1 in Counter(grams).values():
            key = grams[rng.randrange(candidates - 1)]
            start = grams.index(key) + n  # after its first occurrence
            answer = string[start : start + a] if a > 0 else string[start:]
            return string, list(key), answer
    raise ValueError(
        f"ngram-lookup: no string of {m} letters with a {n}-gram found once in {MAX_DRAWS} "
        f"draws; use a larger vocab_size or a smaller n_gram"
    )


class NgramLookup(VariableLengthTask):
    name: ClassVar[str] = "ngram-lookup"
    summary: ClassVar[str] = "the letters after a given n-gram in a string (prefix key)"
    source: ClassVar[str] = "Jelassi et al. 2024; sjelassi/transformers_ssm_copy data_utils.py"
    key_fields: ClassVar[dict[str, str]] = {
        "vocab_size": "V",
        "n_gram": "n",
        "length_answer": "a",
        "train_lengths": "tr",
        "test_lengths": "te",
    }

    seq_len: int = Field(104, gt=0, description="sequence length (padded)")
    vocab_size: int = Field(30, ge=SPECIALS + 2, description="A = vocab_size - 4 letters, + $|.*")
    n_gram: int = Field(3, gt=0, description="n, letters of the key")
    length_answer: int = Field(0, ge=0, description="a, letters of the answer (0: the rest)")
    train_lengths: LengthRange | None = train_lengths_field("20-104")
    test_lengths: LengthRange | None = test_lengths_field("84-404")

    @property
    def pad_token(self) -> int:
        return self.vocab_size - 1

    @property
    def shape(self) -> tuple[int, int, int]:
        """(slope, offset, shortest): an example of m letters is at most slope * m + offset
        tokens, and m >= shortest (the source's two candidate n-grams)."""
        n, a = self.n_gram, self.length_answer
        return (1, n + a + 4, n + a + 3) if a > 0 else (2, 4, n + 3)

    @model_validator(mode="after")
    def _check(self) -> NgramLookup:
        slope, offset, shortest = self.shape
        least = slope * shortest + offset
        spans = {"seq_len": (self.seq_len, self.seq_len)}
        for field in ("train_lengths", "test_lengths"):
            span = length_range(getattr(self, field))
            if span is not None:
                spans[field] = span
        for field, (lo, _) in spans.items():
            if lo < least:
                raise ValueError(
                    f"{field} {getattr(self, field)} is shorter than the shortest example: "
                    f"{least} tokens with n_gram {self.n_gram} and length_answer "
                    f"{self.length_answer} (a string of {shortest} letters)"
                )
        return self

    def _draw(
        self, batch_size: int, generator: torch.Generator, train: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        m = string_lengths(self.length_range(train), *self.shape, batch_size, generator)  # (B,)
        rng = random.Random(int(torch.randint(0, 2**62, (), generator=generator)))
        A = self.vocab_size - SPECIALS
        bos, bar, eos = A, A + 1, A + 2
        inputs = torch.full((batch_size, self.seq_len), self.pad_token)  # (B, T)
        starts, lengths = [], []
        for row, size in enumerate(m.tolist()):
            string, key, answer = lookup_example(size, self.n_gram, self.length_answer, A, rng)
            tokens = [bos, *key, bar, *string, bar, *answer, eos]
            inputs[row, : len(tokens)] = torch.tensor(tokens)
            starts.append(len(key) + len(string) + 3)
            lengths.append(len(answer))
        labels = answer_labels(inputs, torch.tensor(starts), torch.tensor(lengths), train)
        return inputs, labels
