"""HGRN2 (Qin et al. 2024): a gated linear RNN with state expansion, following fla
`fla/layers/hgrn2.py` (HGRN2Attention).

H = D / E heads of E = expand_ratio forget channels and E input channels each:

    q = SiLU(W_q x),  f = σ(W_f x),  i = W_i x               (B, L, H·E) each
    f ← γ + (1 - γ) f                                       (lower bound γ, 0: none)
    S_t = diag(f_t) S_{t-1} + (1 - f_t) i_t^T,  o_t = S_t^T q_t / √E   (per head, S (E, E))
    y = W_o RMSNorm(o)

The recurrence is `ops.linear_attention` with k = 1 - f, v = i and log-decay log f (computed in
log space, as fla). fla learns the bounds γ for the whole model at once (a softmax over layers,
cumulated: 0 for the first layer, rising with depth); layers here are built one at a time, so γ is
a fixed option, 0 (fla's first layer) by default. `step` runs one position on the state S.
`chunk` None is the op's default for per-key decays (16, in sub-chunks of 4).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ssmbench.layers.linear_attention import heads
from ssmbench.ops.linear_attention import linear_attention


class HGRN2(nn.Module):
    def __init__(
        self,
        d_model: int,
        expand_ratio: int = 128,
        lower_bound: float = 0.0,
        chunk: int | None = None,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        E = min(expand_ratio, d_model)  # one head at widths below expand_ratio
        if d_model % E:
            raise ValueError(f"d_model ({d_model}) must be a multiple of expand_ratio ({E})")
        if not 0 <= lower_bound < 1:
            raise ValueError(f"lower_bound must be in [0, 1), got {lower_bound}")
        self.n_heads, self.lower_bound, self.chunk, self.norm_eps = (
            d_model // E, lower_bound, chunk, norm_eps)  # fmt: skip
        self.q_proj, self.f_proj, self.i_proj, self.o_proj = (
            nn.Linear(d_model, d_model, bias=False) for _ in range(4))  # fmt: skip
        self.norm_weight = nn.Parameter(torch.ones(d_model))

    def _gates(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x (B, L, D) -> q (scaled), k, v and the log-decay, each (B, H, L, E)."""
        H = self.n_heads
        log_f = F.logsigmoid(self.f_proj(x))  # (B, L, D)
        if self.lower_bound > 0:  # log(γ + (1 - γ) f)
            bound = log_f.new_tensor(math.log(self.lower_bound))
            log_f = torch.logaddexp(bound, math.log1p(-self.lower_bound) + log_f)
        q = heads(F.silu(self.q_proj(x)), H)
        q = q * q.shape[-1] ** -0.5  # fla's default scale
        return q, heads(-torch.expm1(log_f), H), heads(self.i_proj(x), H), heads(log_f, H)

    def _out(self, o: torch.Tensor) -> torch.Tensor:
        """o (B, H, L, E) -> y (B, L, D)."""
        o = o.transpose(1, 2).flatten(2)  # (B, L, D)
        return self.o_proj(F.rms_norm(o, o.shape[-1:], self.norm_weight, eps=self.norm_eps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, L, D) -> (B, L, D)."""
        return self._out(linear_attention(*self._gates(x), chunk=self.chunk))

    def init_state(self, batch: int, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The recurrent state before the first position: S (B, H, E, E)."""
        E = self.q_proj.in_features // self.n_heads
        return (like.new_zeros(batch, self.n_heads, E, E),)

    def step(
        self, x: torch.Tensor, state: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """One position: x (B, D) and the state -> y (B, D) and the next state."""
        q, k, v, log_f = (t[:, :, 0] for t in self._gates(x[:, None]))  # (B, H, E)
        S = log_f.exp()[..., None] * state[0] + k[..., None] * v[..., None, :]  # (B, H, E, E)
        o = torch.einsum("bhk,bhkv->bhv", q, S)  # (B, H, E)
        return self._out(o[:, :, None])[:, 0], (S,)
