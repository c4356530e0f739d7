"""Forgetting MQAR: MQAR whose keys are re-bound later in the context; recall the latest value.

HazyResearch/zoology `zoology/data/forgetting_mqar.py`: the capability the delta rule was made
for (an association overwritten, not only stored). With T = seq_len, V = vocab_size,
K = num_kv_pairs, U = num_updates and C = 2 (K + U) the context's length:

    positions 0 .. 2K-1    K pairs (key, value): K distinct keys uniform in {1, .., V/2-1} and K
                           distinct values uniform in {V/2, .., V-1}
    positions 2K .. C-1    U of the K keys (a uniformly random subset, in random order), each
                           with a new value uniform over the value tokens other than its first
    positions C .. T-1     the (T-C)/2 even slots g of the query region; K of them, drawn without
                           replacement with P(g) ∝ (g+1)^(power_a-1), hold the K keys again (in
                           the order of the first pairs), key i at slot g_i
    labels                 the latest value of key i at position C + 2 g_i (its new value if it
                           was re-bound, else its first), -100 elsewhere
    random_non_queries     every other position of the query region is uniform in {0, .., V-1}
                           (0 otherwise)

Worked example, T=20, V=16 (keys 1-7, values 8-15), K=2, U=1, random_non_queries=False: key 3
is bound to 9, key 5 to 12, then key 3 again to 14; the queries ask for 5, then 3:

    inputs   3    9    5   12    3   14    5    0    0    0    0    0    0    0    3    0 ...
    labels -100 -100 -100 -100 -100 -100   12 -100 -100 -100 -100 -100 -100 -100  14 -100 ...

(positions 16-19 are 0 and -100). Chance accuracy is about 2/V. Defaults are zoology's config
(K 8, U 4, power_a 0.01, V 8192, T 64). Differences from zoology, on purpose: a new value differs
from the first value of the key it re-binds (zoology compares it with the first value of the
j-th key, not of the key re-bound, so a "re-binding" there can repeat the old value); the random
tokens come from the generator given (zoology's from torch's unseeded global RNG); zoology's
requirement V > T is dropped, as for `mqar`.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field, model_validator

from ssmbench.tasks.base import IGNORE_INDEX, Task, random_subsets
from ssmbench.tasks.mqar import power_law_slots, query_region


class ForgettingMQAR(Task):
    name: ClassVar[str] = "forgetting-mqar"
    summary: ClassVar[str] = "recall the latest value of K keys, U of them re-bound in context"
    source: ClassVar[str] = "HazyResearch/zoology data/forgetting_mqar.py"
    key_fields: ClassVar[dict[str, str]] = {
        "num_kv_pairs": "KV",
        "num_updates": "U",
        "vocab_size": "V",
        "power_a": "a",
        "random_non_queries": "rnq",
    }

    seq_len: int = Field(64, gt=0, description="sequence length (even)")
    vocab_size: int = Field(8192, ge=6, description="number of token ids: keys and values halves")
    num_kv_pairs: int = Field(8, gt=0, description="K, distinct keys (and queries) per example")
    num_updates: int = Field(4, ge=0, description="U <= K, keys bound again to a new value")
    power_a: float = Field(0.01, gt=0, le=1, description="power-law exponent of the query gaps")
    random_non_queries: bool = Field(True, description="fill non-query slots with random tokens")

    @model_validator(mode="after")
    def _check(self) -> ForgettingMQAR:
        K, U, V, T = self.num_kv_pairs, self.num_updates, self.vocab_size, self.seq_len
        if U > K:
            raise ValueError(f"num_updates must be <= num_kv_pairs = {K}, got {U}")
        if T % 2:
            raise ValueError(f"seq_len must be even, got {T}")
        if T < 2 * (K + U) + 2 * K:
            raise ValueError(
                f"seq_len must be >= 2 (num_kv_pairs + num_updates) + 2 num_kv_pairs = "
                f"{2 * (K + U) + 2 * K}, got {T}"
            )
        if V // 2 - 1 < K:
            raise ValueError(f"vocab_size must be >= {2 * K + 2} for {K} distinct keys, got {V}")
        return self

    def _draw(
        self, batch_size: int, generator: torch.Generator, train: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, V = batch_size, self.seq_len, self.vocab_size
        K, U, half = self.num_kv_pairs, self.num_updates, V // 2
        keys = random_subsets(B, half - 1, K, generator) + 1  # (B, K) in [1, V/2)
        values = random_subsets(B, V - half, K, generator) + half  # (B, K)
        rebound = random_subsets(B, K, U, generator)  # (B, U) which keys, in the order re-bound
        old = values.gather(1, rebound)  # (B, U)
        new = torch.randint(half, V - 1, (B, U), generator=generator)  # (B, U) V/2-1 choices
        new = new + (new >= old).long()  # skip the key's first value
        latest = values.scatter(1, rebound, new)  # (B, K)
        C = 2 * (K + U)
        gaps = power_law_slots(B, (T - C) // 2, K, self.power_a, generator)  # (B, K)
        query_at = C + 2 * gaps  # (B, K) positions of the queries

        inputs = query_region(B, T, C, V, self.random_non_queries, generator)  # (B, T)
        inputs[:, 0 : 2 * K : 2] = keys
        inputs[:, 1 : 2 * K : 2] = values
        inputs[:, 2 * K : C : 2] = keys.gather(1, rebound)
        inputs[:, 2 * K + 1 : C : 2] = new
        inputs.scatter_(1, query_at, keys)
        labels = torch.full_like(inputs, IGNORE_INDEX)  # (B, T)
        labels.scatter_(1, query_at, latest)
        return inputs, labels
