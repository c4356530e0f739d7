"""Hyena (Poli et al. 2023): implicit long convolutions and the order-2 Hyena operator.

Follows safari `src/models/sequence/hyena.py` (HyenaFilter, HyenaOperator).

Implicit filter of C channels at length L, from positional features z_t = [t/(L-1), cos(ω f t),
-sin(ω f t)] (t = 0..L-1, ω = 2π/L, f = the band frequencies):

    h_t = FFN(z_t) ⊙ exp(-|δ| t/(L-1))        # FFN: Linear, then sin(w ·) between Linears
    y = h * u + β ⊙ u                          # causal convolution by FFT, bias β per channel

δ spans [ln(target)/slow, ln(target)/fast] over the channels, so that the slowest filter decays to
`target` at 1.5·L and the fastest at 0.3·L. The filter is built for the input's length (safari's
l_max set to the training length), so a model sees the same filter shape at every length.

Order-2 operator:  x0, x1, v = split(ShortConv(W_in u));  w = x1 ⊙ v;
                   y = W_out (x0 ⊙ (h * w + β ⊙ w)).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ssmbench.ops.causal_conv import causal_conv1d
from ssmbench.ops.kernels import fft_conv


class Sin(nn.Module):
    """sin(w x), w trainable per feature."""

    def __init__(self, dim: int, w: float = 1.0) -> None:
        super().__init__()
        self.freq = nn.Parameter(w * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.freq * x)


def positional_features(L: int, emb_dim: int, like: torch.Tensor) -> torch.Tensor:
    """z (L, emb_dim): normalized time, then cos and -sin of (emb_dim - 1) // 2 bands."""
    bands = (emb_dim - 1) // 2
    kw = {"device": like.device, "dtype": like.dtype}
    t = torch.linspace(0, 1, L, **kw)[:, None]  # (L, 1)
    w = 2 * math.pi * torch.arange(L, **kw)[:, None] / L  # (L, 1)
    f = torch.linspace(1e-4, bands - 1, bands, **kw)[None]  # (1, bands)
    return torch.cat([t, torch.cos(f * w), -torch.sin(f * w)], dim=-1)  # (L, emb_dim)


class ImplicitFilter(nn.Module):
    """The Hyena filter h (C, L) and its use as a long causal convolution with bias β (C,)."""

    def __init__(
        self,
        channels: int,
        emb_dim: int = 3,
        order: int = 64,
        n_inner: int = 2,
        fast_decay: float = 0.3,
        slow_decay: float = 1.5,
        target: float = 1e-2,
    ) -> None:
        super().__init__()
        if emb_dim < 3 or emb_dim % 2 == 0:
            raise ValueError(f"emb_dim must be odd and >= 3, got {emb_dim}")
        self.emb_dim = emb_dim
        act = Sin(order)  # one frequency vector shared by every sin, as upstream
        layers: list[nn.Module] = [nn.Linear(emb_dim, order), act]
        for _ in range(n_inner):
            layers += [nn.Linear(order, order), act]
        self.ffn = nn.Sequential(*layers, nn.Linear(order, channels, bias=False))
        slowest, fastest = math.log(target) / slow_decay, math.log(target) / fast_decay
        deltas = torch.linspace(slowest, fastest, channels)
        self.register_buffer("deltas", deltas)  # (C,), fixed (modulation lr 0 upstream)
        self.bias = nn.Parameter(torch.randn(channels))  # (C,)

    def filter(self, L: int) -> torch.Tensor:
        """h (C, L)."""
        z = positional_features(L, self.emb_dim, self.bias)  # (L, E)
        t = z[:, :1]  # (L, 1) in [0, 1]
        h = self.ffn(z) * torch.exp(-t * self.deltas.abs())  # (L, C)
        return h.mT

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u (B, L, C) -> y (B, L, C): y = h * u + β ⊙ u."""
        x = u.mT  # (B, C, L)
        h = self.filter(x.shape[-1])  # (C, L)
        with torch.autocast(device_type=u.device.type, enabled=False):
            y = fft_conv(x.to(h.dtype), h) + self.bias[:, None] * x  # (B, C, L)
        return y.mT.to(u.dtype)


class ShortConv(nn.Conv1d):
    """Depthwise causal convolution of width `kernel`, (B, C, L) -> (B, C, L): nn.Conv1d's
    parameters and initialization, applied by `ops.causal_conv1d` (shifted multiply-adds on the
    CPU, where torch's grouped conv1d backward is 10x slower from L ~ 500 on)."""

    kernels = ("causal-conv1d",)  # read by models.backends_of: the recorded conv backend

    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__(channels, channels, kernel, groups=channels, padding=kernel - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return causal_conv1d(x, self.weight[:, 0], self.bias)  # (B, C, L)


class Hyena(nn.Module):
    """The order-2 Hyena operator on d_model channels (one head, inner width 1 as upstream)."""

    def __init__(self, d_model: int, filter_order: int = 64, short: int = 3, emb_dim: int = 3):
        super().__init__()
        self.in_proj = nn.Linear(d_model, 3 * d_model)
        self.short = ShortConv(3 * d_model, short)
        self.long = ImplicitFilter(d_model, emb_dim=emb_dim, order=filter_order)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u (B, L, D) -> (B, L, D)."""
        xs = self.short(self.in_proj(u).mT).mT  # (B, L, 3D), causal
        x0, x1, v = xs.chunk(3, dim=-1)  # (B, L, D) each
        v = self.long(v * x1)  # (B, L, D)
        return self.out_proj(v * x0)
