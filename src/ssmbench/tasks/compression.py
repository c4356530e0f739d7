"""MAD's compression: read a sequence, squeeze it into one state, reconstruct every token from it.

Poli et al. 2024 (MAD), after mad-lab `generate_compression_instance` and its `AutoEncoder`, with
the baseline of `configs/tasks/compression.yml` (V=16, T=32, 12,800 training examples). With
V = vocab_size and the compression token V-1:

    inputs    T-1 tokens uniform in {0, .., V-2}, then the compression token
    labels    the inputs themselves, at every position
    readout   `autoencoder`: the model's layers encode the sequence, the state at the last
              position is taken, and a decoder (positional embeddings plus a small MLP) predicts
              every position from that one vector (see `ssmbench.models.autoencoder`)

Worked example, T=6, V=5 (compression token 4):

    inputs   2  0  3  3  1  4
    labels   2  0  3  3  1  4

Chance accuracy is about 1/(V-1). mad-lab's optional noise builds noisy labels and then returns
the inputs as labels instead (so noise tokens are scored); we leave noise out.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from ssmbench.tasks.base import Readout, Task


class Compression(Task):
    name: ClassVar[str] = "compression"
    summary: ClassVar[str] = "reconstruct the whole sequence from the state at its last position"
    source: ClassVar[str] = "Poli et al. 2024 (MAD); athms/mad-lab instances.py, AutoEncoder"
    readout: ClassVar[Readout] = "autoencoder"
    key_fields: ClassVar[dict[str, str]] = {"vocab_size": "V"}

    seq_len: int = Field(32, ge=2, description="sequence length, compression token included")
    vocab_size: int = Field(16, ge=3, description="number of token ids, compression token included")
    train_examples: int | None = Field(
        12_800, gt=0, description="fixed training set size (None: fresh examples every step)"
    )

    def _draw(
        self, batch_size: int, generator: torch.Generator, train: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = torch.full((batch_size, self.seq_len), self.vocab_size - 1, dtype=torch.long)
        body = torch.randint(
            0, self.vocab_size - 1, (batch_size, self.seq_len - 1), generator=generator
        )
        inputs[:, :-1] = body  # (B, T)
        return inputs, inputs.clone()
