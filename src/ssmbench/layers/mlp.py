"""Position-wise gated MLP: y = W_o (W_a x ⊙ GELU(W_g x)). No mixing across positions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GatedMLP(nn.Module):
    def __init__(self, d_model: int, expand: int = 2) -> None:
        super().__init__()
        self.d_hidden = expand * d_model
        self.in_proj = nn.Linear(d_model, 2 * self.d_hidden)
        self.out_proj = nn.Linear(self.d_hidden, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, L, D) -> (B, L, D)."""
        a, g = self.in_proj(x).chunk(2, dim=-1)  # (B, L, E) each
        return self.out_proj(a * F.gelu(g))

    def init_state(self, batch: int, like: torch.Tensor) -> None:
        return None  # position-wise: nothing to carry

    def step(self, x: torch.Tensor, state: None) -> tuple[torch.Tensor, None]:
        """x (B, D) -> (B, D)."""
        return self(x), None
