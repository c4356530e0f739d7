"""LSTM (Hochreiter & Schmidhuber 1997) as a sequence mixer: torch's nn.LSTM, outputs only.

With a hidden size other than d_model, a linear map takes the hidden states back to d_model.
"""

from __future__ import annotations

import torch
from torch import nn


class LSTM(nn.Module):
    def __init__(self, d_model: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or d_model
        self.lstm = nn.LSTM(d_model, hidden, batch_first=True)
        self.out = nn.Linear(hidden, d_model) if hidden != d_model else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, L, D) -> (B, L, D)."""
        return self.out(self.lstm(x)[0])  # (B, L, hidden) -> (B, L, D)

    def init_state(self, batch: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(h, c), (B, hidden) each, zero."""
        zero = like.new_zeros(batch, self.lstm.hidden_size)
        return zero, zero

    def step(self, x: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        """x (B, D) -> (B, D), one step of the LSTM from (h, c)."""
        h, c = (s[None] for s in state)  # (1, B, hidden): nn.LSTM's layout
        y, (h, c) = self.lstm(x[:, None], (h, c))  # (B, 1, hidden)
        return self.out(y[:, 0]), (h[0], c[0])
