"""MQAR, multi-query associative recall: after K key-value pairs, recall the value of each key.

Arora, Eyuboglu et al. 2023, "Zoology" §3, after HazyResearch/zoology `data/multiquery_ar.py`.
With T = seq_len, V = vocab_size and K = num_kv_pairs:

    positions 0 .. 2K-1   K pairs (key, value): K distinct keys uniform in {1, .., V/2-1} and K
                          distinct values uniform in {V/2, .., V-1}
    positions 2K .. T-1   the (T-2K)/2 even slots g = 0, 1, .. of the query region; K of them, drawn
                          without replacement with P(g) ∝ (g+1)^(power_a-1) (a power law: short
                          gaps likely), hold the K keys again as queries, key i at slot g_i
    labels                the value of key i at position 2K + 2 g_i, -100 elsewhere
    random_non_queries    every other position of the query region is uniform in {0, .., V-1}
                          (0 otherwise)

Worked example, T=16, V=12, K=2, random_non_queries=False (zoology's docstring example):

    inputs   2    8    4    7    0    0    4    0    0    0    0    0    2    0    0    0
    labels -100 -100 -100 -100 -100 -100   7 -100 -100 -100 -100 -100   8 -100 -100 -100

Chance accuracy is about 1/V. Differences from zoology, on purpose: the non-query tokens come from
the generator given (zoology fills them from torch's unseeded global RNG, so its data is not
reproducible from its seed), and zoology's extra requirement V > T is dropped (nothing in the task
needs it, and it would forbid evaluating V=8192 at T=16384).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field, model_validator

from ssmbench.tasks.base import IGNORE_INDEX, Task, random_subsets


def power_law_slots(
    batch_size: int, slots: int, k: int, power_a: float, generator: torch.Generator
) -> torch.Tensor:
    """(B, k) int64: k distinct slots of range(slots) per row, drawn without replacement with
    P(g) ∝ (g+1)^(power_a-1): zoology's query gaps (short gaps likely)."""
    weights = torch.arange(1, slots + 1, dtype=torch.float64) ** (power_a - 1)  # (G,)
    return torch.multinomial(
        weights.expand(batch_size, -1), k, replacement=False, generator=generator
    )


def query_region(
    batch_size: int,
    seq_len: int,
    start: int,
    vocab_size: int,
    random_fill: bool,
    generator: torch.Generator,
) -> torch.Tensor:
    """inputs (B, T) int64: zeros, and positions start .. T-1 uniform in {0, .., V-1} when
    random_fill (zoology's random_non_queries; the queries are written over them)."""
    inputs = torch.zeros(batch_size, seq_len, dtype=torch.long)  # (B, T)
    if random_fill:
        inputs[:, start:] = torch.randint(
            0, vocab_size, (batch_size, seq_len - start), generator=generator
        )
    return inputs


class MQAR(Task):
    name: ClassVar[str] = "mqar"
    summary: ClassVar[str] = "recall the values of K keys queried at power-law gaps"
    source: ClassVar[str] = "Arora, Eyuboglu et al. 2023 (Zoology); HazyResearch/zoology"
    key_fields: ClassVar[dict[str, str]] = {
        "num_kv_pairs": "KV",
        "vocab_size": "V",
        "power_a": "a",
        "random_non_queries": "rnq",
    }

    seq_len: int = Field(64, gt=0, description="sequence length (even)")
    vocab_size: int = Field(8192, ge=4, description="number of token ids: keys and values halves")
    num_kv_pairs: int = Field(8, gt=0, description="K, key-value pairs (and queries) per example")
    power_a: float = Field(0.01, gt=0, le=1, description="power-law exponent of the query gaps")
    random_non_queries: bool = Field(True, description="fill non-query slots with random tokens")

    @model_validator(mode="after")
    def _check(self) -> MQAR:
        K, V = self.num_kv_pairs, self.vocab_size
        if self.seq_len % 2:
            raise ValueError(f"seq_len must be even, got {self.seq_len}")
        if self.seq_len < 4 * K:
            raise ValueError(f"seq_len must be >= 4 * num_kv_pairs = {4 * K}, got {self.seq_len}")
        if V // 2 - 1 < K:
            raise ValueError(f"vocab_size must be >= {2 * K + 2} for {K} distinct keys, got {V}")
        return self

    def _draw(
        self, batch_size: int, generator: torch.Generator, train: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, K, half = batch_size, self.seq_len, self.num_kv_pairs, self.vocab_size // 2
        keys = random_subsets(B, half - 1, K, generator) + 1  # (B, K) in [1, V/2)
        values = random_subsets(B, self.vocab_size - half, K, generator) + half  # (B, K)
        gaps = power_law_slots(B, (T - 2 * K) // 2, K, self.power_a, generator)  # (B, K)
        query_at = 2 * K + 2 * gaps  # (B, K) positions of the queries

        inputs = query_region(B, T, 2 * K, self.vocab_size, self.random_non_queries, generator)
        inputs[:, 0 : 2 * K : 2] = keys
        inputs[:, 1 : 2 * K : 2] = values
        inputs.scatter_(1, query_at, keys)
        labels = torch.full_like(inputs, IGNORE_INDEX)  # (B, T)
        labels.scatter_(1, query_at, values)
        return inputs, labels
