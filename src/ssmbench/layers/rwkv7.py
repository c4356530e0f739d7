"""RWKV-7 "Goose" (Peng et al. 2025): time mixing and channel mixing, following fla
`fla/layers/rwkv7.py` (RWKV7Attention) and `fla/models/rwkv7/modeling_rwkv7.py` (RWKV7FeedForward).

Time mixing, with x'_t = x_{t-1} (0 before the start) and learned per-channel μ:

    x_* = x_t + (x'_t - x_t) ⊙ μ_*                 (token shift, * = r, w, k, v, a, g)
    r, k, v = W_r x_r, W_k x_k, W_v x_v            (H heads of K channels)
    w = -e^{-1/2} σ(W_w2 tanh(W_w1 x_w) + w_0)       (log-decay in (-0.607, 0); LoRA)
    α = σ(W_a2 W_a1 x_a + a_0),  g = W_g2 σ(W_g1 x_g)  (in-context learning rate, gate)
    κ̂ = normalize_head(k ⊙ k_k),  k ← k ⊙ (1 + (α - 1) ⊙ k_a)
    S_t = S_{t-1} (diag(e^{w_t}) - κ̂_t (κ̂_t ⊙ α_t)^T) + v_t k_t^T,  o_t = S_t r_t
    y = W_o ((GroupNorm_head(o) + (Σ_head r ⊙ k ⊙ r_k) v) ⊙ g)

The recurrence is `ops.dplr` (a = -κ̂, b = κ̂ ⊙ α). Channel mixing: y = W_v ReLU(W_k x_k)² with
x_k = x + (x' - x) ⊙ μ_k (RWKV-7's squared-ReLU FFN).

Layers are built one at a time, so each is fla's first layer (layer_idx 0): no value residual (the
first layer keeps its own v, later ones lerp towards it) and the first layer's inits, with
num_hidden_layers taken as 1 where it only scales (group-norm weight 1). W_o keeps PyTorch's
default init where fla zeroes it (a zero W_o mixes no tokens at init). `step` runs one position on
the recurrent state (x'_t and S for time mixing, x'_t for channel mixing).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ssmbench.layers.linear_attention import heads
from ssmbench.layers.marks import NO_WEIGHT_DECAY, mark, mark_where
from ssmbench.ops.dplr import dplr, dplr_step

SHIFT_POWERS = {"r": 0.2, "w": 0.9, "k": 0.7, "v": 0.7, "a": 0.9, "g": 0.2}  # μ_* = 1 - (i/D)^p
DECAYED = {"r_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight"}  # RWKV-LM's rule
LOG_DECAY_MIN = -math.exp(-0.5)  # w = LOG_DECAY_MIN · σ(·) in (-0.607, 0), fla's lower_bound


def shifted(x: torch.Tensor) -> torch.Tensor:
    """x'_t = x_{t-1}, zero at t = 0: (B, L, D) -> (B, L, D)."""
    return F.pad(x, (0, 0, 1, -1))


class LoRA(nn.Module):
    """y = W_2 act(W_1 x) (+ bias), W_1 zero and W_2 orthogonal × 0.1 at init (fla's LoRA)."""

    def __init__(
        self,
        d_in: int,
        d_out: int,
        rank: int,
        activation: Callable[[torch.Tensor], torch.Tensor],
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.down = nn.Linear(d_in, rank, bias=False)
        self.up = nn.Linear(rank, d_out, bias=bias)
        self.activation = activation
        nn.init.zeros_(self.down.weight)
        nn.init.orthogonal_(
            self.up.weight, gain=0.1 * (math.sqrt(rank / d_out) if rank > d_out else 1)
        )
        if bias:
            nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.activation(self.down(x)))


def lora_rank(d_model: int, scale: float) -> int:
    """fla's default LoRA width: scale·√D rounded to a multiple of 32, at least 32."""
    return max(32, int(round(scale * d_model**0.5 / 32) * 32))


class RWKV7(nn.Module):
    def __init__(
        self, d_model: int, head_dim: int = 64, chunk: int = 32, norm_eps: float = 1e-5
    ) -> None:
        super().__init__()
        D, K = d_model, min(head_dim, d_model)  # fewer, smaller heads at small widths
        if K < 2 or D % K:
            raise ValueError(f"d_model ({D}) must split into heads of {K} >= 2 channels; "
                             "set head_dim to a divisor of d_model")  # fmt: skip
        self.n_heads, self.chunk = D // K, chunk
        n = torch.arange(D, dtype=torch.float32)
        for name, power in SHIFT_POWERS.items():  # layer 0: ratio_1_to_almost0 = 1
            setattr(self, f"x_{name}", nn.Parameter(1 - (n / D) ** power))
        linear = n / (D - 1) - 0.5
        zigzag = ((n % K) - (K - 1) / 2) / ((K - 1) / 2)
        zigzag = zigzag * zigzag.abs()
        self.k_k = nn.Parameter(0.71 - 0.1 * linear)
        self.k_a = nn.Parameter(torch.full((D,), 1.02))
        self.r_k = nn.Parameter(torch.full((self.n_heads, K), -0.04))
        self.r_proj, self.k_proj, self.v_proj, self.o_proj = (
            nn.Linear(D, D, bias=False) for _ in range(4))  # fmt: skip
        for proj, gain in ((self.r_proj, 1.0), (self.k_proj, 0.1), (self.v_proj, 1.0)):
            nn.init.orthogonal_(proj.weight, gain=gain)
        self.w_lora = LoRA(D, D, lora_rank(D, 2.5 * K / 64), torch.tanh)
        self.a_lora = LoRA(D, D, lora_rank(D, 2.5 * K / 64), nn.Identity())
        self.g_lora = LoRA(D, D, lora_rank(D, 5.0), torch.sigmoid, bias=False)
        with torch.no_grad():  # layer 0: ratio_0_to_1 = 0, so w_0 = -6 + 6 i/(D-1) + 0.5 + 2.5 zz
            self.w_lora.up.bias.copy_(-6 + 6 * (linear + 0.5) + 0.5 + 2.5 * zigzag)
            self.a_lora.up.bias.copy_(-0.19 + 0.3 * zigzag + 0.4 * linear)
        self.g_norm = nn.GroupNorm(self.n_heads, D, eps=K * norm_eps)
        mark_where(self, lambda name: name not in DECAYED, **NO_WEIGHT_DECAY)

    def _mix(self, x: torch.Tensor, x_prev: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x, x_prev (B, L, D) -> r, w, k, v, α, κ̂ (B, H, L, K) and g (B, L, D)."""
        delta = x_prev - x
        xr, xw, xk, xv, xa, xg = (
            torch.addcmul(x, delta, getattr(self, f"x_{c}")) for c in "rwkvag"
        )
        r, k, v = self.r_proj(xr), self.k_proj(xk), self.v_proj(xv)  # (B, L, D)
        w = LOG_DECAY_MIN * torch.sigmoid(self.w_lora(xw))  # (B, L, D), log-decay
        alpha = torch.sigmoid(self.a_lora(xa))  # (B, L, D)
        H = self.n_heads
        kk = F.normalize(heads(k * self.k_k, H), dim=-1)  # (B, H, L, K)
        k = k * (1 + (alpha - 1) * self.k_a)
        r, w, k, v, alpha = (heads(t, H) for t in (r, w, k, v, alpha))  # (B, H, L, K)
        return r, w, k, v, alpha, kk, self.g_lora(xg)

    def _out(
        self, o: torch.Tensor, r: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor
    ) -> torch.Tensor:
        """o, r, k, v (B, H, L, K), g (B, L, D) -> y (B, L, D)."""
        o = o.transpose(1, 2).flatten(2)  # (B, L, D)
        o = self.g_norm(o.flatten(0, 1)).view_as(o)  # normalized per head
        bonus = (r * k * self.r_k[:, None]).sum(-1, keepdim=True) * v  # (B, H, L, K)
        return self.o_proj((o + bonus.transpose(1, 2).flatten(2)) * g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, L, D) -> (B, L, D)."""
        r, w, k, v, alpha, kk, g = self._mix(x, shifted(x))
        o = dplr(r, k, v, -kk, kk * alpha, w, self.chunk, LOG_DECAY_MIN)  # (B, H, L, K)
        return self._out(o, r, k, v, g)

    def init_state(self, batch: int, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The recurrent state before the first position: x' (B, D) and S (B, H, K, K)."""
        D = self.r_proj.in_features
        K = D // self.n_heads
        return like.new_zeros(batch, D), like.new_zeros(batch, self.n_heads, K, K)

    def step(
        self, x: torch.Tensor, state: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """One position: x (B, D) and the state -> y (B, D) and the next state."""
        x_prev, S = state
        r, w, k, v, alpha, kk, g = self._mix(x[:, None], x_prev[:, None])  # length 1
        o, S = dplr_step(S, *(t[:, :, 0] for t in (r, k, v, -kk, kk * alpha, w)))  # (B, H, K)
        return self._out(o[:, :, None], r, k, v, g)[:, 0], (x, S)


class RWKV7ChannelMix(nn.Module):
    """RWKV-7's FFN: W_v ReLU(W_k (x + (x' - x) ⊙ μ_k))², hidden 4·D rounded up to 32s."""

    def __init__(self, d_model: int, hidden_ratio: int = 4) -> None:
        super().__init__()
        hidden = 32 * math.ceil(d_model * hidden_ratio / 32)
        self.x_k = nn.Parameter(1 - torch.arange(d_model, dtype=torch.float32) / d_model)
        self.key = nn.Linear(d_model, hidden, bias=False)
        self.value = nn.Linear(hidden, d_model, bias=False)
        nn.init.orthogonal_(self.key.weight)
        nn.init.zeros_(self.value.weight)
        mark(self, "x_k", **NO_WEIGHT_DECAY)

    def _mix(self, x: torch.Tensor, x_prev: torch.Tensor) -> torch.Tensor:
        return self.value(F.relu(self.key(torch.addcmul(x, x_prev - x, self.x_k))) ** 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, L, D) -> (B, L, D)."""
        return self._mix(x, shifted(x))

    def init_state(self, batch: int, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (like.new_zeros(batch, self.key.in_features),)  # x' (B, D)

    def step(
        self, x: torch.Tensor, state: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """One position: x (B, D) -> y (B, D), the state is the previous input."""
        return self._mix(x, state[0]), (x,)
