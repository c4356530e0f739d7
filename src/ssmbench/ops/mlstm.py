"""The mLSTM cell (Beck et al. 2024, xLSTM §2.3): a matrix memory with exponential input gates,
as NX-AI/xlstm `xlstm/blocks/mlstm/backends.py`.

Per batch and head, with queries q_t, keys k_t (K,), values v_t (V,) and the input and forget gate
pre-activations ĩ_t, f̃_t (scalars), i_t = exp(ĩ_t), f_t = σ(f̃_t):

    C_t = f_t C_{t-1} + i_t k_t v_t^T / √K,   n_t = f_t n_{t-1} + i_t k_t / √K,   C_0, n_0 = 0
    h_t = C_t^T q_t / max(|n_t · q_t|, 1)

exp(ĩ) overflows, so both forms keep C and n scaled by e^{-m_t}, with the stabilizer

    m_t = max(log f_t + m_{t-1}, ĩ_t),  m_0 = -∞,   i.e.  m_t = max_{s<=t} (ĩ_s + F_t - F_s)
    h_t = C'_t^T q_t / (max(|n'_t · q_t|, e^{-m_t}) + ε),   ε = 1e-6,  F_t = log f_1 + ... + log f_t

(the result does not depend on m except through ε, which sits in e^{-m}-scaled units).

`mlstm` is upstream's parallel stabilized form (`parallel_stabilized_simple`, quadratic in L):
h = (C̃ / (max(|C̃ 1|, e^{-m}) + ε)) V with C̃_ts = (q_t · k_s / √K) exp(ĩ_s + F_t - F_s - m_t) for
s <= t, m_t its row maximum in log space. `mlstm_reference` is the recurrence one step at a time
(upstream's `recurrent_step_stabilized_simple`, started at m_0 = -∞ where upstream starts at 0: its
m_t is then the parallel form's row maximum and the two agree to rounding; from m_0 = 0 they
differ where ε matters, by up to ~1e-6 relative).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ssmbench.ops.profiling import scoped

EPS = 1e-6  # upstream's eps in the denominator

State = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # C (B, H, K, V), n (B, H, K), m (B, H)


def _check(*tensors: torch.Tensor) -> None:
    q, k, v, i_pre, f_pre = tensors
    gates_ok = i_pre.shape == q.shape[:-1] and f_pre.shape == q.shape[:-1]
    if q.dim() != 4 or k.shape != q.shape or v.shape[:-1] != q.shape[:-1] or not gates_ok:
        raise ValueError(
            "need q, k (B, H, L, K), v (B, H, L, V) and gates (B, H, L); got "
            + ", ".join(str(tuple(x.shape)) for x in (q, k, v, i_pre, f_pre))
        )


def mlstm_initial_state(B: int, H: int, K: int, V: int, like: torch.Tensor) -> State:
    """C = 0, n = 0 and m = -∞ (the first step's stabilizer is then ĩ_1)."""
    return (
        like.new_zeros(B, H, K, V),
        like.new_zeros(B, H, K),
        like.new_full((B, H), -torch.inf),
    )


def mlstm_step(
    state: State,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    i_pre: torch.Tensor,
    f_pre: torch.Tensor,
    eps: float = EPS,
) -> tuple[torch.Tensor, State]:
    """One step: q, k (B, H, K), v (B, H, V), i_pre, f_pre (B, H) -> h (B, H, V), next state."""
    C, n, m = state
    log_f = F.logsigmoid(f_pre)  # (B, H)
    m_new = torch.maximum(log_f + m, i_pre)  # (B, H)
    f = torch.exp(log_f + m - m_new)[..., None]  # (B, H, 1)
    i = torch.exp(i_pre - m_new)[..., None]  # (B, H, 1)
    k = k / math.sqrt(k.shape[-1])
    C = f[..., None] * C + (i * k)[..., None] * v[..., None, :]  # (B, H, K, V)
    n = f * n + i * k  # (B, H, K)
    numerator = torch.einsum("bhk,bhkv->bhv", q, C)  # (B, H, V)
    qn = (q * n).sum(-1, keepdim=True).abs()  # (B, H, 1)
    return numerator / (torch.maximum(qn, torch.exp(-m_new)[..., None]) + eps), (C, n, m_new)


def mlstm_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    i_pre: torch.Tensor,
    f_pre: torch.Tensor,
    eps: float = EPS,
) -> torch.Tensor:
    """The recurrence, one step at a time. q, k (B, H, L, K), v (B, H, L, V), i_pre, f_pre
    (B, H, L) -> h (B, H, L, V)."""
    _check(q, k, v, i_pre, f_pre)
    B, H, _, K = q.shape
    state = mlstm_initial_state(B, H, K, v.shape[-1], q)
    out = []
    for step in zip(*(x.unbind(2) for x in (q, k, v, i_pre, f_pre)), strict=True):
        h, state = mlstm_step(state, *step, eps=eps)
        out.append(h)
    return torch.stack(out, dim=2)  # (B, H, L, V)


@scoped("sequence op")
def mlstm(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    i_pre: torch.Tensor,
    f_pre: torch.Tensor,
    eps: float = EPS,
) -> torch.Tensor:
    """The parallel stabilized form; same signature and result as mlstm_reference."""
    _check(q, k, v, i_pre, f_pre)
    L = q.shape[2]
    F_cum = F.logsigmoid(f_pre).cumsum(dim=-1)  # (B, H, L)
    causal = torch.ones(L, L, dtype=torch.bool, device=q.device).tril()  # (L, L)
    log_D = F_cum[..., :, None] - F_cum[..., None, :] + i_pre[..., None, :]  # (B, H, L, L)
    log_D = log_D.masked_fill(~causal, -torch.inf)
    m = log_D.amax(dim=-1, keepdim=True)  # (B, H, L, 1): the stabilizer m_t
    scores = (q @ k.mT) / math.sqrt(q.shape[-1]) * (log_D - m).exp()  # (B, H, L, L)
    normalizer = torch.maximum(scores.sum(-1, keepdim=True).abs(), torch.exp(-m))  # (B, H, L, 1)
    return (scores / (normalizer + eps)) @ v  # (B, H, L, V)
