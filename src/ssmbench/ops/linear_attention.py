"""Gated linear attention: the recurrence behind GLA, RetNet, Based's linear attention and Mamba-2.

Per batch and head, with queries q_t, keys k_t (K,), values v_t (V,) and log-decays a_t <= 0 (K,,
or a scalar broadcast over K), the state S_t (K, V) and output o_t (V,) are

    S_t = diag(exp(a_t)) S_{t-1} + k_t v_t^T,   S_{-1} = 0
    o_t = S_t^T q_t = sum_{s<=t} (q_t ⊙ exp(b_t - b_s)) · k_s  v_s,   b_t = a_0 + ... + a_t.

GLA (Yang et al. 2024) learns a_t per key channel; RetNet (Sun et al. 2023) fixes a scalar per
head; Mamba-2's SSD (Dao & Gu 2024) is the scalar case with q = C, k = B, v = Δ·x, a = Δ·A.

`linear_attention` computes it in chunks of length c (the chunked form of mamba_ssm's
`ssd_minimal.py` and fla's `chunk_gla`): inside a chunk the quadratic form with the decays
exp(b_i - b_j), j <= i, taken from differences (never exp of a positive number); across chunks a
sequential recurrence over L/c chunk states. `linear_attention_reference` is the plain recurrence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssmbench.ops.profiling import scoped


def _check(q, k, v, log_decay) -> None:
    if q.shape != k.shape or q.shape[:-1] != v.shape[:-1] or q.dim() != 4:
        raise ValueError(
            f"need q, k (B, H, L, K) and v (B, H, L, V); got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    if log_decay.shape[:-1] != q.shape[:-1] or log_decay.shape[-1] not in (1, q.shape[-1]):
        raise ValueError(
            f"log_decay must be (B, H, L, K) or (B, H, L, 1), got {tuple(log_decay.shape)}"
        )


def linear_attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor
) -> torch.Tensor:
    """The recurrence, one step at a time. q, k (B, H, L, K), v (B, H, L, V), log_decay
    (B, H, L, K) or (B, H, L, 1) -> o (B, H, L, V)."""
    _check(q, k, v, log_decay)
    B, H, L, K = q.shape
    S = q.new_zeros(B, H, K, v.shape[-1])  # (B, H, K, V)
    out = []
    for q_t, k_t, v_t, a_t in zip(*(x.unbind(2) for x in (q, k, v, log_decay)), strict=True):
        o_t, S = linear_attention_step(S, q_t, k_t, v_t, a_t)
        out.append(o_t)  # (B, H, V)
    return torch.stack(out, dim=2)  # (B, H, L, V)


def linear_attention_step(
    S: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One position: state S (B, H, K, V), q, k (B, H, K), v (B, H, V), log_decay (B, H, K) or
    (B, H, 1) -> o (B, H, V) and the next state (recurrent decoding runs this)."""
    S = log_decay[..., None].exp() * S + k[..., None] * v[..., None, :]  # (B, H, K, V)
    return torch.einsum("bhk,bhkv->bhv", q, S), S


def _chunks(x: torch.Tensor, c: int) -> torch.Tensor:
    """(B, H, L, X) -> (B, H, n, c, X), zero-padded at the end to n·c positions."""
    L = x.shape[2]
    x = F.pad(x, (0, 0, 0, -L % c))
    return x.unflatten(2, (x.shape[2] // c, c))


def scalar_decays(g: torch.Tensor) -> torch.Tensor:
    """Cumulative scalar log-decays g (..., c, 1) -> G_tj = exp(g_t - g_j) for j <= t, 0 above
    (..., c, c)."""
    c = g.shape[-2]
    causal = torch.ones(c, c, dtype=torch.bool, device=g.device).tril()  # (c, c)
    return (g - g.mT).masked_fill(~causal, -torch.inf).exp()  # never exp of a positive number


def decayed_scores_reference(x: torch.Tensor, y: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """M_tj = Σ_d x_td y_jd exp(g_td - g_jd) for j <= t, 0 above, from the (c, c, K) differences.
    x, y, g (..., c, K) (leading dims broadcast), g non-increasing along c -> (..., c, c)."""
    c = g.shape[-2]
    causal = torch.ones(c, c, dtype=torch.bool, device=g.device).tril()  # (c, c)
    diff = g[..., :, None, :] - g[..., None, :, :]  # (..., c, c, K), <= 0 where j <= t
    G = diff.masked_fill(~causal[..., None], -torch.inf).exp()  # never exp of a positive number
    return (x[..., :, None, :] * y[..., None, :, :] * G).sum(-1)  # (..., c, c)


def decayed_scores(x: torch.Tensor, y: torch.Tensor, g: torch.Tensor, sub: int = 4) -> torch.Tensor:
    """decayed_scores_reference by fla's secondary chunking: positions in sub-chunks of s = sub.
    Across sub-chunks, with r the first position of t's sub-chunk and j < r, exp(g_t - g_j) =
    exp(g_t - g_r) exp(g_r - g_j), both factors <= 1, so M is a matrix product of x ⊙ exp(g - g_r)
    and y ⊙ exp(g_r - g); only the (s, s, K) differences of each diagonal block are materialized
    ((m + s)·K per position instead of c·K, m = c / s the number of sub-chunks)."""
    c, K = g.shape[-2:]
    s = min(sub, c)
    m, pad = -(-c // s), -c % s
    x, y = (F.pad(z, (0, 0, 0, pad)) for z in (x, y))  # (..., C, K), C = m·s, zero-padded
    g = torch.cat([g, g[..., -1:, :].expand(*g.shape[:-2], pad, K)], dim=-2)  # (..., C, K)
    xs, ys, gs = (z.unflatten(-2, (m, s)) for z in (x, y, g))  # (..., m, s, K)
    ref = gs[..., :1, :]  # (..., m, 1, K): g at each sub-chunk's first position
    earlier = torch.arange(m * s, device=g.device) < s * torch.arange(m, device=g.device)[:, None]
    to_ref = (ref - g[..., None, :, :]).masked_fill(~earlier[..., None], -torch.inf)
    keys = y[..., None, :, :] * to_ref.exp()  # (..., m, C, K): y_j exp(g_r - g_j), j < r
    across = (xs * (gs - ref).exp()) @ keys.mT  # (..., m, s, C)
    inside = decayed_scores_reference(xs, ys, gs)  # (..., m, s, s): the diagonal blocks
    eye = torch.eye(m, dtype=g.dtype, device=g.device)[:, None, :, None]  # (m, 1, m, 1)
    M = across.unflatten(-1, (m, s)) + inside[..., None, :] * eye  # (..., m, s, m, s)
    return M.flatten(-4, -3).flatten(-2, -1)[..., :c, :c]  # (..., c, c)


# positions per chunk: a scalar decay takes (c, c) differences and matrix products; per-key decays
# sub-chunks of 4 inside, fastest at 16 (of 16-64, forward and backward, L 512-2048, 2 CPU cores)
CHUNK, PER_KEY_CHUNK = 32, 16


@scoped("sequence op")
def linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    chunk: int | None = None,
) -> torch.Tensor:
    """The chunked form; same arguments and result as linear_attention_reference. chunk: positions
    per chunk (None: CHUNK for a scalar decay, PER_KEY_CHUNK for per-key decays)."""
    _check(q, k, v, log_decay)
    chunk = chunk or (PER_KEY_CHUNK if log_decay.shape[-1] > 1 else CHUNK)
    L = q.shape[2]
    q, k, v, a = (_chunks(x, chunk) for x in (q, k, v, log_decay))  # (B, H, n, c, ·)
    b = a.cumsum(dim=3)  # (B, H, n, c, K|1), decay from the chunk's start through i
    # scores (B, H, n, c, c): a scalar decay per head (q k^T) ⊙ exp(b_i - b_j), else per key
    scores = (q @ k.mT) * scalar_decays(b) if a.shape[-1] == 1 else decayed_scores(q, k, b)
    out = scores @ v  # (B, H, n, c, V): the part from inside each chunk
    last = b[..., -1:, :]  # (B, H, n, 1, K|1)
    states = (k * (last - b).exp()).mT @ v  # (B, H, n, K, V): each chunk's own contribution
    q_in = q * b.exp()  # (B, H, n, c, K): queries decayed back to the chunk's start
    S = q.new_zeros(*q.shape[:2], q.shape[-1], v.shape[-1])  # (B, H, K, V)
    # over chunks by unbind, not x[:, :, i]: the backward of each index op writes a zero tensor
    # the size of the whole input (quadratic in the chunks); unbind's writes each slice once
    inter = []
    for q_i, last_i, state_i in zip(q_in.unbind(2), last.unbind(2), states.unbind(2), strict=True):
        inter.append(q_i @ S)  # (B, H, c, V): the part from earlier chunks
        S = last_i[:, :, 0, :, None].exp() * S + state_i  # (B, H, K, V)
    out = out + torch.stack(inter, dim=2)
    return out.flatten(2, 3)[:, :, :L]  # (B, H, L, V)


def signed_transition(
    dA: torch.Tensor, negative_eigenvalues: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """ΔA -> (log|a|, sign a) of a scalar transition a = exp(ΔA), or with negative_eigenvalues
    a = 2 exp(ΔA) - 1 = 1 + 2 expm1(ΔA) in (-1, 1) (Grazzi et al. 2025; |a| floored at the
    dtype's tiniest normal number). A product of signed transitions over (j, t] is
    exp(b_t - b_j) s_t s_j, b the cumulative log|a| and s_t = Π_{r<=t} sign a_r = ±1: the chunked
    form runs unchanged on log|a| with queries and keys times s."""
    if not negative_eigenvalues:
        return dA, torch.ones_like(dA)
    a = 1 + 2 * torch.expm1(dA)
    tiny = torch.finfo(a.dtype).tiny
    log_abs = torch.where(a > 0, torch.log1p(2 * torch.expm1(dA)), torch.log((-a).clamp(min=tiny)))
    return log_abs, torch.where(a < 0, -1.0, 1.0).to(a.dtype)
