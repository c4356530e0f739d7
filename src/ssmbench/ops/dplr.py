"""The diagonal-plus-low-rank (DPLR) linear recurrence: RWKV-7's state transition.

Per batch and head, with queries q_t, keys k_t, low-rank vectors a_t, b_t (K,), values v_t (V,)
and log-decays w_t <= 0 (K,), the state S_t (K, V) and the output o_t (V,) are

    S_t = (diag(exp(w_t)) + b_t a_t^T) S_{t-1} + k_t v_t^T,   S_0 = 0
    o_t = S_t^T q_t

(fla `fla/ops/generalized_delta_rule/dplr/naive.py`, no scaling of q). In RWKV-7's value-by-key
layout the state is S_t^T = S_{t-1}^T (diag(exp(w_t)) + a_t b_t^T) + v_t k_t^T; RWKV-7 takes
a = -κ̂ and b = κ̂ ⊙ α (normalized key κ̂, in-context learning rate α).

`dplr` computes it in chunks of length c. Inside a chunk, with G_t = w_1 + ... + w_t counted from
the chunk's start and the pseudo-values u_t = a_t^T S_{t-1} (V,), each step writes two outer
products, k_t v_t^T and b_t u_t^T, into a gated linear-attention state:

    S_t = diag(e^{G_t}) S_0 + sum_{s<=t} diag(e^{G_t - G_s}) (k_s v_s^T + b_s u_s^T)
    u_t = (a_t ⊙ e^{G_{t-1}})^T S_0 + sum_{s<t} (a_t ⊙ e^{G_{t-1} - G_s})^T (k_s v_s^T + b_s u_s^T)

so (I - A_ab) U = A_ak V + (a ⊙ e^{G_{t-1}}) S_0 with the strictly lower triangular
A_ab[t, s] = sum_k a_tk e^{G_{t-1,k} - G_sk} b_sk (A_ak likewise with k), inverted per chunk by
blocks (`delta_rule.unit_lower_inverse`; the WY/UT form of fla's `chunk_dplr_delta_rule`). Across
chunks a sequential recurrence over the L/c chunk states. `dplr_reference` is the recurrence one
step at a time.

The pair sums A[t, s] = sum_k x_tk y_sk e^{G_tk - G_sk} take per-channel decays: by default from
the differences G_t - G_s <= 0 (never the exp of a positive number), a (c, c, K) tensor per chunk.
With `lower_bound` (the caller's promise that every log-decay is >= it, as fla's `safe_gate`) and
chunk·|lower_bound| <= 40, they are matmuls of x ⊙ e^{G_t} and y ⊙ e^{-G_s} instead: every
exponent lies within ±40, far inside float32's range.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ssmbench.ops.delta_rule import unit_lower_inverse
from ssmbench.ops.linear_attention import _chunks
from ssmbench.ops.profiling import scoped


def _check(*tensors: torch.Tensor) -> None:
    q, k, v, a, b, log_decay = tensors
    keyed = (k, a, b, log_decay)
    if q.dim() != 4 or any(x.shape != q.shape for x in keyed) or v.shape[:-1] != q.shape[:-1]:
        raise ValueError(
            "need q, k, a, b, log_decay (B, H, L, K) and v (B, H, L, V); got "
            + ", ".join(str(tuple(x.shape)) for x in (q, k, v, a, b, log_decay))
        )


def dplr_step(
    S: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    log_decay: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step: S (B, H, K, V), q, k, a, b, log_decay (B, H, K), v (B, H, V) -> o (B, H, V) and
    the next S."""
    u = torch.einsum("bhk,bhkv->bhv", a, S)  # (B, H, V): a^T S_{t-1}
    S = (
        log_decay.exp()[..., None] * S
        + b[..., None] * u[..., None, :]
        + k[..., None] * v[..., None, :]
    )
    return torch.einsum("bhk,bhkv->bhv", q, S), S  # (B, H, V), (B, H, K, V)


def dplr_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    log_decay: torch.Tensor,
) -> torch.Tensor:
    """The recurrence, one step at a time. q, k, a, b, log_decay (B, H, L, K), v (B, H, L, V) ->
    o (B, H, L, V)."""
    _check(q, k, v, a, b, log_decay)
    B, H, _, K = q.shape
    S = q.new_zeros(B, H, K, v.shape[-1])  # (B, H, K, V)
    out = []
    for step in zip(*(x.unbind(2) for x in (q, k, v, a, b, log_decay)), strict=True):
        o, S = dplr_step(S, *step)
        out.append(o)
    return torch.stack(out, dim=2)  # (B, H, L, V)


SAFE_EXPONENT = 40.0  # |G| within a chunk up to which e^{±G} are taken as factors


def _pairs_from_differences(xs: torch.Tensor, ys: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """sum_k x_ik y_jk e^{G_ik - G_jk} for i >= j (0 above), every x and y: xs (..., m, c, K),
    ys (..., n, c, K), G (..., c, K) -> (..., m, n, c_i, c_j). The decays from differences, as a
    (c_j, c_i, K) tensor times x, then per j a matmul (einsum's path is slower on the CPU)."""
    c = G.shape[-2]
    causal = torch.ones(c, c, dtype=torch.bool, device=G.device).triu()[..., None]  # (c_j, c_i, 1)
    decay = (G[..., None, :, :] - G[..., :, None, :]).masked_fill(~causal, -torch.inf).exp()
    xd = xs[..., :, None, :, :] * decay[..., None, :, :, :]  # (..., m, c_j, c_i, K)
    out = xd @ ys.movedim(-3, -1)[..., None, :, :, :]  # (..., m, c_j, c_i, n)
    return out.movedim(-1, -3).transpose(-2, -1)  # (..., m, n, c_i, c_j)


def _pairs_from_factors(xs: torch.Tensor, ys: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """The same as matmuls of x ⊙ e^{G} and y ⊙ e^{-G}, for |G| <= SAFE_EXPONENT."""
    c = G.shape[-2]
    causal = torch.ones(c, c, dtype=torch.bool, device=G.device).tril()  # (c_i, c_j)
    x_in, y_out = xs * G.exp()[..., None, :, :], ys * (-G).exp()[..., None, :, :]
    out = x_in[..., :, None, :, :] @ y_out[..., None, :, :, :].mT  # (..., m, n, c_i, c_j)
    return out.masked_fill(~causal, 0.0)


def _pair_sums(log_decay: torch.Tensor, chunk: int, lower_bound: float | None) -> Callable:
    """The pair sums' form: from differences, or from factors under a valid lower bound."""
    if lower_bound is None:
        return _pairs_from_differences
    if chunk * abs(lower_bound) > SAFE_EXPONENT:
        raise ValueError(
            f"chunk {chunk} with lower_bound {lower_bound} spans decays beyond "
            f"e^-{SAFE_EXPONENT:g}; use a chunk <= {int(SAFE_EXPONENT / abs(lower_bound))}"
        )
    if bool((log_decay < lower_bound).any()):
        raise ValueError(f"a log-decay is below lower_bound {lower_bound}; pass a lower one")
    return _pairs_from_factors


@scoped("sequence op")
def dplr(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    log_decay: torch.Tensor,
    chunk: int = 16,
    lower_bound: float | None = None,
) -> torch.Tensor:
    """The chunked form; the result of dplr_reference. lower_bound: a bound <= 0 on every
    log-decay that the caller guarantees (the pair sums are then matmuls, see the module)."""
    _check(q, k, v, a, b, log_decay)
    pairs_of = _pair_sums(log_decay, chunk, lower_bound)
    L, K, V = q.shape[2], q.shape[3], v.shape[3]
    q, k, v, a, b, w = (_chunks(x, chunk) for x in (q, k, v, a, b, log_decay))  # (B, H, n, c, ·)
    G = w.cumsum(dim=3)  # (B, H, n, c, K): decay from the chunk's start through t
    # a_t meets S_{t-1}, decayed by exp(G_{t-1} - G_s) for s < t: row t - 1 of the decays, so
    # a_{t+1} is paired at row t and the rows shifted down by one (strictly lower triangular)
    a_next = F.pad(a[..., 1:, :], (0, 0, 0, 1))  # (B, H, n, c, K)
    pairs = pairs_of(torch.stack([q, a_next], 3), torch.stack([k, b], 3), G)
    (qk, qb), (ak, ab) = pairs[..., 0, :, :, :].unbind(3), pairs[..., 1, :, :, :].unbind(3)
    ak, ab = (F.pad(x[..., :-1, :], (0, 0, 1, 0)) for x in (ak, ab))  # (B, H, n, c, c)
    rhs = torch.cat([ak @ v, a * (G - w).exp()], dim=-1)  # (B, H, n, c, V + K)
    u_own, u_from_state = (unit_lower_inverse(-ab) @ rhs).split([V, K], dim=-1)  # (I - A)^-1
    last = G[..., -1:, :]  # (B, H, n, 1, K)
    k_end, b_end = k * (last - G).exp(), b * (last - G).exp()  # (B, H, n, c, K): decayed to the end
    q_in = q * G.exp()  # (B, H, n, c, K): queries decayed back to the chunk's start
    S = q.new_zeros(*q.shape[:2], K, V)  # (B, H, K, V)
    out = []
    # over chunks by unbind: each chunk's slices are written once in the backward (see
    # linear_attention)
    chunks = (x.unbind(2) for x in (qk, qb, v, u_own, u_from_state, q_in, last, k_end, b_end))
    for qk_i, qb_i, v_i, own_i, from_i, q_i, last_i, k_i, b_i in zip(*chunks, strict=True):
        u = own_i + from_i @ S  # (B, H, c, V): the chunk's pseudo-values
        out.append(qk_i @ v_i + qb_i @ u + q_i @ S)  # (B, H, c, V)
        S = last_i[:, :, 0, :, None].exp() * S + k_i.mT @ v_i + b_i.mT @ u  # (B, H, K, V)
    return torch.stack(out, dim=2).flatten(2, 3)[:, :, :L]  # (B, H, L, V)
