"""Mamba-3's SISO recurrence (Lahoti et al., ICLR 2026): a trapezoidal discretization of a
scalar-decay SSM whose queries and keys turn by a data-dependent rotation.

Per batch and head, with queries q_t and keys k_t (N,) already rotated, values v_t (P,), the
log-decay a_t = Δ_t A_t <= 0, the step Δ_t > 0 and the trapezoid weight λ_t in [0, 1]:

    α_t = exp(a_t)
    S_t = α_t S_{t-1} + (1 - λ_t) Δ_t α_t k_{t-1} v_{t-1}^T + λ_t Δ_t k_t v_t^T,   S_{-1} = 0
    o_t = S_t^T q_t                                                     (S_t is N × P)

λ = 1 is the Euler step of Mamba-2; λ = 1/2 the trapezoid rule, averaging the input at both ends
of the interval. The state carried between positions is (S, k_{t-1}, v_{t-1}) — the form of
mamba_ssm's `mamba3_siso_step_ref` (tests/ops/triton/test_mamba3_siso.py), which
`mamba3_siso_reference` follows step by step.

`mamba3_siso` is the parallel form, as `mamba3_siso_fwd_ref` and the fused kernels compute it: the
pair (k_s, v_s) enters every S_t, t >= s, with weight exp(b_t - b_s) (λ_s Δ_s + (1 - λ_{s+1})
Δ_{s+1}), b the cumulative log-decay — one chunked linear attention with keys scaled by that
weight — except at t = s, where only λ_s Δ_s belongs: the diagonal's surplus (1 - λ_{s+1}) Δ_{s+1}
(q_s · k_s) v_s is subtracted.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ssmbench.ops.linear_attention import linear_attention
from ssmbench.ops.profiling import scoped


def _check(q, k, v, log_decay, dt, trap) -> None:
    if q.dim() != 4 or q.shape != k.shape or q.shape[:-1] != v.shape[:-1]:
        raise ValueError(
            f"need q, k (B, H, L, N) and v (B, H, L, P); got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    for name, x in (("log_decay", log_decay), ("dt", dt), ("trap", trap)):
        if x.shape != q.shape[:-1]:
            raise ValueError(f"{name} must be (B, H, L) = {tuple(q.shape[:-1])}, got {x.shape}")


def rotate_pairs(x: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """Turn the pairs (x_0, x_1), (x_2, x_3), ... of x (..., N) by the angles phase (..., R),
    R <= N / 2; the last N - 2R channels stay as they are (Mamba-3's partial rotary)."""
    R = phase.shape[-1]
    pairs = x[..., : 2 * R].unflatten(-1, (R, 2))  # (..., R, 2)
    x0, x1 = pairs.unbind(-1)  # (..., R) each
    cos, sin = phase.cos(), phase.sin()
    turned = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)
    return torch.cat((turned, x[..., 2 * R :]), dim=-1)  # (..., N)


def cumulative_phase(angles: torch.Tensor, dt: torch.Tensor, start=None) -> torch.Tensor:
    """φ_t = (φ_{-1} + Σ_{s<=t} π tanh(θ_s) Δ_s) mod 2π: the rotation of position t.
    angles (B, L, R) shared by the heads, dt (B, H, L), start (B, H, R) or None -> (B, H, L, R)."""
    step = torch.pi * angles.tanh()[:, None] * dt[..., None]  # (B, H, L, R)
    phase = step.cumsum(dim=2) + (0 if start is None else start[:, :, None])
    return phase - 2 * math.pi * torch.floor(phase / (2 * math.pi))


def mamba3_siso_step(
    state: tuple, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    log_decay: torch.Tensor, dt: torch.Tensor, trap: torch.Tensor,
) -> tuple[torch.Tensor, tuple]:  # fmt: skip
    """One position: state (S (B, H, N, P), k_prev (B, H, N), v_prev (B, H, P)), q, k (B, H, N),
    v (B, H, P), log_decay, dt, trap (B, H) -> o (B, H, P) and the next state."""
    S, k_prev, v_prev = state
    alpha = log_decay.exp()[..., None, None]  # (B, H, 1, 1)
    back = ((1 - trap) * dt)[..., None, None]  # weight of the interval's start
    now = (trap * dt)[..., None, None]  # and of its end
    S = alpha * (S + back * k_prev[..., None] * v_prev[..., None, :])  # (B, H, N, P)
    S = S + now * k[..., None] * v[..., None, :]
    return torch.einsum("bhn,bhnp->bhp", q, S), (S, k, v)


def mamba3_siso_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    log_decay: torch.Tensor, dt: torch.Tensor, trap: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    """The recurrence, one step at a time. q, k (B, H, L, N), v (B, H, L, P), log_decay, dt,
    trap (B, H, L) -> o (B, H, L, P)."""
    _check(q, k, v, log_decay, dt, trap)
    B, H, L, N = q.shape
    P = v.shape[-1]
    state = (q.new_zeros(B, H, N, P), q.new_zeros(B, H, N), q.new_zeros(B, H, P))
    out = []
    for t in range(L):
        args = (x[:, :, t] for x in (q, k, v, log_decay, dt, trap))
        o_t, state = mamba3_siso_step(state, *args)
        out.append(o_t)  # (B, H, P)
    return torch.stack(out, dim=2)  # (B, H, L, P)


@scoped("sequence op")
def mamba3_siso(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    log_decay: torch.Tensor, dt: torch.Tensor, trap: torch.Tensor, chunk: int = 64,
) -> torch.Tensor:  # fmt: skip
    """The parallel form (chunked linear attention); same signature and result as
    mamba3_siso_reference."""
    _check(q, k, v, log_decay, dt, trap)
    surplus = F.pad((1 - trap) * dt, (0, 1))[..., 1:]  # (B, H, L): (1 - λ_{s+1}) Δ_{s+1}, 0 at L
    weight = trap * dt + surplus  # (B, H, L)
    o = linear_attention(q, k * weight[..., None], v, log_decay[..., None], chunk=chunk)
    diagonal = (q * k).sum(-1) * surplus  # (B, H, L)
    return o - diagonal[..., None] * v  # (B, H, L, P)
