"""Blocks that wrap a sequence mixer: the S4D-style SSM block and the Mamba block."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ssmbench.ops.causal_conv import causal_conv1d, causal_conv1d_step


class SSMBlock(nn.Module):
    """The standalone S4D layer's block: y = GLU(W · GELU(SSM(x))), with SSM(x) including D x."""

    def __init__(self, d_model: int, ssm: nn.Module) -> None:
        super().__init__()
        self.ssm = ssm
        self.out_proj = nn.Linear(d_model, 2 * d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, L, D) -> (B, L, D)."""
        y = F.gelu(self.ssm(x))  # (B, L, D)
        return F.glu(self.out_proj(y), dim=-1)  # (B, 2D) -> (B, L, D)

    def init_state(self, batch: int, like: torch.Tensor) -> object:
        return self.ssm.init_state(batch, like)

    def step(self, x: torch.Tensor, state: object) -> tuple[torch.Tensor, object]:
        """x (B, D) -> (B, D)."""
        y, state = self.ssm.step(x, state)
        return F.glu(self.out_proj(F.gelu(y)), dim=-1), state


class MambaBlock(nn.Module):
    """Mamba's block (Gu & Dao 2023, Fig. 3) around any inner SSM acting on E = expand·D channels:

    x, z = W_in u;  x = SiLU(conv1d_causal(x));  y = SSM(x) ⊙ SiLU(z);  out = W_out y

    The causal convolution is `ops.causal_conv1d` (the causal-conv1d kernel on CUDA when it is
    installed).
    """

    kernels = ("causal-conv1d",)  # read by models.backends_of: the recorded conv backend

    def __init__(
        self,
        d_model: int,
        make_ssm: Callable[[int], nn.Module],
        expand: int = 2,
        d_conv: int = 4,
    ) -> None:
        super().__init__()
        d_inner = expand * d_model
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1)
        self.ssm = make_ssm(d_inner)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u (B, L, D) -> (B, L, D)."""
        x, z = self.in_proj(u).chunk(2, dim=-1)  # (B, L, E) each
        weight = self.conv1d.weight[:, 0]  # (E, W)
        x = causal_conv1d(x.mT, weight, self.conv1d.bias, activation="silu").mT  # (B, L, E)
        y = self.ssm(x) * F.silu(z)  # (B, L, E)
        return self.out_proj(y)  # (B, L, D)

    def init_state(self, batch: int, like: torch.Tensor) -> tuple:
        """The convolution's last W - 1 inputs (B, E, W - 1), and the SSM's state."""
        conv = like.new_zeros(batch, self.conv1d.in_channels, self.conv1d.kernel_size[0] - 1)
        return conv, self.ssm.init_state(batch, like)

    def step(self, u: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        """u (B, D) -> (B, D)."""
        conv, ssm = state
        x, z = self.in_proj(u).chunk(2, dim=-1)  # (B, E) each
        weight = self.conv1d.weight[:, 0]  # (E, W)
        x, conv = causal_conv1d_step(x, conv, weight, self.conv1d.bias, activation="silu")
        y, ssm = self.ssm.step(x, ssm)  # (B, E)
        return self.out_proj(y * F.silu(z)), (conv, ssm)
