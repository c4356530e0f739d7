"""Mamba-3's recurrence (Lahoti et al., ICLR 2026): a trapezoidal discretization of a
scalar-decay SSM whose queries and keys turn by a data-dependent rotation, SISO or MIMO.

Per batch and head, with R ranks of queries q_{t,r} and keys k_{t,r} (N,) already rotated and
values v_{t,r} (P,) (SISO: R = 1), the log-decay a_t = Δ_t A_t <= 0, the step Δ_t > 0 and the
trapezoid weight λ_t in [0, 1]:

    α_t = exp(a_t),   W_t = Σ_r k_{t,r} v_{t,r}^T                    (a rank-R write; N × P)
    S_t = α_t S_{t-1} + (1 - λ_t) Δ_t α_t W_{t-1} + λ_t Δ_t W_t,   W_{-1} = 0
    o_{t,r} = S_t^T q_{t,r}                                        (S_t is N × P)

λ = 1 is the Euler step of Mamba-2; λ = 1/2 the trapezoid rule, averaging the input at both ends
of the interval. MIMO (R > 1) writes R outer products per step into the same N × P state, and
every rank's query reads the state after all of them. The state carried between positions is
(S, k_{t-1}, v_{t-1}) — the form of mamba_ssm's `mamba3_siso_step_ref`
(tests/ops/triton/test_mamba3_siso.py) and `mamba3_MIMO_step_ref`
(tests/ops/tilelang/test_mamba3_mimo.py), which `mamba3_mimo_reference` follows step by step.

`mamba3_mimo` is the parallel form, as `mamba3_siso_fwd_ref` and `mamba3_MIMO_chunk_ref`
compute it: the pair (k_{s,r}, v_{s,r}) enters every S_t, t >= s, with weight exp(b_t - b_s)
(λ_s Δ_s + (1 - λ_{s+1}) Δ_{s+1}), b the cumulative log-decay — one chunked linear attention
over the L·R (position, rank) pairs, keys scaled by that weight, the decay at each position's
first rank — and two corrections inside each position (an R × R block): a query also reads the
ranks after its own, which the causal order of the pairs leaves out (+ w_t (q_{t,r} · k_{t,r'})
v_{t,r'} for r' > r, w_t the key weight), and the position's own write carries λ_t Δ_t only (the
surplus (1 - λ_{t+1}) Δ_{t+1} (q_{t,r} · k_{t,r'}) v_{t,r'} is subtracted for every r').
`mamba3_siso` and its reference are the R = 1 case.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ssmbench.ops.linear_attention import linear_attention
from ssmbench.ops.profiling import scoped


def _check(q, k, v, log_decay, dt, trap, ranks: bool) -> None:
    axes = "(B, H, L, R, ·)" if ranks else "(B, H, L, ·)"
    if q.dim() != 4 + ranks or q.shape != k.shape or q.shape[:-1] != v.shape[:-1]:
        raise ValueError(
            f"need q, k {axes.replace('·', 'N')} and v {axes.replace('·', 'P')}; got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    for name, x in (("log_decay", log_decay), ("dt", dt), ("trap", trap)):
        if x.shape != q.shape[:3]:
            raise ValueError(f"{name} must be (B, H, L) = {tuple(q.shape[:3])}, got {x.shape}")


def rotate_pairs(x: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """Turn the pairs (x_0, x_1), (x_2, x_3), ... of x (..., N) by the angles phase (..., R),
    R <= N / 2; the last N - 2R channels stay as they are (Mamba-3's partial rotary, SISO)."""
    R = phase.shape[-1]
    pairs = x[..., : 2 * R].unflatten(-1, (R, 2))  # (..., R, 2)
    x0, x1 = pairs.unbind(-1)  # (..., R) each
    cos, sin = phase.cos(), phase.sin()
    turned = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)
    return torch.cat((turned, x[..., 2 * R :]), dim=-1)  # (..., N)


def rotate_halves(x: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """Turn the pairs (x_i, x_{i + N/2}), i < R, of x (..., N), N even, by the angles phase
    (..., R), R <= N / 2; the other channels stay (the MIMO kernels' rotary convention)."""
    R, half = phase.shape[-1], x.shape[-1] // 2
    first, second = x.split(half, dim=-1)  # (..., N/2) each
    x0, x1 = first[..., :R], second[..., :R]  # (..., R) each
    cos, sin = phase.cos(), phase.sin()
    return torch.cat((x0 * cos - x1 * sin, first[..., R:], x0 * sin + x1 * cos, second[..., R:]),
                     dim=-1)  # fmt: skip


def cumulative_phase(angles: torch.Tensor, dt: torch.Tensor, start=None) -> torch.Tensor:
    """φ_t = (φ_{-1} + Σ_{s<=t} π tanh(θ_s) Δ_s) mod 2π: the rotation of position t.
    angles (B, L, R) shared by the heads, dt (B, H, L), start (B, H, R) or None -> (B, H, L, R)."""
    step = torch.pi * angles.tanh()[:, None] * dt[..., None]  # (B, H, L, R)
    phase = step.cumsum(dim=2) + (0 if start is None else start[:, :, None])
    return phase - 2 * math.pi * torch.floor(phase / (2 * math.pi))


def mamba3_mimo_step(
    state: tuple, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    log_decay: torch.Tensor, dt: torch.Tensor, trap: torch.Tensor,
) -> tuple[torch.Tensor, tuple]:  # fmt: skip
    """One position: state (S (B, H, N, P), k_prev (B, H, R, N), v_prev (B, H, R, P)), q, k
    (B, H, R, N), v (B, H, R, P), log_decay, dt, trap (B, H) -> o (B, H, R, P), the next state."""
    S, k_prev, v_prev = state
    alpha = log_decay.exp()[..., None, None]  # (B, H, 1, 1)
    back = ((1 - trap) * dt)[..., None, None]  # weight of the interval's start
    now = (trap * dt)[..., None, None]  # and of its end
    S = alpha * (S + back * k_prev.mT @ v_prev)  # (B, H, N, P): + the last step's W
    S = S + now * k.mT @ v  # W_t = Σ_r k_r v_r^T
    return q @ S, (S, k, v)  # (B, H, R, P)


def mamba3_mimo_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    log_decay: torch.Tensor, dt: torch.Tensor, trap: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    """The recurrence, one step at a time. q, k (B, H, L, R, N), v (B, H, L, R, P), log_decay,
    dt, trap (B, H, L) -> o (B, H, L, R, P)."""
    _check(q, k, v, log_decay, dt, trap, ranks=True)
    B, H, L, R, N = q.shape
    P = v.shape[-1]
    state = (q.new_zeros(B, H, N, P), q.new_zeros(B, H, R, N), q.new_zeros(B, H, R, P))
    out = []
    for args in zip(*(x.unbind(2) for x in (q, k, v, log_decay, dt, trap)), strict=True):
        o_t, state = mamba3_mimo_step(state, *args)
        out.append(o_t)  # (B, H, R, P)
    return torch.stack(out, dim=2)  # (B, H, L, R, P)


@scoped("sequence op")
def mamba3_mimo(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    log_decay: torch.Tensor, dt: torch.Tensor, trap: torch.Tensor, chunk: int = 64,
) -> torch.Tensor:  # fmt: skip
    """The parallel form (module docstring); same signature and result as mamba3_mimo_reference.
    chunk counts (position, rank) pairs: chunk / R positions (upstream's advice for MIMO)."""
    _check(q, k, v, log_decay, dt, trap, ranks=True)
    R = q.shape[3]
    surplus = F.pad((1 - trap) * dt, (0, 1))[..., 1:]  # (B, H, L): (1 - λ_{s+1}) Δ_{s+1}, 0 at L
    weight = trap * dt + surplus  # (B, H, L)
    first = F.pad(log_decay[..., None], (0, R - 1))  # (B, H, L, R): the decay at rank 0 only
    pairs = (x.flatten(2, 3) for x in (q, k * weight[..., None, None], v))  # (B, H, L·R, ·)
    o = linear_attention(*pairs, first.flatten(2)[..., None], chunk=chunk)  # (B, H, L·R, P)
    later = torch.ones(R, R, dtype=torch.bool, device=q.device).triu(1)  # r' > r
    block = (q @ k.mT) * (weight[..., None, None] * later - surplus[..., None, None])  # (…, R, R)
    return o.unflatten(2, (-1, R)) + block @ v  # (B, H, L, R, P)


def mamba3_siso_reference(q, k, v, log_decay, dt, trap) -> torch.Tensor:
    """mamba3_mimo_reference at R = 1: q, k (B, H, L, N), v (B, H, L, P), log_decay, dt, trap
    (B, H, L) -> o (B, H, L, P)."""
    _check(q, k, v, log_decay, dt, trap, ranks=False)
    ranked = (x[:, :, :, None] for x in (q, k, v))
    return mamba3_mimo_reference(*ranked, log_decay, dt, trap)[:, :, :, 0]


def mamba3_siso(q, k, v, log_decay, dt, trap, chunk: int = 64) -> torch.Tensor:
    """mamba3_mimo at R = 1; same signature and result as mamba3_siso_reference."""
    _check(q, k, v, log_decay, dt, trap, ranks=False)
    ranked = (x[:, :, :, None] for x in (q, k, v))
    return mamba3_mimo(*ranked, log_decay, dt, trap, chunk=chunk)[:, :, :, 0]
