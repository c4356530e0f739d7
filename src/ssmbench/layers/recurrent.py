"""LSTM (Hochreiter & Schmidhuber 1997) as a sequence mixer: torch's nn.LSTM, outputs only."""

from __future__ import annotations

import torch
from torch import nn


class LSTM(nn.Module):
    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(d_model, d_model, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, L, D) -> (B, L, D)."""
        return self.lstm(x)[0]
