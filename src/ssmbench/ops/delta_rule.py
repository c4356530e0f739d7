"""The generalized delta rule: DeltaNet, Gated DeltaNet, KDA, Gated DeltaNet-2 and DeltaProduct.

Per batch and head, with queries q_t, keys k_t (K,), values v_t (V,), an erase gate b_t (a scalar
or (K,)), a write gate w_t (V,) (by default w_t = b_t, a scalar) and log-decays a_t <= 0 (none,
a scalar, or (K,)), the state S_t (K, V) and the output o_t (V,) are, from S_0 = 0,

    S_t = diag(exp(a_t)) S_{t-1}
    S_t <- S_t + k_t (w_t ⊙ v_t - S_t^T (b_t ⊙ k_t))^T,   o_t = S_t^T q_t.

With scalar b = w = β_t and scalar a_t this is Gated DeltaNet (Yang, Kautz & Hatamizadeh 2025),
S_t = α_t (I - β_t k_t k_t^T) S_{t-1} + β_t k_t v_t^T; without a decay DeltaNet (Yang et al.
2024); a per-channel a_t is KDA (Kimi Linear, 2025); per-channel b_t and w_t are GDN-2 (fla
`fla/ops/gdn2`). No scaling or normalization happens here (the layers scale and L2-normalize).

`delta_rule` is the chunked WY (UT-transform) form of fla's `chunk_*` kernels. Inside a chunk of
c positions, with γ_t = a_1 + ... + a_t (the decay since the chunk's start S_0) and the new values
u_t = w_t ⊙ v_t - S_t'^T (b_t ⊙ k_t) (S_t' the decayed state before the write),

    u_t + sum_{j<t} A_tj u_j = w_t ⊙ v_t - S_0^T (exp(γ_t) ⊙ b_t ⊙ k_t),
    A_tj = sum_d b_td k_td k_jd exp(γ_td - γ_jd),

a unit lower-triangular system (I + A) U = W ⊙ V - (exp(γ) ⊙ B ⊙ K) S_0, solved once per chunk
for both right-hand sides (`unit_lower_inverse`, batched over every chunk): U = U_0 - W_k S_0.
Then, with P_tj = sum_d q_td k_jd exp(γ_td - γ_jd) for j <= t,

    O = P U_0 + (exp(γ) ⊙ Q - P W_k) S_0,   S_c = diag(exp(γ_c)) S_0 + (exp(γ_c - γ) ⊙ K)^T U:

all but the S_0 terms for every chunk at once, then one pass over the chunks for the states.
Every decay is exp of a difference γ_t - γ_j with j <= t (never exp of a positive number); a
per-channel decay takes P and A by fla's secondary chunking (`decayed_scores`: matrix products
across sub-chunks, (s, s, K) differences inside them), a scalar one the (c, c) differences and
matrix products.
`delta_rule_reference` is the recurrence, one `delta_rule_step` at a time.

DeltaProduct (Siems et al. 2025) takes n_h Householder steps per token: keys k_{t,1..n_h}, values
and betas each, the decay once before the first; `delta_product` runs them as n_h sub-steps of
the delta rule (`householder_substeps`) and reads the output after the last.

On CUDA tensors, when fla imports, `delta_rule` runs fla's chunked Triton kernel for its gates
instead (`FLA_KERNELS`: chunk_delta_rule, chunk_gated_delta_rule, chunk_kda or chunk_gdn2, in
fla's (B, T, H, ·) layout, scale 1 as the layers have scaled q; fla's own chunk length);
`delta_rule_backend(device)` says which runs. DeltaProduct then runs its sub-steps on the
same kernels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssmbench.ops.linear_attention import _chunks, decayed_scores, scalar_decays
from ssmbench.ops.optional import on_kernel_device, optional_kernel
from ssmbench.ops.profiling import scoped

# fla's chunked kernels, by the gates of a call (`fla_kernel`): module, function
FLA_KERNELS = {
    "delta_rule": ("fla.ops.delta_rule", "chunk_delta_rule"),
    "gated_delta_rule": ("fla.ops.gated_delta_rule", "chunk_gated_delta_rule"),
    "kda": ("fla.ops.kda", "chunk_kda"),
    "gdn2": ("fla.ops.gdn2", "chunk_gdn2"),
}


def _check(q, k, v, beta, log_decay, write) -> None:
    if q.dim() != 4 or q.shape != k.shape or v.dim() != 4 or q.shape[:-1] != v.shape[:-1]:
        raise ValueError(
            f"need q, k (B, H, L, K) and v (B, H, L, V); got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    per_channel = tuple(q.shape)
    if tuple(beta.shape) not in (per_channel[:-1], per_channel):
        raise ValueError(f"beta must be (B, H, L) or (B, H, L, K), got {tuple(beta.shape)}")
    if log_decay is not None and tuple(log_decay.shape) not in (per_channel[:-1], per_channel):
        raise ValueError(
            f"log_decay must be None, (B, H, L) or (B, H, L, K), got {tuple(log_decay.shape)}"
        )
    if write is not None and write.shape != v.shape:
        raise ValueError(f"write must be None or (B, H, L, V) like v, got {tuple(write.shape)}")
    if write is None and beta.dim() == 4:
        raise ValueError("write=None means write = beta, a scalar: pass write (B, H, L, V)")


def delta_rule_step(
    S: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    log_decay: torch.Tensor | None = None,
    write: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One position of the recurrence: S (B, H, K, V), q, k (B, H, K), v (B, H, V), beta (B, H)
    or (B, H, K), log_decay None, (B, H) or (B, H, K), write None or (B, H, V) -> (o_t (B, H, V),
    S_t)."""
    b = beta if beta.dim() == k.dim() else beta[..., None]  # (B, H, K|1)
    w = b if write is None else write  # (B, H, V|1)
    if log_decay is not None:
        a = log_decay if log_decay.dim() == k.dim() else log_decay[..., None]  # (B, H, K|1)
        S = a[..., None].exp() * S  # (B, H, K, V)
    erase = torch.einsum("bhk,bhkv->bhv", b * k, S)  # (B, H, V): S_t^T (b ⊙ k)
    S = S + k[..., None] * (w * v - erase)[..., None, :]  # (B, H, K, V)
    return torch.einsum("bhk,bhkv->bhv", q, S), S


def delta_rule_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    log_decay: torch.Tensor | None = None,
    write: torch.Tensor | None = None,
) -> torch.Tensor:
    """The recurrence of the module docstring, one step at a time, S_0 = 0. q, k (B, H, L, K),
    v (B, H, L, V), beta (B, H, L) or (B, H, L, K), log_decay None, (B, H, L) or (B, H, L, K),
    write None (= beta, then a scalar) or (B, H, L, V) -> o (B, H, L, V)."""
    _check(q, k, v, beta, log_decay, write)
    B, H, L, K = q.shape
    S = q.new_zeros(B, H, K, v.shape[-1])  # (B, H, K, V)
    steps = [[None] * L if x is None else x.unbind(2) for x in (log_decay, write)]
    out = []
    for q_t, k_t, v_t, b_t, a_t, w_t in zip(
        *(x.unbind(2) for x in (q, k, v, beta)), *steps, strict=True
    ):
        o_t, S = delta_rule_step(S, q_t, k_t, v_t, b_t, a_t, w_t)
        out.append(o_t)  # (B, H, V)
    return torch.stack(out, dim=2)  # (B, H, L, V)


def _gates(beta, log_decay, write):
    """beta, log_decay, write as (B, H, L, K|1), (B, H, L, K|1) or None, (B, H, L, V|1)."""
    b = beta if beta.dim() == 4 else beta[..., None]
    a = log_decay if log_decay is None or log_decay.dim() == 4 else log_decay[..., None]
    return b, a, b if write is None else write


def _scores(q, bk, k, g):
    """P_tj = Σ_d q_td k_jd exp(γ_td - γ_jd) and A_tj = Σ_d (b ⊙ k)_td k_jd exp(γ_td - γ_jd) for
    j <= t, (..., c, c) each, for q, bk, k (..., c, K) and γ = g None (no decay), (..., c, 1)
    or (..., c, K) (per channel: `decayed_scores`, sub-chunked)."""
    if g is not None and g.shape[-1] > 1:
        both = decayed_scores(torch.stack([q, bk], dim=-3), k[..., None, :, :], g[..., None, :, :])
        return both.unbind(-3)  # (..., c, c) each
    both = (torch.cat([q, bk], dim=-2) @ k.mT).unflatten(-2, (2, -1))  # (..., 2, c, c)
    both = both.tril() if g is None else both * scalar_decays(g)[..., None, :, :]
    return both.unbind(-3)  # (..., c, c) each


def unit_lower_inverse(A: torch.Tensor) -> torch.Tensor:
    """(I + A)^-1 for A (..., c, c), of which only the part below the diagonal is read, by
    blocks: with I + A = [[L_1, 0], [E, L_2]] (halves of size s),

        (I + A)^-1 = [[L_1^-1, 0], [-L_2^-1 E L_1^-1, L_2^-1]],

    the diagonal blocks of size 1, 2, 4, ... inverted for all blocks and matrices at once, two
    batched matrix products per level (log2 c levels; c padded to a power of two), as fla's
    `solve_tril` merges its blocks. One batched product per level, where a triangular solve
    runs LAPACK once per matrix (a thread-pool wake-up each on the CPU)."""
    c = A.shape[-1]
    C = 1 << (c - 1).bit_length()  # c rounded up to a power of two
    A = F.pad(A, (0, C - c, 0, C - c))  # (..., C, C): the padding is I + 0
    D = A.new_ones(*A.shape[:-2], C, 1, 1)  # (..., C/s, s, s): inverted diagonal blocks, s = 1
    s = 1
    while s < C:
        m = C // (2 * s)
        blocks = A.unflatten(-1, (m, 2, s)).unflatten(-4, (m, 2, s))  # (..., m,2,s, m,2,s)
        E = blocks.diagonal(dim1=-6, dim2=-3)[..., 1, :, 0, :, :].movedim(-1, -3)  # (..., m, s, s)
        D1, D2 = D.unflatten(-3, (m, 2)).unbind(-3)  # (..., m, s, s) each
        low = -(D2 @ E @ D1)  # (..., m, s, s)
        top = torch.cat([D1, torch.zeros_like(D1)], dim=-1)  # (..., m, s, 2s)
        D = torch.cat([top, torch.cat([low, D2], dim=-1)], dim=-2)  # (..., m, 2s, 2s)
        s *= 2
    return D[..., 0, :c, :c]  # (..., c, c)


def _across_chunks(reads, u0, keys, decay):
    """The sequential part, over n >= 2 chunks (B, H, n, ·, ·) from S = 0: chunk i computes
    [o_inter; wk S] = reads_i S (reads = [queries; wk], (2c, K)), then U = u0_i - wk_i S and
    S <- decay_i ⊙ S + keys_i^T U (skipping the first chunk's S = 0 and the last chunk's unread
    state). decay (B, H, n, K|1, 1) or None. Returns o_inter of chunks 1 .. n - 1 (B, H, n - 1,
    c, V)."""
    n, c = u0.shape[2:4]
    # over chunks by unbind, not x[:, :, i], whose backward writes a zero tensor per index
    rs, us, ks = (x.unbind(2) for x in (reads, u0, keys))
    decays = [None] * n if decay is None else decay.unbind(2)
    S = ks[0].mT @ us[0]  # (B, H, K, V): the state after the first chunk
    inter = []
    for i in range(1, n):
        o_i, wS = (rs[i] @ S).split(c, dim=-2)  # (B, H, c, V) each
        inter.append(o_i)  # the part from earlier chunks
        if i < n - 1:
            S = (S if decays[i] is None else decays[i] * S) + ks[i].mT @ (
                us[i] - wS
            )  # (B, H, K, V)
    return torch.stack(inter, dim=2)


def delta_rule_backend(device: torch.device | str) -> str:
    """'fla' (its Triton kernels) or 'torch' (the chunked form): what `delta_rule` runs."""
    found = on_kernel_device(device) and all(optional_kernel(*f) for f in FLA_KERNELS.values())
    return "fla" if found else "torch"


def fla_kernel(beta, log_decay, write) -> str:
    """The fla kernel for these gates: per-channel erase or a write gate is GDN-2's, a
    per-channel decay KDA's, a scalar one Gated DeltaNet's, none DeltaNet's."""
    if beta.dim() == 4 or write is not None:
        return "gdn2"
    if log_decay is None:
        return "delta_rule"
    return "kda" if log_decay.dim() == 4 else "gated_delta_rule"


def _fla_delta_rule(q, k, v, beta, log_decay, write) -> torch.Tensor:
    """delta_rule on fla's kernel for its gates; (B, H, L, ·) in and out."""
    name = fla_kernel(beta, log_decay, write)
    kernel = optional_kernel(*FLA_KERNELS[name])
    if name == "gdn2":  # every gate per channel: b (K,), w (V,), g (K,)
        log_decay = q.new_zeros(()) if log_decay is None else log_decay
        log_decay = (log_decay if log_decay.dim() == 4 else log_decay[..., None]).expand_as(q)
        write = beta[..., None].expand_as(v) if write is None else write
        beta = beta if beta.dim() == 4 else beta[..., None].expand_as(q)
    gates = {"delta_rule": (beta,), "gdn2": (log_decay, beta, write)}.get(name, (log_decay, beta))
    o, _ = kernel(*(x.transpose(1, 2) for x in (q, k, v, *gates)), scale=1.0)  # (B, T, H, V)
    return o.transpose(1, 2)  # (B, H, L, V)


@scoped("sequence op")
def delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    log_decay: torch.Tensor | None = None,
    write: torch.Tensor | None = None,
    chunk: int = 64,
) -> torch.Tensor:
    """The chunked WY form (module docstring); same arguments and result as delta_rule_reference.
    chunk: the most positions per chunk (L is cut into ceil(L / chunk) chunks of equal size)."""
    _check(q, k, v, beta, log_decay, write)
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive int, got {chunk!r}")
    if delta_rule_backend(q.device) == "fla":
        return _fla_delta_rule(q, k, v, beta, log_decay, write)
    L, K, V = q.shape[2], q.shape[3], v.shape[3]
    c = -(-L // -(-L // chunk))  # n = ceil(L / chunk) chunks of equal size c <= chunk
    b, a, w = _gates(beta, log_decay, write)
    q, k, v, b, w = (_chunks(x, c) for x in (q, k, v, b, w))  # (B, H, n, c, ·)
    a = None if a is None else _chunks(a, c)  # (B, H, n, c, K|1)
    g = None if a is None else a.cumsum(dim=3)  # (B, H, n, c, K|1): γ, the decay in the chunk
    bk = b * k  # (B, H, n, c, K)
    P, A = _scores(q, bk, k, g)  # (B, H, n, c, c), zero above the diagonal
    gbk = bk if g is None else bk * g.exp()  # (B, H, n, c, K): exp(γ) ⊙ b ⊙ k
    rhs = torch.cat([w * v, gbk], dim=-1)  # (B, H, n, c, V + K)
    X = unit_lower_inverse(A) @ rhs  # (B, H, n, c, V + K): (I + A)^-1 rhs
    out, Pwk = (P @ X).split([V, K], dim=-1)  # P u0: the part from inside each chunk; P wk
    if out.shape[2] == 1:
        return out[:, :, 0, :L]  # (B, H, L, V)
    u0, wk = X.split([V, K], dim=-1)  # (B, H, n, c, V), (B, H, n, c, K)
    if g is None:
        queries, keys, decay = q - Pwk, k, None
    else:
        last = g[..., -1:, :]  # (B, H, n, 1, K|1): the decay over the whole chunk
        queries = q * g.exp() - Pwk  # (B, H, n, c, K)
        keys, decay = k * (last - g).exp(), last.exp().mT  # (B, H, n, c, K), (B, H, n, K|1, 1)
    reads = torch.cat([queries, wk], dim=-2)  # (B, H, n, 2c, K)
    # chunks 1 .. n - 1 also read the state before them
    out = out + F.pad(_across_chunks(reads, u0, keys, decay), (0, 0, 0, 0, 1, 0))
    return out.flatten(2, 3)[:, :, :L]  # (B, H, L, V)


def householder_substeps(q, k, v, beta, log_decay=None):
    """DeltaProduct's tokens as n_h delta-rule sub-steps each. q (B, H, L, K), k (B, H, L, n_h, K),
    v (B, H, L, n_h, V), beta (B, H, L, n_h), log_decay None, (B, H, L) or (B, H, L, K) -> q, k,
    v, beta, log_decay of the delta rule at L·n_h positions: each token's decay at its first
    sub-step, its query at its last (zero before; those outputs are not read)."""
    if k.dim() != 5 or v.dim() != 5 or q.dim() != 4 or k.shape[:3] != q.shape[:3]:
        raise ValueError(
            f"need q (B, H, L, K), k (B, H, L, n_h, K), v (B, H, L, n_h, V); got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if v.shape[:4] != k.shape[:4] or beta.shape != k.shape[:4]:
        raise ValueError(f"v and beta need k's (B, H, L, n_h) = {tuple(k.shape[:4])}")
    if log_decay is not None and log_decay.shape[:3] != q.shape[:3]:
        raise ValueError(f"log_decay must be (B, H, L[, K]), got {tuple(log_decay.shape)}")
    n = k.shape[3]
    q = F.pad(q[:, :, :, None], (0, 0, n - 1, 0)).flatten(2, 3)  # (B, H, L·n_h, K)
    if log_decay is not None:
        first = (0, n - 1) if log_decay.dim() == 3 else (0, 0, 0, n - 1)
        log_decay = F.pad(log_decay[:, :, :, None], first).flatten(2, 3)  # (B, H, L·n_h[, K])
    return q, k.flatten(2, 3), v.flatten(2, 3), beta.flatten(2, 3), log_decay


@scoped("sequence op")
def delta_product(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    log_decay: torch.Tensor | None = None,
    chunk: int = 64,
) -> torch.Tensor:
    """DeltaProduct (shapes as householder_substeps) on the chunked delta rule -> o (B, H, L, V).
    chunk counts sub-steps."""
    o = delta_rule(*householder_substeps(q, k, v, beta, log_decay), chunk=chunk)
    return o.unflatten(2, (q.shape[2], k.shape[3]))[:, :, :, -1]  # (B, H, L, V)


def delta_product_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    log_decay: torch.Tensor | None = None,
) -> torch.Tensor:
    """delta_product on delta_rule_reference: the sub-steps one at a time."""
    o = delta_rule_reference(*householder_substeps(q, k, v, beta, log_decay))
    return o.unflatten(2, (q.shape[2], k.shape[3]))[:, :, :, -1]  # (B, H, L, V)
