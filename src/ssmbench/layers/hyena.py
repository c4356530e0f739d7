"""Hyena (Poli et al. 2023): implicit long convolutions and the order-2 Hyena operator.

Follows safari `src/models/sequence/hyena.py` (HyenaFilter, HyenaOperator).

Implicit filter of C channels, built once for `l_max` positions, from positional features
z_t = [t/(l_max-1), cos(ω f t), -sin(ω f t)] (t = 0..l_max-1, ω = 2π/l_max, f = the band
frequencies):

    h_t = FFN(z_t) ⊙ exp(-|δ| t/(l_max-1))    # FFN: Linear, then sin(w ·) between Linears
    y = h[:L] * u + β ⊙ u                      # causal convolution by FFT, bias β per channel

An input of length L <= l_max uses the filter's first L taps, so the output at t depends on
u_0..u_t alone, whatever follows (prefix-consistent); a longer input is refused, naming l_max
(safari instead cuts the input to l_max). δ spans [ln(target)/slow, ln(target)/fast] over the
channels: the slowest filter decays to `target` at 1.5·l_max, the fastest at 0.3·l_max. As
upstream, z is trained at lr 1e-5 and the FFN at lr 1e-3, neither with weight decay; δ is fixed.

Order-2 operator:  x0, x1, v = split(ShortConv(W_in u));  w = x1 ⊙ v;
                   y = W_out (x0 ⊙ (h * w + β ⊙ w)).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ssmbench.layers.decoding import Constants
from ssmbench.layers.marks import HYENA_FILTER, HYENA_POSITIONS, mark
from ssmbench.ops.causal_conv import causal_conv1d, causal_conv1d_step
from ssmbench.ops.kernels import fft_conv


class Sin(nn.Module):
    """sin(w x), w trainable per feature."""

    def __init__(self, dim: int, w: float = 1.0) -> None:
        super().__init__()
        self.freq = nn.Parameter(w * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.freq * x)


def positional_features(l_max: int, emb_dim: int) -> torch.Tensor:
    """z (l_max, emb_dim): normalized time, then cos and -sin of (emb_dim - 1) // 2 bands."""
    bands = (emb_dim - 1) // 2
    t = torch.linspace(0, 1, l_max)[:, None]  # (l_max, 1)
    w = 2 * math.pi * torch.arange(l_max)[:, None] / l_max  # (l_max, 1)
    f = torch.linspace(1e-4, bands - 1, bands)[None]  # (1, bands)
    return torch.cat([t, torch.cos(f * w), -torch.sin(f * w)], dim=-1)  # (l_max, emb_dim)


def check_length(length: int, l_max: int) -> None:
    """A filter built for l_max positions serves inputs up to that length."""
    if length > l_max:
        raise ValueError(
            f"input length {length} exceeds the long filter's l_max {l_max}; build the model with "
            f"the option l_max >= {length} (the trainer sets it to the longest length a run uses)"
        )


class ImplicitFilter(nn.Module):
    """The Hyena filter h (C, l_max) and its use as a long causal convolution with bias β (C,)."""

    def __init__(
        self,
        channels: int,
        l_max: int = 1024,
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
        if l_max < 1:
            raise ValueError(f"l_max must be >= 1, got {l_max}")
        self.l_max = l_max
        self.z = nn.Parameter(positional_features(l_max, emb_dim))  # (l_max, E)
        self.register_buffer("t", self.z.detach()[:, :1].clone())  # (l_max, 1) in [0, 1]
        mark(self, "z", **HYENA_POSITIONS)
        act = Sin(order)  # one frequency vector shared by every sin, as upstream
        layers: list[nn.Module] = [nn.Linear(emb_dim, order), act]
        for _ in range(n_inner):
            layers += [nn.Linear(order, order), act]
        self.ffn = nn.Sequential(*layers, nn.Linear(order, channels, bias=False))
        for layer in self.ffn:
            mark(
                layer, *(name for name, _ in layer.named_parameters(recurse=False)), **HYENA_FILTER
            )
        slowest, fastest = math.log(target) / slow_decay, math.log(target) / fast_decay
        deltas = torch.linspace(slowest, fastest, channels)
        self.register_buffer("deltas", deltas)  # (C,), fixed (modulation lr 0 upstream)
        self.bias = nn.Parameter(torch.randn(channels))  # (C,)

    def filter(self, L: int) -> torch.Tensor:
        """h (C, L): the first L taps of the filter built for l_max."""
        check_length(L, self.l_max)
        h = self.ffn(self.z[:L]) * torch.exp(-self.t[:L] * self.deltas.abs())  # (L, C)
        return h.mT

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u (B, L, C) -> y (B, L, C): y = h * u + β ⊙ u."""
        x = u.mT  # (B, C, L)
        h = self.filter(x.shape[-1])  # (C, L)
        with torch.autocast(device_type=u.device.type, enabled=False):
            y = fft_conv(x.to(h.dtype), h) + self.bias[:, None] * x  # (B, C, L)
        return y.mT.to(u.dtype)

    def init_state(self, batch: int, like: torch.Tensor) -> tuple:
        """The inputs so far (B, C, 0), and the filter h (C, l_max), computed once (Constants)."""
        return like.new_zeros(batch, self.bias.shape[0], 0), Constants((self.filter(self.l_max),))

    def step(self, u: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        """u (B, C) at position t -> y_t = sum_{j<=t} h_j u_{t-j} + β u_t: a cached convolution
        over every past input (the long convolution has no smaller state)."""
        past, (h,) = state
        past = torch.cat([past, u[..., None]], dim=-1)  # (B, C, t + 1)
        check_length(past.shape[-1], self.l_max)
        y = (past.flip(-1) * h[:, : past.shape[-1]]).sum(-1) + self.bias * u  # (B, C)
        return y, (past, state[1])


class ShortConv(nn.Conv1d):
    """Depthwise causal convolution of width `kernel`, (B, C, L) -> (B, C, L): nn.Conv1d's
    parameters and initialization, applied by `ops.causal_conv1d` (shifted multiply-adds on the
    CPU, where torch's grouped conv1d backward is 10x slower from L ~ 500 on)."""

    kernels = ("causal-conv1d",)  # read by models.backends_of: the recorded conv backend

    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__(channels, channels, kernel, groups=channels, padding=kernel - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return causal_conv1d(x, self.weight[:, 0], self.bias)  # (B, C, L)

    def init_state(self, batch: int, like: torch.Tensor) -> torch.Tensor:
        return like.new_zeros(batch, self.in_channels, self.kernel_size[0] - 1)  # (B, C, W-1)

    def step(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C) -> (B, C)."""
        return causal_conv1d_step(x, state, self.weight[:, 0], self.bias)


class Hyena(nn.Module):
    """The order-2 Hyena operator on d_model channels (one head, inner width 1 as upstream)."""

    def __init__(
        self,
        d_model: int,
        filter_order: int = 64,
        short: int = 3,
        emb_dim: int = 3,
        l_max: int = 1024,
    ) -> None:
        super().__init__()
        self.in_proj = nn.Linear(d_model, 3 * d_model)
        self.short = ShortConv(3 * d_model, short)
        self.long = ImplicitFilter(d_model, l_max, emb_dim=emb_dim, order=filter_order)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u (B, L, D) -> (B, L, D)."""
        xs = self.short(self.in_proj(u).mT).mT  # (B, L, 3D), causal
        x0, x1, v = xs.chunk(3, dim=-1)  # (B, L, D) each
        v = self.long(v * x1)  # (B, L, D)
        return self.out_proj(v * x0)

    def init_state(self, batch: int, like: torch.Tensor) -> tuple:
        return self.short.init_state(batch, like), self.long.init_state(batch, like)

    def step(self, u: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        """u (B, D) -> (B, D)."""
        xs, short = self.short.step(self.in_proj(u), state[0])  # (B, 3D)
        x0, x1, v = xs.chunk(3, dim=-1)  # (B, D) each
        v, long = self.long.step(v * x1, state[1])
        return self.out_proj(v * x0), (short, long)
