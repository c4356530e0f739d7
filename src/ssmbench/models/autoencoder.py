"""MAD's encoder-decoder readout (for compression), around any model of the registry.

    encode   h = layers(embed(tokens))               (B, T, D), the model's own layers
             z = h[:, -1]                             (B, D), the state at the last position
    decode   u_t = z + P_t                            P: fixed sinusoidal positions (T, D)
             logits_t = head(norm(MLP(u_t)))          MLP = LN, Linear, GELU, LN, Linear, GELU

as in mad-lab's `AutoEncoder` with global_pool='last': every position is reconstructed from the
single vector z, so the score measures how much of the sequence the model's state keeps. The
model's final LayerNorm and head serve as the unembedding.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ssmbench.models.backbone import SequenceModel


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """(length, dim): sin(t·ω_i) in the first half, cos(t·ω_i) in the second, ω_i = 10000^(-i/h)."""
    half = dim // 2
    omega = torch.exp(-math.log(10_000.0) * torch.arange(half) / max(half - 1, 1))  # (h,)
    angles = torch.arange(length)[:, None] * omega[None, :]  # (T, h)
    positions = torch.zeros(length, dim)
    positions[:, :half], positions[:, half : 2 * half] = angles.sin(), angles.cos()
    return positions


class AutoEncoder(nn.Module):
    def __init__(self, model: SequenceModel) -> None:
        super().__init__()
        self.model = model
        d = model.embedding.embedding_dim
        self.decoder = nn.Sequential(
            nn.LayerNorm(d), nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d), nn.Linear(d, d), nn.GELU()
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, T) int64 -> logits (B, T, V), every position decoded from the last state."""
        h = self.model.embedding(tokens)  # (B, T, D)
        for layer in self.model.layers:
            h = layer(h)
        z = h[:, -1]  # (B, D)
        T, D = tokens.shape[1], z.shape[-1]
        u = z[:, None, :] + sinusoidal_positions(T, D).to(z)  # (B, T, D)
        return self.model.head(self.model.norm(self.decoder(u)))  # (B, T, V)


def with_readout(model: SequenceModel, readout: str) -> nn.Module:
    """The model read out as a task asks: 'lm' (its own head) or 'autoencoder'."""
    if readout == "lm":
        return model
    if readout == "autoencoder":
        return AutoEncoder(model)
    raise ValueError(f"unknown readout {readout!r}; choose lm or autoencoder")
