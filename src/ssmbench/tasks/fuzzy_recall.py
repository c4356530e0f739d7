"""MAD's fuzzy in-context recall: keys and values are motifs of 1 to 3 tokens.

Poli et al. 2024 (MAD), after mad-lab `generate_fuzzy_in_context_recall_instance` with the
baseline of `configs/tasks/fuzzy-in-context-recall.yml` (V=16, T=128, motifs up to 3 tokens,
multi_query, 12,800 training examples). With V = vocab_size, kmax = k_motif_size and
vmax = v_motif_size:

    vocabulary     keys {0, .., (V-1)/2 - 1}, values {(V-1)/2, .., V-2}, pad V-1
    motifs         a key is an ordered tuple of distinct key tokens, of a size uniform in
                   1..kmax in training and always kmax in evaluation; a value likewise, of a size
                   uniform in 1..vmax, from the value tokens
    sequence       a probe (key, value); filler pairs, each a uniform key with the value already
                   bound to it (the probe's value for the probe key) or a fresh uniform value it
                   keeps; the probe shown once at a uniformly random pair boundary among the
                   fillers; the probe again at the end; pad tokens in front up to T+1 tokens;
                   inputs are the first T
    scored labels  the tokens of the value of every key shown before, each at the position just
                   before it (next-token prediction); -100 elsewhere
    train labels   the next token at every position

Worked example, V=8 (keys 0-2, values 3-6, pad 7), kmax=vmax=2, T=11; pairs (0 1 | 4),
(2 | 3 5), the probe (0 1 | 4) again:

    inputs          7    7    7    0    1    4    2    3    5    0    1
    scored labels -100 -100 -100 -100 -100 -100 -100 -100 -100 -100   4

Difference from mad-lab, on purpose: mad-lab places the first showing of the probe at a token
offset that its filling loop may stop short of, so the final query can ask for a value never
shown; we insert it at a pair boundary, so every scored value was shown before. Every draw comes
from a NumPy generator seeded from the torch generator given.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from pydantic import Field, model_validator

from ssmbench.tasks.base import IGNORE_INDEX, Task

Motif = tuple[int, ...]


class FuzzyInContextRecall(Task):
    name: ClassVar[str] = "fuzzy-in-context-recall"
    summary: ClassVar[str] = "in-context recall with keys and values spanning 1-3 tokens"
    source: ClassVar[str] = "Poli et al. 2024 (MAD); athms/mad-lab instances.py"
    key_fields: ClassVar[dict[str, str]] = {
        "vocab_size": "V",
        "k_motif_size": "K",
        "v_motif_size": "M",
    }

    seq_len: int = Field(128, gt=0, description="sequence length")
    vocab_size: int = Field(16, ge=5, description="number of token ids, the pad included")
    train_examples: int | None = Field(
        12_800, gt=0, description="fixed training set size (None: fresh examples every step)"
    )
    k_motif_size: int = Field(3, gt=0, description="longest key motif (tokens)")
    v_motif_size: int = Field(3, gt=0, description="longest value motif (tokens)")

    @model_validator(mode="after")
    def _check(self) -> FuzzyInContextRecall:
        n_keys = (self.vocab_size - 1) // 2
        if self.k_motif_size > n_keys or self.v_motif_size > self.vocab_size - 1 - n_keys:
            raise ValueError("motif sizes must not exceed the key and value vocabularies")
        if self.seq_len + 1 < 4 * (self.k_motif_size + self.v_motif_size):
            need = 4 * (self.k_motif_size + self.v_motif_size) - 1
            raise ValueError(f"seq_len must be >= {need} for these motif sizes")
        return self

    @property
    def pad(self) -> int:
        return self.vocab_size - 1

    def _motif(self, rng: np.random.Generator, low: int, high: int, size: int) -> Motif:
        return tuple(int(t) for t in rng.permutation(np.arange(low, high))[:size])

    def _pair(self, rng: np.random.Generator, train: bool) -> tuple[Motif, Motif]:
        n_keys = (self.vocab_size - 1) // 2
        k_size = int(rng.integers(1, self.k_motif_size + 1)) if train else self.k_motif_size
        v_size = int(rng.integers(1, self.v_motif_size + 1))
        key = self._motif(rng, 0, n_keys, k_size)
        return key, self._motif(rng, n_keys, self.vocab_size - 1, v_size)

    def _pairs(self, rng: np.random.Generator, train: bool) -> list[tuple[Motif, Motif]]:
        """The pairs of one example in order, the probe shown once among them and again last."""
        probe = self._pair(rng, train)
        reserve = 2 * sum(map(len, probe)) + self.k_motif_size + self.v_motif_size
        bound, pairs, length = {probe[0]: probe[1]}, [], 0
        while length < self.seq_len + 1 - reserve:
            key, value = self._pair(rng, train)
            value = bound.setdefault(key, value)
            pairs.append((key, value))
            length += len(key) + len(value)
        pairs.insert(int(rng.integers(0, len(pairs) + 1)), probe)
        return [*pairs, probe]

    def _example(self, rng: np.random.Generator, train: bool) -> tuple[list[int], list[int]]:
        """T+1 tokens and, aligned with them, the scored targets."""
        tokens, targets, shown = [], [], set()
        for key, value in self._pairs(rng, train):
            tokens += [*key, *value]
            targets += [IGNORE_INDEX] * len(key)
            targets += list(value) if key in shown else [IGNORE_INDEX] * len(value)
            shown.add(key)
        pad = self.seq_len + 1 - len(tokens)
        return [self.pad] * pad + tokens, [IGNORE_INDEX] * pad + targets

    def _draw(
        self, batch_size: int, generator: torch.Generator, train: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
        examples = [self._example(rng, train) for _ in range(batch_size)]
        tokens = torch.tensor([e[0] for e in examples], dtype=torch.long)  # (B, T+1)
        targets = torch.tensor([e[1] for e in examples], dtype=torch.long)  # (B, T+1)
        return tokens[:, :-1], (tokens if train else targets)[:, 1:]
