"""The backbone shared by every model: embedding, pre-norm residual layers, norm, linear head.

    h_0 = E[tokens] (+ P[t] with learned absolute positions, where a model has them)
    h_{i+1} = h_i + f_i(LayerNorm(h_i));  logits = W_head LayerNorm(h_n)

The study's models had no residual connections; ours do (see the README).

Recurrent decoding: `state = model.init_state(B)`, then `logits, state = model.step(tokens,
state)` one position at a time (tokens (B,), logits (B, V)) gives the logits of `model(x)` at
each position. Each sublayer that has a recurrent form implements `init_state(batch, like)` and
`step(x (B, D), state) -> (y (B, D), state)`; a model with a sublayer that has none refuses.
Every tensor of a state, outside `Constants`, is per sequence (batch first): what the registry's
`state_size` counts (`layers.decoding.Constants` holds what is computed once).
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

    def step(self, x: torch.Tensor, state: object) -> tuple[torch.Tensor, object]:
        y, state = self.fn.step(self.norm(x), state)  # (B, D)
        return x + y, state


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

    def init_state(self, batch: int) -> dict:
        """The state before the first position: every layer's, and the position t = 0."""
        missing = sorted({type(m.fn).__name__ for m in self.layers if not hasattr(m.fn, "step")})
        if missing:
            raise ValueError(
                f"this model has no recurrent form ({', '.join(missing)} cannot decode step by "
                "step); run it on whole sequences instead"
            )
        like = self.head.weight
        return {"t": 0, "layers": [m.fn.init_state(batch, like) for m in self.layers]}

    def step(self, tokens: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        """tokens (B,) int64 at position state["t"] -> logits (B, V) and the next state."""
        t = state["t"]
        h = self.embedding(tokens)  # (B, D)
        if self.positions is not None:
            if t >= self.positions.num_embeddings:
                raise ValueError(
                    f"this model has learned positions up to {self.positions.num_embeddings}, "
                    f"got position {t}"
                )
            h = h + self.positions.weight[t]
        layers = []
        for layer, layer_state in zip(self.layers, state["layers"], strict=True):
            h, layer_state = layer.step(h, layer_state)
            layers.append(layer_state)
        return self.head(self.norm(h)), {"t": t + 1, "layers": layers}
