"""Linear-attention mixers on ops.linear_attention: GLA, RetNet and Based's Taylor attention.

All three compute, per head, o_t = sum_{s<=t} (q_t ⊙ exp(b_t - b_s)) · k_s v_s (see the op):

- GLA (Yang et al. 2024; fla `fla/layers/gla.py`): a_t = logsigmoid(W_2 W_1 x_t) / 16 per key
  channel (low-rank gate), q scaled by K^-1/2, output RMSNorm per head times SiLU(W_g x).
- RetNet (Sun et al. 2023; fla `fla/layers/multiscale_retention.py`): a fixed decay per head,
  γ_h = 1 - 2^(-5-h), rotary positions on q and k, the same norm and gate.
- Based (Arora et al. 2024; zoology `zoology/mixers/based.py`): no decay, feature map
  φ(x) = [1, x/d^{1/4}, (x ⊗ x)/(√2·√d)] (so φ(q)·φ(k) = 1 + q·k/√d + (q·k)²/(2d), the Taylor
  expansion of exp(q·k/√d)), normalized: o_t = Σ φ(q_t)·φ(k_s) v_s / Σ φ(q_t)·φ(k_s).

GLA's chunk is the op's default for per-key decays (16, in sub-chunks of 4); the others' is 32.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ssmbench.layers.attention import rotary
from ssmbench.ops.linear_attention import linear_attention, linear_attention_step


def state_of(layer: GLA | RetNet, batch: int, like: torch.Tensor) -> torch.Tensor:
    """The zero state S (B, H, K, V) of a gated linear attention."""
    H = layer.n_heads
    key, value = layer.k_proj.out_features // H, layer.v_proj.out_features // H
    return like.new_zeros(batch, H, key, value)


def heads(x: torch.Tensor, n: int) -> torch.Tensor:
    """(B, L, n·d) -> (B, n, L, d)."""
    return x.unflatten(-1, (n, -1)).transpose(1, 2)


class GatedOutput(nn.Module):
    """o (B, H, L, Dv) -> W_o (RMSNorm_head(o) ⊙ SiLU(W_g x)), as fla's GLA and RetNet."""

    def __init__(self, d_model: int, value_dim: int, n_heads: int) -> None:
        super().__init__()
        self.g_proj = nn.Linear(d_model, value_dim, bias=False)
        self.norm_weight = nn.Parameter(torch.ones(value_dim // n_heads))
        self.o_proj = nn.Linear(value_dim, d_model, bias=False)

    def forward(self, o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        o = F.rms_norm(o, o.shape[-1:], self.norm_weight, eps=1e-5)  # (B, H, L, Dv)
        o = o.transpose(1, 2).flatten(2)  # (B, L, H·Dv)
        return self.o_proj(o * F.silu(self.g_proj(x)))


class GLA(nn.Module):
    def __init__(
        self,
        d_model: int,
        n_heads: int = 4,
        expand_k: float = 0.5,
        expand_v: float = 1.0,
        gate_rank: int = 16,
        chunk: int | None = None,
    ) -> None:
        super().__init__()
        key_dim, value_dim = int(d_model * expand_k), int(d_model * expand_v)
        if key_dim % n_heads or value_dim % n_heads:
            raise ValueError(f"key ({key_dim}) and value ({value_dim}) dims need {n_heads} heads")
        self.n_heads, self.chunk = n_heads, chunk
        self.q_proj = nn.Linear(d_model, key_dim, bias=False)
        self.k_proj = nn.Linear(d_model, key_dim, bias=False)
        self.v_proj = nn.Linear(d_model, value_dim, bias=False)
        self.gk_proj = nn.Sequential(
            nn.Linear(d_model, gate_rank, bias=False), nn.Linear(gate_rank, key_dim)
        )
        self.out = GatedOutput(d_model, value_dim, n_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, L, D) -> (B, L, D)."""
        H = self.n_heads
        q, k, v = heads(self.q_proj(x), H), heads(self.k_proj(x), H), heads(self.v_proj(x), H)
        log_decay = heads(F.logsigmoid(self.gk_proj(x)) / 16, H)  # (B, H, L, K) <= 0
        o = linear_attention(q * q.shape[-1] ** -0.5, k, v, log_decay, self.chunk)
        return self.out(o, x)  # (B, H, L, V) -> (B, L, D)

    def init_state(self, batch: int, like: torch.Tensor) -> torch.Tensor:
        return state_of(self, batch, like)

    def step(self, x: torch.Tensor, S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, D) -> (B, D), the state S (B, H, K, V)."""
        H = self.n_heads
        q, k, v = (p(x).unflatten(-1, (H, -1)) for p in (self.q_proj, self.k_proj, self.v_proj))
        log_decay = F.logsigmoid(self.gk_proj(x)).unflatten(-1, (H, -1)) / 16  # (B, H, K)
        o, S = linear_attention_step(S, q * q.shape[-1] ** -0.5, k, v, log_decay)
        return self.out(o[:, :, None], x[:, None])[:, 0], S


class RetNet(nn.Module):
    def __init__(
        self,
        d_model: int,
        n_heads: int = 4,
        expand_k: float = 1.0,
        expand_v: float = 2.0,
        chunk: int = 32,
    ) -> None:
        super().__init__()
        key_dim, value_dim = int(d_model * expand_k), int(d_model * expand_v)
        if key_dim % (2 * n_heads) or value_dim % n_heads:
            raise ValueError(f"key ({key_dim}) and value ({value_dim}) dims need {n_heads} heads")
        self.n_heads, self.chunk = n_heads, chunk
        self.q_proj = nn.Linear(d_model, key_dim, bias=False)
        self.k_proj = nn.Linear(d_model, key_dim, bias=False)
        self.v_proj = nn.Linear(d_model, value_dim, bias=False)
        gamma = 1 - 2.0 ** (-5.0 - torch.arange(n_heads, dtype=torch.float32))
        self.register_buffer("log_gamma", gamma.log())  # (H,), fixed
        self.out = GatedOutput(d_model, value_dim, n_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, L, D) -> (B, L, D)."""
        H = self.n_heads
        q, k = rotary(heads(self.q_proj(x), H)), rotary(heads(self.k_proj(x), H))
        v = heads(self.v_proj(x), H)  # (B, H, L, V)
        log_decay = self.log_gamma.to(q.dtype)[:, None, None].expand(*q.shape[:3], 1)
        o = linear_attention(q * q.shape[-1] ** -0.5, k, v, log_decay, self.chunk)
        return self.out(o, x)

    def init_state(self, batch: int, like: torch.Tensor) -> tuple:
        return state_of(self, batch, like), 0  # S (B, H, K, V), position t

    def step(self, x: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        """x (B, D) at position t -> (B, D)."""
        S, t = state
        H = self.n_heads
        q, k, v = (p(x).view(x.shape[0], H, 1, -1) for p in (self.q_proj, self.k_proj, self.v_proj))
        q, k = rotary(q, offset=t)[:, :, 0], rotary(k, offset=t)[:, :, 0]  # (B, H, K)
        log_decay = self.log_gamma.to(q.dtype)[:, None].expand(x.shape[0], H, 1)
        o, S = linear_attention_step(S, q * q.shape[-1] ** -0.5, k, v[:, :, 0], log_decay)
        return self.out(o[:, :, None], x[:, None])[:, 0], (S, t + 1)


def taylor_features(x: torch.Tensor) -> torch.Tensor:
    """φ(x) (..., 1 + d + d²) with φ(q)·φ(k) = 1 + q·k/√d + (q·k)²/(2d). x (..., d)."""
    d = x.shape[-1]
    x2 = (x[..., :, None] * x[..., None, :]).flatten(-2) / math.sqrt(2 * d)  # (..., d²)
    return torch.cat([torch.ones_like(x[..., :1]), x / d**0.25, x2], dim=-1)


class BasedLinearAttention(nn.Module):
    def __init__(
        self, d_model: int, n_heads: int = 2, feature_dim: int = 16, chunk: int = 32
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be a multiple of n_heads ({n_heads})")
        self.n_heads, self.chunk = n_heads, chunk
        self.q_proj = nn.Linear(d_model, n_heads * feature_dim, bias=False)
        self.k_proj = nn.Linear(d_model, n_heads * feature_dim, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, L, D) -> (B, L, D)."""
        H = self.n_heads
        q, k = taylor_features(heads(self.q_proj(x), H)), taylor_features(heads(self.k_proj(x), H))
        v = heads(self.v_proj(x), H)  # (B, H, L, Dv)
        v1 = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)  # a ones column: the normalizer
        no_decay = q.new_zeros(*q.shape[:3], 1)
        o = linear_attention(q, k, v1, no_decay, self.chunk)  # (B, H, L, Dv + 1)
        y = o[..., :-1] / (o[..., -1:] + 1e-12)  # (B, H, L, Dv)
        return self.o_proj(y.transpose(1, 2).flatten(2))

    def init_state(self, batch: int, like: torch.Tensor) -> torch.Tensor:
        """S (B, H, 1 + f + f², Dv + 1): the features' sums of v and of 1 (the normalizer)."""
        f = self.q_proj.out_features // self.n_heads
        value = self.v_proj.out_features // self.n_heads
        return like.new_zeros(batch, self.n_heads, 1 + f + f * f, value + 1)

    def step(self, x: torch.Tensor, S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, D) -> (B, D)."""
        H = self.n_heads
        q, k = (taylor_features(p(x).unflatten(-1, (H, -1))) for p in (self.q_proj, self.k_proj))
        v = self.v_proj(x).unflatten(-1, (H, -1))  # (B, H, Dv)
        v1 = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)
        o, S = linear_attention_step(S, q, k, v1, q.new_zeros(*q.shape[:2], 1))
        y = o[..., :-1] / (o[..., -1:] + 1e-12)  # (B, H, Dv)
        return self.o_proj(y.flatten(1)), S
