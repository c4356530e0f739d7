"""MAD's in-context recall family: key-value pairs in context, values recalled when a key recurs.

Poli et al. 2024, "Mechanistic Design and Scaling of Hybrid Architectures" (MAD), after mad-lab
`mad/data/instances.py` with the baselines of `configs/tasks/*.yml` (multi_query: true, 12,800
training examples). With T = seq_len (even), V = vocab_size, N = noise_vocab_size, f = frac_noise:

    vocabulary     keys {0, .., (V-N)/2 - 1}, values {(V-N)/2, .., V-N-1}, noise {V-N, .., V-1}
    inputs         T/2 pairs. Each of the first T/2 - 1 is, with probability f, two uniform noise
                   tokens, else a uniform key followed by its value: the value already bound to
                   that key in this sequence, or a fresh uniform value that the key keeps from then
                   on. The last pair is a key drawn uniformly from the distinct keys shown, and its
                   value.
    scored labels  at the position of every key shown before, its value (the next token);
                   -100 elsewhere
    train labels   the next token at every position, -100 at the last (MAD trains on all of them)

Worked example, T=8, V=8 (keys 0-3, values 4-7), f=0:

    inputs          1    6    3    4    1    6    3    4
    scored labels -100 -100 -100 -100   6 -100   4 -100
    train labels    6    3    4    1    6    3    4 -100

Differences from mad-lab, on purpose: its multi-query sequences are one token short (T-1 inputs);
ours have T, the extra last token carrying no label. With noise, mad-lab may turn every pair but
the last into noise and then fails to draw the final key from an empty set; we force one of the
first T/2 - 1 pairs to be a key-value pair. Every draw comes from the generator given.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field, model_validator

from ssmbench.tasks.base import IGNORE_INDEX, Task


def next_token_labels(inputs: torch.Tensor) -> torch.Tensor:
    """labels (B, T): inputs shifted left by one, -100 at the last position."""
    labels = torch.full_like(inputs, IGNORE_INDEX)  # (B, T)
    labels[:, :-1] = inputs[:, 1:]
    return labels


class InContextRecall(Task):
    name: ClassVar[str] = "in-context-recall"
    summary: ClassVar[str] = "recall the value bound to a recurring key earlier in the sequence"
    source: ClassVar[str] = "Poli et al. 2024 (MAD); athms/mad-lab instances.py"
    key_fields: ClassVar[dict[str, str]] = {"vocab_size": "V"}

    seq_len: int = Field(128, ge=4, description="sequence length (even)")
    vocab_size: int = Field(16, ge=4, description="number of token ids: keys, values and noise")
    train_examples: int | None = Field(
        12_800, gt=0, description="fixed training set size (None: fresh examples every step)"
    )
    noise_vocab_size: int = Field(0, ge=0, description="N, noise tokens at the top of the vocab")
    frac_noise: float = Field(0.0, ge=0, lt=1, description="probability that a pair is noise")

    @model_validator(mode="after")
    def _check(self) -> InContextRecall:
        if self.seq_len % 2:
            raise ValueError(f"seq_len must be even, got {self.seq_len}")
        if self.vocab_size - self.noise_vocab_size < 2:
            raise ValueError("vocab_size - noise_vocab_size must be >= 2 (a key and a value)")
        if self.frac_noise > 0 and self.noise_vocab_size == 0:
            raise ValueError("frac_noise > 0 needs noise_vocab_size > 0")
        return self

    def _draw(
        self, batch_size: int, generator: torch.Generator, train: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        B, pairs = batch_size, self.seq_len // 2
        clean = self.vocab_size - self.noise_vocab_size
        n_keys = clean // 2
        rows = torch.arange(B)
        bound = torch.full((B, n_keys), -1, dtype=torch.long)  # (B, keys) value, -1 if unseen
        inputs = torch.empty(B, self.seq_len, dtype=torch.long)  # (B, T)
        scored = torch.full_like(inputs, IGNORE_INDEX)  # (B, T)
        forced = torch.randint(0, pairs - 1, (B,), generator=generator) if pairs > 1 else None
        for i in range(pairs):
            if i < pairs - 1:
                key = torch.randint(0, n_keys, (B,), generator=generator)  # (B,)
            else:  # the final query: a key shown before, uniform over the distinct ones
                key = torch.multinomial((bound >= 0).double(), 1, generator=generator)[:, 0]
            known = bound[rows, key]  # (B,)
            fresh = torch.randint(n_keys, clean, (B,), generator=generator)  # (B,)
            value = torch.where(known >= 0, known, fresh)
            noise = torch.zeros(B, dtype=torch.bool)
            if self.frac_noise > 0 and i < pairs - 1:
                noise = torch.rand(B, generator=generator) < self.frac_noise
                noise &= forced != i
                tokens = torch.randint(clean, self.vocab_size, (B, 2), generator=generator)
                key = torch.where(noise, tokens[:, 0], key)
                value = torch.where(noise, tokens[:, 1], value)
            inputs[:, 2 * i], inputs[:, 2 * i + 1] = key, value
            repeat = (known >= 0) & ~noise
            scored[:, 2 * i] = torch.where(repeat, value, IGNORE_INDEX)
            keep = noise | (known >= 0)
            bound[rows[~keep], key[~keep]] = value[~keep]
        return inputs, next_token_labels(inputs) if train else scored


class NoisyInContextRecall(InContextRecall):
    name: ClassVar[str] = "noisy-in-context-recall"
    summary: ClassVar[str] = "in-context recall with noise tokens interleaved between the pairs"
    key_fields: ClassVar[dict[str, str]] = {
        "vocab_size": "V",
        "noise_vocab_size": "NV",
        "frac_noise": "f",
    }

    vocab_size: int = Field(32, ge=4, description="number of token ids: keys, values and noise")
    noise_vocab_size: int = Field(16, ge=0, description="N, noise tokens at the top of the vocab")
    frac_noise: float = Field(0.2, ge=0, lt=1, description="probability that a pair is noise")
