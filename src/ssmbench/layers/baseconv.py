"""BaseConv (Arora et al. 2024, zoology `zoology/mixers/base_conv.py`): a gated convolution

    y = conv(u) ⊙ (W u + b) + u

where conv is a short depthwise causal convolution (kernel k) or, with k = 0, zoology's
`ImplicitLongConvolution`: a filter h (D, l_max) from a small MLP of the positional features z_t
of Hyena's filter (fixed, t = 0..l_max-1), no modulation, and a skip inside the convolution:

    h_t = W_2 ReLU(W_1 z_t + b_1) + b_2,      conv(u) = h[:L] * u + u.

With d_hidden 16 the long filter has 17·D + 64 parameters (1,152 at D = 64; 5,312 with the
projection). Both `+ u` terms are upstream's, inside the layer, besides the backbone's residual.
"""

from __future__ import annotations

import torch
from torch import nn

from ssmbench.layers.decoding import Constants
from ssmbench.layers.hyena import ShortConv, check_length, positional_features
from ssmbench.ops.kernels import fft_conv


class ImplicitLongConvolution(nn.Module):
    """zoology's long convolution: u (B, L, D) -> h * u + u, h (D, L) from an MLP of z."""

    def __init__(self, d_model: int, l_max: int = 1024, d_emb: int = 3, d_hidden: int = 16):
        super().__init__()
        if l_max < 1:
            raise ValueError(f"l_max must be >= 1, got {l_max}")
        self.l_max = l_max
        self.register_buffer("z", positional_features(l_max, d_emb))  # (l_max, E), fixed
        self.mlp = nn.Sequential(
            nn.Linear(d_emb, d_hidden), nn.ReLU(), nn.Linear(d_hidden, d_model)
        )

    def filter(self, L: int) -> torch.Tensor:
        """h (D, L): the first L taps of the filter built for l_max."""
        check_length(L, self.l_max)
        return self.mlp(self.z[:L]).mT  # (D, L)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u (B, L, D) -> (B, L, D)."""
        x = u.mT  # (B, D, L)
        h = self.filter(x.shape[-1])  # (D, L)
        with torch.autocast(device_type=u.device.type, enabled=False):
            y = fft_conv(x.to(h.dtype), h) + x  # (B, D, L)
        return y.mT.to(u.dtype)

    def init_state(self, batch: int, like: torch.Tensor) -> tuple:
        """The inputs so far (B, D, 0), and the filter h (D, l_max), computed once (Constants)."""
        return like.new_zeros(batch, self.mlp[-1].out_features, 0), Constants(
            (self.filter(self.l_max),)
        )

    def step(self, u: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        """u (B, D) at t -> sum_{j<=t} h_j u_{t-j} + u_t, over every past input (cached)."""
        past, (h,) = state
        past = torch.cat([past, u[..., None]], dim=-1)  # (B, D, t + 1)
        check_length(past.shape[-1], self.l_max)
        return (past.flip(-1) * h[:, : past.shape[-1]]).sum(-1) + u, (past, state[1])


class BaseConv(nn.Module):
    """One BaseConv layer: a short convolution of width `kernel`, or with kernel 0 the long one."""

    def __init__(self, d_model: int, kernel: int = 3, l_max: int = 1024) -> None:
        super().__init__()
        self.projection = nn.Linear(d_model, d_model)
        self.short = kernel > 0
        self.conv = (
            ShortConv(d_model, kernel) if kernel else ImplicitLongConvolution(d_model, l_max)
        )

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u (B, L, D) -> (B, L, D)."""
        conv = self.conv(u.mT).mT if self.short else self.conv(u)  # (B, L, D)
        return conv * self.projection(u) + u

    def init_state(self, batch: int, like: torch.Tensor) -> object:
        return self.conv.init_state(batch, like)

    def step(self, u: torch.Tensor, state: object) -> tuple[torch.Tensor, object]:
        """u (B, D) -> (B, D)."""
        conv, state = self.conv.step(u, state)
        return conv * self.projection(u) + u, state
