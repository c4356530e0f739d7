"""Compositional MQAR: values bound to pairs of keys (K1, K2); a query gives both.

HazyResearch/zoology `zoology/data/compositional_mqar.py`. The pairs form a g × g grid, so neither
key alone tells the value. With T = seq_len, V = vocab_size, t = V // 3 and K = num_kv_pairs = g²:

    positions 0 .. 3K-1    K triples (K1, K2, value): g distinct K1 uniform in {1, .., t-1} and
                           g distinct K2 uniform in {t, .., 2t-1}, every one of the g² pairs once,
                           in a uniformly random order, each with a distinct value uniform in
                           {2t, .., V-1}
    positions 3K .. T-1    the (T-3K)/3 slots g' of the query region, each 3 tokens; K of them,
                           drawn without replacement with P(g') ∝ (g'+1)^(power_a-1), hold the K
                           pairs again (in the order of the triples): K1 at 3K + 3 g'_i, K2 after
    labels                 the value of pair i at its K2, position 3K + 3 g'_i + 1; -100 elsewhere
    random_non_queries     every other position of the query region is uniform in {0, .., V-1}
                           (0 otherwise)

Worked example, T=30, V=30 (t = 10: K1 1-9, K2 10-19, values 20-29), K=4 (g = 2: K1 in {4, 7},
K2 in {12, 15}), random_non_queries=False:

    inputs   7 15 21  4 15 28  7 12 25  4 12 20 |  4 15  0  0  0  0  7 12  0  0  0  0 ...
    labels   -100 at every position but 13 (28, the value of (4, 15)) and 19 (25, of (7, 12))

and the other two pairs queried at later slots in the same way (the sequence shown is cut). Chance
accuracy is about 1/(V - 2t). Defaults are zoology's config (K 4, power_a 0.01, V 8192, T 64).
Differences from zoology, on purpose: the random tokens come from the generator given (zoology's
from torch's unseeded global RNG); zoology's requirements V > T and an even T are dropped
(nothing in the task needs them).
"""

from __future__ import annotations

import itertools
import math
from typing import ClassVar

import torch
from pydantic import Field, model_validator

from ssmbench.tasks.base import IGNORE_INDEX, Task, random_subsets
from ssmbench.tasks.mqar import power_law_slots, query_region


class CompositionalMQAR(Task):
    name: ClassVar[str] = "compositional-mqar"
    summary: ClassVar[str] = "recall the values of K key pairs (K1, K2) laid out on a g x g grid"
    source: ClassVar[str] = "HazyResearch/zoology data/compositional_mqar.py"
    key_fields: ClassVar[dict[str, str]] = {
        "num_kv_pairs": "KV",
        "vocab_size": "V",
        "power_a": "a",
        "random_non_queries": "rnq",
    }

    seq_len: int = Field(64, gt=0, description="sequence length")
    vocab_size: int = Field(8192, ge=6, description="number of token ids: K1, K2, values thirds")
    num_kv_pairs: int = Field(4, gt=0, description="K = g², a perfect square: pairs and queries")
    power_a: float = Field(0.01, gt=0, le=1, description="power-law exponent of the query gaps")
    random_non_queries: bool = Field(True, description="fill non-query slots with random tokens")

    @property
    def grid(self) -> int:
        """g: the number of distinct K1 (and K2) keys."""
        return math.isqrt(self.num_kv_pairs)

    @model_validator(mode="after")
    def _check(self) -> CompositionalMQAR:
        K, V, g = self.num_kv_pairs, self.vocab_size, self.grid
        if g * g != K:
            raise ValueError(f"num_kv_pairs must be a perfect square (4, 9, 16, ..), got {K}")
        if self.seq_len < 6 * K:
            raise ValueError(f"seq_len must be >= 6 * num_kv_pairs = {6 * K}, got {self.seq_len}")
        if not self._fits(V):
            need = next(v for v in itertools.count(V) if self._fits(v))
            raise ValueError(f"vocab_size must be >= {need} for {K} pairs, got {V}")
        return self

    def _fits(self, vocab_size: int) -> bool:
        """Whether vocab_size has g K1 tokens (0 excluded) and K value tokens."""
        third = vocab_size // 3
        return third - 1 >= self.grid and vocab_size - 2 * third >= self.num_kv_pairs

    def _draw(
        self, batch_size: int, generator: torch.Generator, train: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, V, K, g = batch_size, self.seq_len, self.vocab_size, self.num_kv_pairs, self.grid
        third = V // 3
        first_keys = random_subsets(B, third - 1, g, generator) + 1  # (B, g) in [1, t)
        second_keys = random_subsets(B, third, g, generator) + third  # (B, g) in [t, 2t)
        order = random_subsets(B, K, K, generator)  # (B, K) a random order of the grid's cells
        k1 = first_keys.repeat_interleave(g, dim=1).gather(1, order)  # (B, K)
        k2 = second_keys.repeat(1, g).gather(1, order)  # (B, K)
        values = random_subsets(B, V - 2 * third, K, generator) + 2 * third  # (B, K)
        C = 3 * K
        gaps = power_law_slots(B, (T - C) // 3, K, self.power_a, generator)  # (B, K)
        query_at = C + 3 * gaps  # (B, K) positions of the queries' K1

        inputs = query_region(B, T, C, V, self.random_non_queries, generator)  # (B, T)
        inputs[:, 0:C:3] = k1
        inputs[:, 1:C:3] = k2
        inputs[:, 2:C:3] = values
        inputs.scatter_(1, query_at, k1)
        inputs.scatter_(1, query_at + 1, k2)
        labels = torch.full_like(inputs, IGNORE_INDEX)  # (B, T)
        labels.scatter_(1, query_at + 1, values)
        return inputs, labels
