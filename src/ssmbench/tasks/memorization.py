"""MAD's memorization: a fixed key-to-value map, the same for every example, learned in the weights.

Poli et al. 2024 (MAD), after mad-lab `generate_memorization_instance` and `generate_kv_map` with
the baseline of `configs/tasks/memorization.yml` (V=256, T=32, 256 training examples). With
V = vocab_size and the insert token V-1:

    map            keys {0, .., (V-1)/2 - 1} matched one to one with values drawn without
                   replacement from {(V-1)/2, .., V-2}, fixed by `map_seed` (the same for every
                   run, so held-out sets and training share it)
    inputs         T/2 pairs (key, insert token), keys uniform
    labels         the key's value at each insert position, -100 at the keys (trained and scored
                   alike)

Worked example, V=8 (keys 0-2, values 3-6, insert 7), map {0: 5, 1: 3, 2: 6}, T=6:

    inputs    2    7    0    7    2    7
    labels -100    6 -100    5 -100    6

Chance accuracy is 1/((V-1)/2). The map must be learned from a small fixed training set
(`train_examples`); held-out sequences are new orderings of the same keys. Difference from
mad-lab, on purpose: its map is seeded by the run's seed, so each seed memorizes another map
while being tested on it; ours is one fixed map per `map_seed`.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field, model_validator

from ssmbench.tasks.base import IGNORE_INDEX, Task


class Memorization(Task):
    name: ClassVar[str] = "memorization"
    summary: ClassVar[str] = "recall the value of a key from a fixed map learned in the weights"
    source: ClassVar[str] = "Poli et al. 2024 (MAD); athms/mad-lab instances.py"
    key_fields: ClassVar[dict[str, str]] = {"vocab_size": "V"}

    seq_len: int = Field(32, ge=2, description="sequence length (even)")
    vocab_size: int = Field(256, ge=4, description="number of token ids, the insert token included")
    train_examples: int | None = Field(
        256, gt=0, description="fixed training set size (None: fresh examples every step)"
    )
    map_seed: int = Field(12345, ge=0, description="seed of the fixed key-to-value map")

    @model_validator(mode="after")
    def _check(self) -> Memorization:
        if self.seq_len % 2:
            raise ValueError(f"seq_len must be even, got {self.seq_len}")
        return self

    @property
    def n_keys(self) -> int:
        return (self.vocab_size - 1) // 2

    def value_map(self) -> torch.Tensor:
        """(n_keys,) int64: the value of each key."""
        values = torch.arange(self.n_keys, self.vocab_size - 1)
        order = torch.randperm(len(values), generator=torch.Generator().manual_seed(self.map_seed))
        return values[order][: self.n_keys]

    def _draw(
        self, batch_size: int, generator: torch.Generator, train: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keys = torch.randint(0, self.n_keys, (batch_size, self.seq_len // 2), generator=generator)
        inputs = torch.full((batch_size, self.seq_len), self.vocab_size - 1, dtype=torch.long)
        inputs[:, 0::2] = keys  # (B, T): key, insert, key, insert, ...
        labels = torch.full_like(inputs, IGNORE_INDEX)  # (B, T)
        labels[:, 1::2] = self.value_map()[keys]
        return inputs, labels
