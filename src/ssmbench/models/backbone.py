"""The backbone shared by every model: embedding, pre-norm residual layers, norm, linear head.

    h_0 = E[tokens] (+ P[t] with learned absolute positions, where a model has them)
    h_{i+1} = h_i + f_i(LayerNorm(h_i));  logits = W_head LayerNorm(h_n)

The study's models had no residual connections; ours do (see the README).
"""

from __future__ import annotations

import torch
from torch import nn


class Residual(nn.Module):
    def __init__(self, d_model: int, fn: nn.Module) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fn(self.norm(x))


class SequenceModel(nn.Module):
    def __init__(
        self, vocab_size: int, d_model: int, layers: list[nn.Module], positions: int = 0
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.positions = nn.Embedding(positions, d_model) if positions else None
        self.layers = nn.ModuleList(Residual(d_model, layer) for layer in layers)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, T) int64 -> logits (B, T, V)."""
        h = self.embedding(tokens)  # (B, T, D)
        if self.positions is not None:
            length, max_len = tokens.shape[1], self.positions.num_embeddings
            if length > max_len:
                raise ValueError(
                    f"this model has learned positions up to {max_len}, got length {length}"
                )
            h = h + self.positions.weight[:length]  # (B, T, D) + (T, D)
        for layer in self.layers:
            h = layer(h)
        return self.head(self.norm(h))
