"""The selective scan of `ssmbench.ops.scan` as two fused CPU kernels (numba, in
`ssmbench.ops.scan_kernels`): one parallel region per call each, parallel over (batch, channel).

Forward, per (b, d): Δ_t = softplus(δ_t + bias_d) for all t at once (vectorized), then per step

    h_n = exp(Δ_t A_dn) h_n + Δ_t u_t B_tn,     out_t = (Σ_n h_n C_tn + D_d u_t) silu(z_t)

with the state h (N,) in a small local array. The kernel writes only out, the last state and h at
the start of every chunk of CHUNK steps (B, D, L / CHUNK, N): nothing of size (B, D, L, N).

Backward, per (b, d), chunks in reverse: recompute the chunk's decays exp(Δ_t A) and states from
its saved start into local (CHUNK, N) buffers, then run the adjoint backwards in time,

    λ_t = g_t C_t + exp(Δ_{t+1} A) λ_{t+1}     (λ_{L-1} also gets dL/dh_{L-1}),  g_t = dL/dy_t
    dL/dC_t += g_t h_t,   dL/dB_t += λ_t Δ_t u_t,   dL/d(Δ_t A) = λ_t exp(Δ_t A) h_{t-1}

Gradients of B and C shared across channels ((batch, groups, N, L)) are summed over a block of
channels into a (batch, blocks, L, N) buffer, blocks never straddling a group, then over blocks in
torch; per-channel ones (A, D, delta_bias, time-invariant B and C) go to (batch, D, ...) buffers
summed over batch in torch. N is padded to whole vector lanes with inert states (A = B = C = 0).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

try:
    from ssmbench.ops import scan_kernels
except ImportError:  # no numba: the 'torch' paths remain
    scan_kernels = None

# ---- torch glue ---------------------------------------------------------------------------------


def available() -> bool:
    """Whether the fused kernels can run (numba imports)."""
    return scan_kernels is not None


def _set_threads() -> None:
    """Run the kernels on as many threads as torch uses (at most numba's pool)."""
    scan_kernels.set_threads(torch.get_num_threads())


def _array(x: torch.Tensor, dtype: torch.dtype) -> np.ndarray:
    """x as a contiguous array in dtype, sharing memory when it already is one."""
    return x.detach().to(dtype).contiguous().numpy()


def _padded(n: int) -> int:
    """N rounded up to whole vector lanes; the kernels see zeros in the extra states (A = 0,
    B = C = 0: their states stay 0 and add nothing)."""
    return -(-n // scan_kernels.LANES) * scan_kernels.LANES


def _pad_states(x: torch.Tensor, dtype: torch.dtype) -> np.ndarray:
    """x (..., N) as a contiguous (..., padded N) array in dtype."""
    x = x.detach().to(dtype)
    return F.pad(x, (0, _padded(x.shape[-1]) - x.shape[-1])).contiguous().numpy()


def _bc(X: torch.Tensor, dtype: torch.dtype) -> np.ndarray:
    """B or C as (Bb, G, Lt, padded N): (D, N) -> (1, D, 1, N); (B, N, L) -> (B, 1, L, N)."""
    if X.dim() == 2:
        return _pad_states(X[None, :, None], dtype)
    if X.dim() == 3:
        X = X[:, None]
    return _pad_states(X.transpose(2, 3), dtype)


def _kernel_inputs(u, delta, A, B, C, D, z, delta_bias, dtype) -> tuple[np.ndarray, ...]:
    """The kernels' u, delta, A, Bx, Cx, Dv, z, bias: D and bias zeros when None, z a dummy."""
    zeros = torch.zeros(u.shape[1])  # (D,)
    return (
        _array(u, dtype),
        _array(delta, dtype),
        _pad_states(A, dtype),
        _bc(B, dtype),
        _bc(C, dtype),
        _array(zeros if D is None else D, dtype),
        _array(torch.zeros(1, 1, 1) if z is None else z, dtype),
        _array(zeros if delta_bias is None else delta_bias, dtype),
    )


def _block(dim: int, batch: int, *Xs: torch.Tensor) -> int:
    """Channels per work item of the backward: divides D / G of every time-varying X (so that a
    block reads one group) and leaves >= 4 items per thread where it can."""
    per_group = [dim // (1 if X.dim() == 3 else X.shape[1]) for X in Xs if X.dim() > 2]
    if not per_group:
        return 1
    block = math.gcd(*per_group)
    while block % 2 == 0 and batch * (dim // block) < 4 * torch.get_num_threads():
        block //= 2
    return block


def _grad_bc(g: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Partial sums (B, D, 1, padded N) or (B, D / block, L, padded N) -> the gradient of B or C."""
    g = g[..., : like.shape[-2 if like.dim() > 2 else -1]]
    if like.dim() == 2:
        return g.sum((0, 2)).to(like.dtype)  # (D, N)
    groups = 1 if like.dim() == 3 else like.shape[1]
    g = g.unflatten(1, (groups, -1)).sum(2)  # (B, G, L, N)
    return g.transpose(2, 3).reshape(like.shape).to(like.dtype)


class FusedScanFn(torch.autograd.Function):
    """selective_scan on the fused kernels; saves the inputs and one state per chunk."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, dtype):
        (batch, dim, length), n = u.shape, _padded(A.shape[1])
        out = torch.empty(batch, dim, length, dtype=dtype)
        starts = torch.empty(batch, dim, -(-length // scan_kernels.CHUNK), n, dtype=dtype)
        last = torch.empty(batch, dim, n, dtype=dtype)
        inputs = _kernel_inputs(u, delta, A, B, C, D, z, delta_bias, dtype)
        scan_kernels.set_threads(torch.get_num_threads())
        flags = (delta_softplus, z is not None)
        scan_kernels.forward(*inputs, *flags, out.numpy(), starts.numpy(), last.numpy())
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, starts)
        ctx.delta_softplus, ctx.dtype = delta_softplus, dtype
        return out.to(u.dtype), last[..., : A.shape[1]]

    @staticmethod
    @once_differentiable
    def backward(ctx, g_out, g_last):
        u, delta, A, B, C, D, z, delta_bias, starts = ctx.saved_tensors
        dtype, (batch, dim, length), n = ctx.dtype, u.shape, _padded(A.shape[1])
        block = _block(dim, batch, B, C)
        zeros = functools.partial(torch.zeros, dtype=dtype)
        g_u, g_delta = torch.empty(batch, dim, length, dtype=dtype), zeros(batch, dim, length)
        g_z = zeros(batch, dim, length) if z is not None else zeros(1, 1, 1)
        g_B, g_C = (
            zeros(batch, dim, 1, n) if X.dim() == 2 else zeros(batch, dim // block, length, n)
            for X in (B, C)
        )
        g_A, g_D, g_bias = zeros(batch, dim, n), zeros(batch, dim), zeros(batch, dim)
        inputs = _kernel_inputs(u, delta, A, B, C, D, z, delta_bias, dtype)
        flags = (ctx.delta_softplus, z is not None)
        cotangents = (starts.numpy(), _array(g_out, dtype), _pad_states(g_last, dtype), block)
        grads = (g_u, g_delta, g_z, g_B, g_C, g_A, g_D, g_bias)
        scan_kernels.set_threads(torch.get_num_threads())
        scan_kernels.backward(*inputs, *flags, *cotangents, *(g.numpy() for g in grads))
        return (
            g_u.to(u.dtype),
            g_delta.to(delta.dtype),
            g_A.sum(0)[:, : A.shape[1]].to(A.dtype),
            _grad_bc(g_B, B),
            _grad_bc(g_C, C),
            None if D is None else g_D.sum(0).to(D.dtype),
            None if z is None else g_z.to(z.dtype),
            None if delta_bias is None else g_bias.sum(0).to(delta_bias.dtype),
            None,
            None,
        )
