"""A layer's recurrent form run over a whole sequence, for the tests that hold it to the layer's
parallel forward."""

from __future__ import annotations

import torch


def run_steps(layer: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, tuple]:
    """The layer's recurrent form over x (B, L, D): its step from init_state, one position at a
    time -> (y (B, L, D), the final state)."""
    state = layer.init_state(x.shape[0], x)
    out = []
    for x_t in x.unbind(1):
        y, state = layer.step(x_t, state)
        out.append(y)
    return torch.stack(out, dim=1), state
