"""Modular arithmetic: the value of an expression over digits mod M, at its `=` token.

Grazzi et al. 2025 ("Unlocking State-Tracking in Linear RNNs Through Negative Eigenvalues") §5,
after the xLSTM formal-language harness: without brackets NX-AI/xlstm
`experiments/data/formal_language/tasks/modular_arithmetic.py`, with brackets
adankow/unlocking_state_tracking `.../tasks/modular_arithmetic_with_brackets.py`. With
V = vocab_size, M = V - 7 and the tokens

    0 .. M-1 the digits,  M `+`,  M+1 `-`,  M+2 `*`,  M+3 `(`,  M+4 `)`,  M+5 `=`,  M+6 pad

an example of length n is an expression, then `=` at position n-1 labelled with its value mod M,
then pad (labelled -100):

    brackets False   j = n // 2 digits uniform in 0 .. M-1 joined by j-1 operators uniform in
                     + - *, `*` binding tighter (an odd n makes the n-1 token example)
    brackets True    an expression of n-1 tokens built as the source does: below 5 tokens
                     `d`, `-d`, `(d)`, `(-d)`; else `(left op right)` with left's length uniform
                     in 1 .. m-4 of the m tokens, op uniform in + - (the source's mult=False)

Worked examples, V = 12 (M = 5: `+` 5, `-` 6, `*` 7, `(` 8, `)` 9, `=` 10, pad 11), T = 8:

    3 + 4 * 2 =     inputs   3    5    4    7    2   10   11   11     (3 + 8 = 11 = 1 mod 5)
                    labels -100 -100 -100 -100 -100    1 -100 -100
    ( - 3 + 4 ) =   inputs   8    6    3    5    4    9   10   11     (-3 + 4 = 1)
                    labels -100 -100 -100 -100 -100 -100    1 -100

Defaults follow the paper: M = 5 (digits 0-4), trained on lengths 3 .. 40 and tested on
40 .. 256, so L = 40 is the training length. The sources write the answer into the sequence and
train on the next token, so their length counts the answer slot (ours does not); the source
without brackets puts the pad at 0 and the digits after the operators, one layout serves both
here. Every draw comes from the generator given (one Python RNG seeded from it per batch).
"""

from __future__ import annotations

import random
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

SPECIALS = 7  # + - * ( ) = pad
Expression = tuple[list[str], int]  # tokens as text ('3', '+', '('), value mod M


def flat_expression(operands: int, modulus: int, rng: random.Random) -> Expression:
    """`operands` digits joined by + - *, and its value with * binding tighter."""
    digits = [rng.randrange(modulus) for _ in range(operands)]
    ops = [rng.choice("+-*") for _ in range(operands - 1)]
    total, term, sign = 0, digits[0], 1
    for op, digit in zip(ops, digits[1:], strict=True):
        if op == "*":
            term *= digit
        else:
            total, term, sign = total + sign * term, digit, 1 if op == "+" else -1
    tokens = [str(digits[0])]
    for op, digit in zip(ops, digits[1:], strict=True):
        tokens += [op, str(digit)]
    return tokens, (total + sign * term) % modulus


def bracketed_expression(length: int, modulus: int, rng: random.Random) -> Expression:
    """An expression of exactly `length` tokens with + - and brackets, and its value."""
    if length < 5:
        d = rng.randrange(modulus)
        short = {1: ([str(d)], d), 2: (["-", str(d)], -d), 3: (["(", str(d), ")"], d)}
        tokens, value = short.get(length, (["(", "-", str(d), ")"], -d))
        return tokens, value % modulus
    left_length = rng.randint(1, length - 4)
    left, a = bracketed_expression(left_length, modulus, rng)
    right, b = bracketed_expression(length - left_length - 3, modulus, rng)
    op = rng.choice("+-")
    return ["(", *left, op, *right, ")"], (a + b if op == "+" else a - b) % modulus


class ModularArithmetic(VariableLengthTask):
    name: ClassVar[str] = "modular-arithmetic"
    summary: ClassVar[str] = "the value mod M of an expression over digits, at its = token"
    source: ClassVar[str] = "Grazzi et al. 2025; NX-AI/xlstm, adankow/unlocking_state_tracking"
    key_fields: ClassVar[dict[str, str]] = {
        "vocab_size": "V",
        "brackets": "br",
        "train_lengths": "tr",
        "test_lengths": "te",
    }
    min_length: ClassVar[int] = 2

    seq_len: int = Field(40, gt=0, description="sequence length (padded)")
    vocab_size: int = Field(12, ge=SPECIALS + 2, description="M = vocab_size - 7 digits, + 7")
    brackets: bool = Field(False, description="bracketed + - expressions (else + - * flat)")
    train_lengths: LengthRange | None = train_lengths_field("3-40")
    test_lengths: LengthRange | None = test_lengths_field("40-256")

    @property
    def modulus(self) -> int:
        return self.vocab_size - SPECIALS

    @property
    def pad_token(self) -> int:
        return self.vocab_size - 1

    def token_ids(self) -> dict[str, int]:
        """Token text -> id: the digits, then + - * ( ) =."""
        M = self.modulus
        return {**{str(d): d for d in range(M)}, **{s: M + i for i, s in enumerate("+-*()=")}}

    def _draw(
        self, batch_size: int, generator: torch.Generator, train: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = self.example_lengths(batch_size, generator, train)  # (B,)
        rng = random.Random(int(torch.randint(0, 2**62, (), generator=generator)))
        ids = self.token_ids()
        inputs = torch.full((batch_size, self.seq_len), self.pad_token)  # (B, T)
        labels = torch.full_like(inputs, IGNORE_INDEX)  # (B, T)
        for row, n in enumerate(lengths.tolist()):
            if self.brackets:
                tokens, value = bracketed_expression(n - 1, self.modulus, rng)
            else:
                tokens, value = flat_expression(n // 2, self.modulus, rng)
            tokens.append("=")
            inputs[row, : len(tokens)] = torch.tensor([ids[t] for t in tokens])
            labels[row, len(tokens) - 1] = value
        return inputs, labels
