"""H3 (Fu et al. 2023, "Hungry Hungry Hippos"), following safari `src/models/sequence/h3.py`.

With heads h of size d (H = D/d heads), for each position:

    q, k, v = W_q u, W_k u, W_v u                          # (D,) each
    k̃ = shift_ssm(k) + D_k ⊙ k                            # per channel: a causal conv of N taps
    (kv)_{h,i,j} = k̃_{h,i} v_{h,j}                         # (H, d, d)
    s = inner_ssm(kv)                                       # one SSM per head, shared by (i, j)
    y_{h,j} = sum_i q_{h,i} s_{h,i,j};   out = W_o y

The shift SSM has A = the N×N shift matrix, B = e_1 and C learned, so its kernel is C itself: a
depthwise causal convolution of N taps. With `trainable_shift_B` (safari's SSKernelShift, which
trains B from e_1) the kernel is the correlation k_j = sum_m B_m C_{m+j}, j < N.

The inner SSM is a parameter: S4D (the paper's H3), S6 (the Mamba paper's Table 1 "H3 + S6") or
a Hyena implicit long convolution (Table 1's "Hyena"); it maps (B', L, H) -> (B', L, H) and
includes its own skip D.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class H3(nn.Module):
    def __init__(
        self,
        d_model: int,
        make_inner: Callable[[int], nn.Module],
        d_state: int = 16,
        head_dim: int = 1,
        trainable_shift_B: bool = False,
    ) -> None:
        super().__init__()
        if d_model % head_dim:
            raise ValueError(f"d_model ({d_model}) must be a multiple of head_dim ({head_dim})")
        self.head_dim, self.n_heads = head_dim, d_model // head_dim
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(d_model, d_model) for _ in range(3))
        self.shift_C = nn.Parameter(torch.randn(d_model, d_state))  # (D, N): the shift kernel
        self.shift_D = nn.Parameter(torch.randn(d_model))  # (D,)
        e_1 = torch.zeros(d_model, d_state).index_fill_(1, torch.tensor([0]), 1.0)  # (D, N)
        self.shift_B = nn.Parameter(e_1) if trainable_shift_B else None
        self.inner = make_inner(self.n_heads)
        self.out_proj = nn.Linear(d_model, d_model)

    def shift_kernel(self) -> torch.Tensor:
        """(D, N): C, or with a trained B, k_j = sum_m B_m C_{m+j}."""
        if self.shift_B is None:
            return self.shift_C
        N = self.shift_C.shape[1]
        C_jm = nn.functional.pad(self.shift_C, (0, N)).unfold(-1, N, 1)[:, :N]  # (D, N, N): C_{j+m}
        return (C_jm * self.shift_B[:, None, :]).sum(-1)  # (D, N)

    def shift(self, k: torch.Tensor) -> torch.Tensor:
        """k (B, L, D) -> sum_{j<N} K[:, j] k_{t-j} + D_k k_t, (B, L, D), K the shift kernel."""
        L, N = k.shape[1], self.shift_C.shape[1]
        weight = self.shift_kernel().flip(-1)[:, None, :]  # (D, 1, N): conv1d correlates, so flip
        y = nn.functional.conv1d(k.mT, weight, padding=N - 1, groups=k.shape[-1])[..., :L]
        return y.mT + self.shift_D * k  # (B, L, D)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u (B, L, D) -> (B, L, D)."""
        B, L, D = u.shape
        H, d = self.n_heads, self.head_dim
        q = self.q_proj(u).view(B, L, H, d)  # (B, L, H, d)
        k = self.shift(self.k_proj(u)).view(B, L, H, d, 1)  # (B, L, H, d, 1)
        v = self.v_proj(u).view(B, L, H, 1, d)  # (B, L, H, 1, d)
        kv = (k * v).permute(0, 3, 4, 1, 2).reshape(B * d * d, L, H)  # (B d d, L, H)
        s = self.inner(kv).view(B, d, d, L, H).permute(0, 3, 4, 1, 2)  # (B, L, H, d, d)
        y = (q[..., None] * s).sum(dim=-2)  # (B, L, H, d): sum over i
        return self.out_proj(y.reshape(B, L, D))

    def init_state(self, batch: int, like: torch.Tensor) -> tuple:
        """The last N keys (B, D, N), newest first, and the inner SSM's state over B·d·d rows."""
        keys = like.new_zeros(batch, *self.shift_C.shape)
        return keys, self.inner.init_state(batch * self.head_dim**2, like)

    def step(self, u: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        """u (B, D) -> (B, D)."""
        B, D = u.shape
        H, d = self.n_heads, self.head_dim
        keys = torch.cat([self.k_proj(u)[..., None], state[0][..., :-1]], dim=-1)  # (B, D, N)
        k = (keys * self.shift_kernel()).sum(-1) + self.shift_D * keys[..., 0]  # (B, D)
        kv = k.view(B, H, d, 1) * self.v_proj(u).view(B, H, 1, d)  # (B, H, d, d)
        s, inner = self.inner.step(kv.permute(0, 2, 3, 1).reshape(B * d * d, H), state[1])
        s = s.view(B, d, d, H).permute(0, 3, 1, 2)  # (B, H, d, d)
        y = (self.q_proj(u).view(B, H, d, 1) * s).sum(dim=-2)  # (B, H, d)
        return self.out_proj(y.reshape(B, D)), (keys, inner)
