"""Causal multi-head self-attention with rotary position embeddings (RoPE, Su et al. 2021).

Each head rotates the pair (q_{2i}, q_{2i+1}) at position t by the angle t * 10000^{-2i/d_head}
(the same for k), so q_s . k_t depends on positions only through s - t; then
softmax(q k^T / sqrt(d_head)) v with keys restricted to t <= s.

Variants: `rope=False` leaves positions to the model (learned absolute positions, the Mamba
paper's MHA-Abs); `window=w > 0` is sliding-window attention, keys restricted to s - w <= t <= s
(w + 1 keys, as zoology's SlidingAttn with block_size w).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssmbench.ops.profiling import scoped

attend = scoped("sequence op")(F.scaled_dot_product_attention)  # profiled as bench's sequence op


def rotary(x: torch.Tensor, base: float = 10000.0, offset: int = 0) -> torch.Tensor:
    """Rotate channel pairs of x (B, H, L, Dh) by the angles of positions offset .. offset+L-1."""
    L, Dh = x.shape[-2], x.shape[-1]
    inv_freq = base ** (-torch.arange(0, Dh, 2, device=x.device, dtype=torch.float32) / Dh)
    t = torch.arange(offset, offset + L, device=x.device, dtype=torch.float32)  # (L,)
    angles = t[:, None] * inv_freq  # (L, Dh/2)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]  # (B, H, L, Dh/2) each
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int = 2, rope: bool = True, window: int = 0) -> None:
        super().__init__()
        if d_model % n_heads or (d_model // n_heads) % 2:
            raise ValueError(
                f"d_model ({d_model}) must split into n_heads ({n_heads}) heads of even size"
            )
        self.n_heads, self.rope, self.window = n_heads, rope, window
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, L, D) -> (B, L, D)."""
        B, L, D = x.shape
        qkv = self.qkv(x).view(B, L, 3, self.n_heads, D // self.n_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # (B, H, L, Dh) each
        if self.rope:
            q, k = rotary(q), rotary(k)
        if self.window:
            t = torch.arange(L, device=x.device)
            lag = t[:, None] - t[None, :]  # (L, L): query position - key position
            mask = (lag >= 0) & (lag <= self.window)  # keys s - w .. s
            y = attend(q, k, v, attn_mask=mask)
        else:
            y = attend(q, k, v, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(B, L, D))

    def init_state(self, batch: int, like: torch.Tensor) -> tuple:
        """The KV cache: keys and values so far (B, H, 0, Dh) each, and the position t = 0."""
        d_head = self.out.in_features // self.n_heads
        empty = like.new_zeros(batch, self.n_heads, 0, d_head)
        return empty, empty, 0

    def step(self, x: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        """x (B, D) at position t -> (B, D): attend over the cached keys (the last window + 1)."""
        keys, values, t = state
        B, D = x.shape
        q, k, v = self.qkv(x).view(B, 3, self.n_heads, 1, D // self.n_heads).unbind(1)
        if self.rope:  # (B, H, 1, Dh) each
            q, k = rotary(q, offset=t), rotary(k, offset=t)
        keep = self.window + 1 if self.window else None  # keys t - w .. t
        keys = torch.cat([keys, k], dim=2)[:, :, -keep if keep else 0 :]  # (B, H, <= t+1, Dh)
        values = torch.cat([values, v], dim=2)[:, :, -keep if keep else 0 :]
        y = attend(q, keys, values)  # (B, H, 1, Dh)
        return self.out(y.reshape(B, D)), (keys, values, t + 1)
