"""Selective scan (S6, Gu & Dao 2023), with the semantics of mamba_ssm's `selective_scan_fn`.

Per batch b, channel d and state n, with step Δ = Δ_raw + delta_bias (then softplus if asked):

    h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t          # ZOH on A, Euler on B, h_{-1} = 0
    y_t = <h_t, C_t> + D u_t,   out_t = y_t * silu(z_t) when z is given

With negative_eigenvalues the transition is 2 exp(Δ_t A) - 1, in (-1, 1) instead of (0, 1)
(Grazzi et al. 2025, "Unlocking State-Tracking in Linear RNNs Through Negative Eigenvalues":
their Mamba's `deltaA * 2 - 1`), which lets a diagonal state flip sign, as parity needs.
mamba_ssm's CUDA kernel has no such mode: the 'cuda' backend refuses it.

Shapes: u, delta, z (B, D, L); A (D, N) real; delta_bias, D (D,); B and C each (D, N)
time-invariant, (B, N, L) input-dependent, or (B, G, N, L) with G groups, channel d reading group
d // (D // G).
Arithmetic is float32 (float64 when any input is float64); out has u's dtype and the last state
h_{L-1} (B, D, N) has the arithmetic dtype.

Backends (see `resolve_backend` for how one is chosen):
  'reference'  the recurrence step by step with autograd: the oracle, memory O(B D L N).
  'torch'      pure PyTorch, a custom autograd Function over chunks of T steps. Forward keeps only
               the state at each chunk boundary; backward recomputes a chunk's states from it and
               runs the adjoint λ_t = C_t dL/dy_t + exp(Δ_{t+1} A) λ_{t+1} in reverse time. Within a
               chunk, either one fused multiply-add per step ('torch-sequential', fastest on CPU)
               or recursive doubling over the chunk ('torch-chunked', fewer kernel launches for
               GPUs). Exact: exp(Δ A) is computed as exp2(Δ A log2 e), the same function.
               out and the gradients of u, delta, z are (B, D, L) views of time-major buffers.
  'cpp'        two fused CPU kernels, forward and backward (C++, `ssmbench.ops.scan_fused`, built
               on first use by the system's C++ compiler): the state and the adjoint in vector
               registers, one saved state per 64 steps, one parallel region per call. 'auto' picks
               it for CPU tensors when it builds.
  'cuda'       mamba_ssm's selective_scan_fn.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ssmbench.ops import scan_fused
from ssmbench.ops.profiling import scoped

BACKENDS = ("auto", "reference", "torch", "torch-sequential", "torch-chunked", "cuda", "cpp")
ENV_VAR = "SSMBENCH_SCAN"
# The 'torch' path per device type. CPU (benchmarks/scan.py, B=8, D=128, N=16, L=784, forward +
# backward): the sequential loop is 5-12x faster than the chunked parallel scan. On CUDA the chunked
# scan needs ~(L / T) log2(T) kernel launches instead of ~4 L; that choice and its chunk size are
# not yet measured on a GPU.
TORCH_PATH_BY_DEVICE = {"cpu": "torch-sequential", "cuda": "torch-chunked"}
# Elements of one (T, B, N, D) chunk buffer, which fixes the chunk length T = this // (B N D): the
# unit of vectorized work, of the states kept for the backward (one per chunk) and, for
# 'torch-chunked', of one parallel scan. CPU: 2^19 (2 MiB in float32, so the workspace stays in
# cache) was fastest or within 5% of it for B N D from 4K to 128K. GPU: large chunks, few launches.
CHUNK_ELEMENTS = {"torch-sequential": 2**19, "torch-chunked": 2**24}

_default_backend = "auto"
# Called with each selective_scan's FLOPs while ssmbench.experiment.flops counts a step.
FLOP_OBSERVERS: list[Callable[[int], None]] = []


def set_default_backend(name: str) -> None:
    """Backend used when a call names none; 'auto' defers to $SSMBENCH_SCAN, then to the device."""
    global _default_backend
    _default_backend = _check_backend_name(name, "set_default_backend")


def _check_backend_name(name: str, source: str) -> str:
    if name not in BACKENDS:
        raise ValueError(
            f"unknown selective-scan backend {name!r} (from {source}); use one of {BACKENDS}"
        )
    return name


@functools.cache
def _mamba_selective_scan_fn() -> Callable | None:
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except (ImportError, OSError):
        return None
    return selective_scan_fn


def resolve_backend(device: torch.device | str, backend: str | None = None) -> str:
    """The scan that would run for tensors on `device`: 'reference', 'torch-sequential',
    'torch-chunked', 'cpp' or 'cuda-mamba_ssm'.

    Requested name: `backend` > set_default_backend(...) > $SSMBENCH_SCAN, where None or 'auto'
    at a level defers to the next. 'auto' at the end means mamba_ssm's kernel for CUDA tensors when
    mamba_ssm imports, the fused 'cpp' kernels for CPU tensors when they build, else 'torch';
    'torch' means TORCH_PATH_BY_DEVICE[device type].
    """
    device = torch.device(device)
    name = "auto"
    for requested, source in (
        (backend, "the backend argument"),
        (_default_backend, "set_default_backend"),
        (os.environ.get(ENV_VAR), f"${ENV_VAR}"),
    ):
        if requested not in (None, "auto"):
            name = _check_backend_name(requested, source)
            break
    if name == "auto":
        on_cuda = device.type == "cuda" and _mamba_selective_scan_fn() is not None
        on_cpu = device.type == "cpu" and scan_fused.available()
        name = "cuda" if on_cuda else "cpp" if on_cpu else "torch"
    if name == "cpp":
        if not scan_fused.available():
            raise ValueError(f"scan backend 'cpp' cannot run here: {scan_fused.why_unavailable()}")
        if device.type != "cpu":
            raise ValueError(f"scan backend 'cpp' needs CPU tensors, got device {device}")
    if name == "torch":
        return TORCH_PATH_BY_DEVICE.get(device.type, "torch-sequential")
    if name == "cuda":
        if _mamba_selective_scan_fn() is None:
            raise ValueError(
                "scan backend 'cuda' needs mamba_ssm, which does not import: "
                'pip install "ssmbench[cuda]"'
            )
        if device.type != "cuda":
            raise ValueError(f"scan backend 'cuda' needs CUDA tensors, got device {device}")
        return "cuda-mamba_ssm"
    return name


def _check_shapes(u, delta, A, B, C, D, z, delta_bias) -> None:
    if u.dim() != 3:
        raise ValueError(f"u must be (batch, dim, length), got shape {tuple(u.shape)}")
    batch, dim, length = u.shape
    if A.dim() != 2 or A.shape[0] != dim or A.is_complex():
        raise ValueError(f"A must be real (dim={dim}, d_state), got {A.dtype} {tuple(A.shape)}")
    n = A.shape[1]
    for name, x in (("delta", delta), ("z", z)):
        if x is not None and x.shape != u.shape:
            raise ValueError(f"{name} must have u's shape {tuple(u.shape)}, got {tuple(x.shape)}")
    for name, x in (("D", D), ("delta_bias", delta_bias)):
        if x is not None and tuple(x.shape) != (dim,):
            raise ValueError(f"{name} must be (dim={dim},), got {tuple(x.shape)}")
    for name, x in (("B", B), ("C", C)):
        ok = (
            tuple(x.shape) == (dim, n)
            or (x.dim() == 3 and tuple(x.shape) == (batch, n, length))
            or (x.dim() == 4 and x.shape[0] == batch and x.shape[2:] == (n, length))
        )
        if not ok or (x.dim() == 4 and dim % x.shape[1] != 0):
            raise ValueError(
                f"{name} must be (dim, N)={dim, n}, (batch, N, length)={batch, n, length} or "
                f"(batch, groups, N, length) with groups dividing dim; got {tuple(x.shape)}"
            )


def _compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    is_double = any(t is not None and t.dtype == torch.float64 for t in tensors)
    return torch.float64 if is_double else torch.float32


def selective_scan_reference(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    negative_eigenvalues: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The recurrence of the module docstring, one time step after another (autograd backward)."""
    _check_shapes(u, delta, A, B, C, D, z, delta_bias)
    dtype = _compute_dtype(u, delta, A, B, C, D, z, delta_bias)
    dim = u.shape[1]

    def per_channel(X: torch.Tensor) -> torch.Tensor:  # -> (D, N) or (B, D, N, L)
        X = X.to(dtype)
        if X.dim() == 3:
            X = X[:, None]
        return X.repeat_interleave(dim // X.shape[1], dim=1) if X.dim() == 4 else X

    delta = delta.to(dtype)  # (B, D, L)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    u_ = u.to(dtype)
    B, C = per_channel(B), per_channel(C)
    dA = torch.exp(torch.einsum("bdl,dn->bdln", delta, A.to(dtype)))  # (B, D, L, N)
    if negative_eigenvalues:
        dA = 2 * dA - 1
    if B.dim() == 2:
        dBu = torch.einsum("bdl,dn->bdln", delta * u_, B)  # (B, D, L, N)
    else:
        dBu = torch.einsum("bdl,bdnl->bdln", delta * u_, B)
    h = u_.new_zeros(dA.shape[0], dim, dA.shape[-1])  # (B, D, N)
    states = []
    # unbind, not dA[:, :, t]: each indexing would cost a full-size zero tensor in the backward
    for dA_t, dBu_t in zip(dA.unbind(2), dBu.unbind(2), strict=True):
        h = dA_t * h + dBu_t
        states.append(h)
    hs = torch.stack(states, dim=2)  # (B, D, L, N)
    if C.dim() == 2:
        y = torch.einsum("bdln,dn->bdl", hs, C)
    else:
        y = torch.einsum("bdln,bdnl->bdl", hs, C)
    if D is not None:
        y = y + D.to(dtype)[:, None] * u_
    if z is not None:
        y = y * F.silu(z.to(dtype))
    out = y.to(u.dtype)
    return (out, h) if return_last_state else out


# ---- 'torch' backend: one chunk of T time steps at a time, hand-written backward ---------------
# Everything inside a chunk is time-major, and states are laid out (T, B, N, D) with channels
# innermost: contractions over N are then one row-vector-times-matrix product per (t, b).


def _solve_sequential(a: torch.Tensor, x: torch.Tensor, reverse: bool) -> None:
    """In place, one step at a time: x_t += a_t x_{t-1} (reverse: x_t += a_{t+1} x_{t+1})."""
    a_, x_ = a.unbind(0), x.unbind(0)
    if reverse:
        for t in range(len(x_) - 2, -1, -1):
            x_[t].addcmul_(a_[t + 1], x_[t + 1])
    else:
        for t in range(1, len(x_)):
            x_[t].addcmul_(a_[t], x_[t - 1])


def _solve_doubling(a: torch.Tensor, x: torch.Tensor, reverse: bool) -> None:
    """The recurrence of `_solve_sequential` by recursive doubling (Hillis-Steele): after the step
    with offset k, x_t sums the 2k terms ending at t and a_t is the product of their decays."""
    a = a.roll(-1, 0) if reverse else a.clone()  # reverse: a_t := a_{t+1}; a_{T-1} is never read
    k = 1
    while k < len(x):
        if reverse:
            x[:-k] += a[:-k] * x[k:]
            a[:-k] = a[:-k] * a[k:]
        else:
            x[k:] += a[k:] * x[:-k]
            a[k:] = a[k:] * a[:-k]
        k *= 2


_SOLVERS = {"torch-sequential": _solve_sequential, "torch-chunked": _solve_doubling}


def _time_major(X: torch.Tensor, dim: int, length: int, dtype: torch.dtype) -> torch.Tensor:
    """B or C as (L, B, N, G), channel d reading group d // (D // G); (D, N) -> G = D, stride-0
    over time and batch."""
    if X.dim() == 2:
        return X.to(dtype).T.expand(length, 1, -1, -1)
    if X.dim() == 3:
        X = X[:, None]
    return X.permute(3, 0, 2, 1).to(dtype).contiguous()


def _from_time_major(g: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Gradient of B or C: (L, B, N, G) or (N, D) -> like's layout and dtype."""
    if like.dim() == 2:
        return g.T.to(like.dtype)
    return g.permute(1, 3, 2, 0).reshape(like.shape).to(like.dtype)


def _sum_states(h: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """sum_n h[t, b, n, d] X[t, b, n, group of d]: h (T, B, N, D), X (T, B or 1, N, G) -> (T, B, D).

    <h_t, C_t> and <λ_t, B_t>."""
    T, batch, n, dim = h.shape
    if X.shape[1:] == (batch, n, 1):  # input-dependent, one group: a single bmm
        return torch.bmm(X.reshape(T * batch, 1, n), h.view(T * batch, n, dim)).view(T, batch, dim)
    return (h.unflatten(3, (X.shape[3], -1)) * X[..., None]).sum(2).flatten(2)


def _sum_channels(h: torch.Tensor, v: torch.Tensor, groups: int) -> torch.Tensor:
    """sum_{d in group} h[t, b, n, d] v[t, b, d]: h (T, B, N, D), v (T, B, D) -> (T, B, N, G)."""
    T, batch, n, dim = h.shape
    if groups == 1:  # a single bmm
        h_t = h.view(T * batch, n, dim).transpose(1, 2)
        return torch.bmm(v.reshape(T * batch, 1, dim), h_t).view(T, batch, n, 1)
    return (h.unflatten(3, (groups, -1)) * v.unflatten(2, (groups, -1))[:, :, None]).sum(-1)


def _outer(v: torch.Tensor, X: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out[t, b, n, d] = v[t, b, d] X[t, b, n, group of d]: v (T, B, D), X (T, B or 1, N, G)."""
    grouped = (X.shape[3], -1)
    torch.mul(v.unflatten(2, grouped)[:, :, None], X[..., None], out=out.unflatten(3, grouped))
    return out


def _to_time_major(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, D, L) -> contiguous (L, B, D) in dtype, one copy."""
    return torch.empty(x.shape[2], *x.shape[:2], dtype=dtype, device=x.device).copy_(
        x.permute(2, 0, 1)
    )


class _Scan(NamedTuple):
    """The inputs time-major in the arithmetic dtype, the chunking and a chunk's workspace."""

    u: torch.Tensor  # (L, B, D)
    delta: torch.Tensor  # (L, B, D)
    z: torch.Tensor | None  # (L, B, D)
    A_T: torch.Tensor  # (N, D)
    A_T_log2e: torch.Tensor  # A_T log2(e): exp(Δ A) = exp2(Δ A log2 e), which is ~4x faster on CPU
    Bs: torch.Tensor  # (L, B or 1, N, G)
    Cs: torch.Tensor  # (L, B or 1, N, G)
    D: torch.Tensor | None
    delta_bias: torch.Tensor | None
    delta_softplus: bool
    negative: bool  # transitions 2 exp(Δ A) - 1
    chunks: list[slice]
    solve: Callable[[torch.Tensor, torch.Tensor, bool], None]
    workspace: torch.Tensor  # (3, T, B, N, D)

    @classmethod
    def prepare(cls, u, delta, A, B, C, D, z, delta_bias, delta_softplus, negative, path) -> _Scan:
        dtype = _compute_dtype(u, delta, A, B, C, D, z, delta_bias)
        batch, dim, length = u.shape
        chunk_size = max(1, CHUNK_ELEMENTS[path] // (batch * A.shape[1] * dim))
        A_T = A.to(dtype).T.contiguous()
        return cls(
            u=_to_time_major(u, dtype),
            delta=_to_time_major(delta, dtype),
            z=None if z is None else _to_time_major(z, dtype),
            A_T=A_T,
            A_T_log2e=A_T * math.log2(math.e),
            Bs=_time_major(B, dim, length, dtype),
            Cs=_time_major(C, dim, length, dtype),
            D=None if D is None else D.to(dtype),
            delta_bias=None if delta_bias is None else delta_bias.to(dtype),
            delta_softplus=delta_softplus,
            negative=negative,
            chunks=[slice(s, s + chunk_size) for s in range(0, length, chunk_size)],
            solve=_SOLVERS[path],
            workspace=u.new_empty(3, min(chunk_size, length), batch, A.shape[1], dim, dtype=dtype),
        )

    def steps(self, chunk: slice) -> tuple[torch.Tensor, ...]:
        """u, Δ before softplus, Δ and Δ u of one chunk, each (T, B, D)."""
        u, dt_raw = self.u[chunk], self.delta[chunk]
        if self.delta_bias is not None:
            dt_raw = dt_raw + self.delta_bias
        dt = F.softplus(dt_raw) if self.delta_softplus else dt_raw
        return u, dt_raw, dt, dt * u

    def states(self, chunk: slice, dt, dtu, h0) -> tuple[torch.Tensor, torch.Tensor]:
        """Transitions exp(Δ_t A) (or 2 exp(Δ_t A) - 1) and states h_t of one chunk, both
        (T, B, N, D) in the workspace, from the state h0 (B, N, D) before it."""
        dA, h = self.workspace[0, : len(dt)], self.workspace[1, : len(dt)]
        torch.mul(dt[:, :, None], self.A_T_log2e, out=dA).exp2_()
        if self.negative:
            dA.mul_(2).sub_(1)
        _outer(dtu, self.Bs[chunk], out=h)
        h[0].addcmul_(dA[0], h0)
        self.solve(dA, h, False)
        return dA, h

    def y(self, chunk: slice, u, h) -> torch.Tensor:
        """<h_t, C_t> + D u_t (T, B, D)."""
        y = _sum_states(h, self.Cs[chunk])
        return y if self.D is None else y.addcmul_(u, self.D)


def _through_gate(s: _Scan, chunk: slice, u_c, h, g_y, g_z) -> torch.Tensor:
    """Out = y · silu(z): dL/dz = g · y · silu'(z) into g_z[chunk], silu' = σ(z)(1 + z(1 − σ(z)));
    returns dL/dy = g · silu(z) (T, B, D)."""
    z_c = s.z[chunk]  # (T, B, D)
    sig = torch.sigmoid(z_c)
    silu = z_c * sig
    d_silu = silu.mul(1 - sig).add_(sig)
    g_z[chunk] = g_y * s.y(chunk, u_c, h) * d_silu
    return g_y * silu


def _through_decay(s: _Scan, lam, dA, h, h0, dt, g_A_T) -> torch.Tensor:
    """The gradient through the transition exp(Δ_t A): q_t = λ_t ⊙ exp(Δ_t A) h_{t-1} is
    dL/d(Δ_t A) (with negative eigenvalues dA holds the transition 2 exp(Δ_t A) − 1, whose
    derivative 2 exp(Δ_t A) is dA + 1); adds Σ_t q_t Δ_t to g_A_T and returns dL/dΔ_t = Σ_n q_t A
    (T, B, D). Overwrites lam, dA and h."""
    q = lam.mul_(dA.add_(1)) if s.negative else lam.mul_(dA)  # (T, B, N, D)
    q[1:] *= h[:-1]
    q[0] *= h0
    g_dt = torch.mul(q, s.A_T, out=h).sum(2)  # (T, B, D)
    g_A_T += q.mul_(dt[:, :, None]).sum((0, 1))
    return g_dt


class _SelectiveScanFn(torch.autograd.Function):
    """States are kept only at chunk boundaries; backward recomputes each chunk's states from its
    boundary and runs the adjoint recurrence λ_t = g_t C_t + exp(Δ_{t+1} A) λ_{t+1} backwards."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, negative, path):
        s = _Scan.prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus, negative, path)
        out = torch.empty_like(s.u, dtype=u.dtype)  # (L, B, D)
        state_shape = s.workspace.shape[2:]  # (B, N, D)
        boundaries = s.workspace.new_empty(len(s.chunks), *state_shape)  # h before each chunk
        h_last = s.workspace.new_zeros(state_shape)
        for c, chunk in enumerate(s.chunks):
            boundaries[c] = h_last  # a copy: h_last is a view of the workspace
            u_c, _, dt, dtu = s.steps(chunk)
            _, h = s.states(chunk, dt, dtu, boundaries[c])
            y = s.y(chunk, u_c, h)
            out[chunk] = y if z is None else y.mul_(F.silu(s.z[chunk]))
            h_last = h[-1]
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, boundaries)
        ctx.delta_softplus, ctx.negative, ctx.path = delta_softplus, negative, path
        return out.permute(1, 2, 0), h_last.transpose(1, 2).contiguous()

    @staticmethod
    @once_differentiable
    def backward(ctx, g_out, g_last):
        u, delta, A, B, C, D, z, delta_bias, boundaries = ctx.saved_tensors
        s = _Scan.prepare(
            u, delta, A, B, C, D, z, delta_bias, ctx.delta_softplus, ctx.negative, ctx.path
        )
        g_out = _to_time_major(g_out, s.u.dtype)  # (L, B, D)
        g_u = torch.empty_like(s.u, dtype=u.dtype)  # (L, B, D)
        g_delta = torch.empty_like(s.delta, dtype=delta.dtype)
        g_z = None if z is None else torch.empty_like(s.z, dtype=z.dtype)
        g_A_T = torch.zeros_like(s.A_T)
        g_Bs = torch.zeros_like(s.A_T) if B.dim() == 2 else torch.empty_like(s.Bs)
        g_Cs = torch.zeros_like(s.A_T) if C.dim() == 2 else torch.empty_like(s.Cs)
        g_D = None if D is None else torch.zeros_like(s.D)
        g_bias = None if delta_bias is None else torch.zeros_like(s.delta_bias)
        carry = torch.empty_like(boundaries[0])  # exp(Δ_{t+1} A) λ_{t+1} (B, N, D)
        carry.copy_(g_last.transpose(1, 2))
        lam_ws = s.workspace[2]
        for c in range(len(s.chunks) - 1, -1, -1):
            chunk, h0 = s.chunks[c], boundaries[c]
            u_c, dt_raw, dt, dtu = s.steps(chunk)
            dA, h = s.states(chunk, dt, dtu, h0)
            g_y = g_out[chunk]  # dL/dy (T, B, D)
            if z is not None:
                g_y = _through_gate(s, chunk, u_c, h, g_y, g_z)
            if D is not None:
                g_D += (g_y * u_c).sum((0, 1))
            g_C = _sum_channels(h, g_y, s.Cs.shape[3])  # (T, B, N, G)
            lam = _outer(g_y, s.Cs[chunk], out=lam_ws[: len(dt)])
            lam[-1] += carry
            s.solve(dA, lam, True)  # λ (T, B, N, D)
            torch.mul(dA[0], lam[0], out=carry)
            g_dtu = _sum_states(lam, s.Bs[chunk])  # dL/d(Δ u) through Δ B u (T, B, D)
            g_B = _sum_channels(lam, dtu, s.Bs.shape[3])
            for g_X, g_X_chunk in ((g_Bs, g_B), (g_Cs, g_C)):
                if g_X.dim() == 2:  # time-invariant
                    g_X += g_X_chunk.sum((0, 1))
                else:
                    g_X[chunk] = g_X_chunk
            g_dt = _through_decay(s, lam, dA, h, h0, dt, g_A_T).addcmul_(g_dtu, u_c)
            g_u_c = g_dtu.mul_(dt)
            g_u[chunk] = g_u_c if D is None else g_u_c.addcmul_(g_y, s.D)
            if ctx.delta_softplus:
                g_dt *= torch.sigmoid(dt_raw)
            g_delta[chunk] = g_dt
            if delta_bias is not None:
                g_bias += g_dt.sum((0, 1))
        return (
            g_u.permute(1, 2, 0),
            g_delta.permute(1, 2, 0),
            g_A_T.T.to(A.dtype),
            _from_time_major(g_Bs, B),
            _from_time_major(g_Cs, C),
            None if D is None else g_D.to(D.dtype),
            None if z is None else g_z.permute(1, 2, 0),
            None if delta_bias is None else g_bias.to(delta_bias.dtype),
            None,
            None,
            None,
        )


@torch.compiler.disable  # dynamo cannot trace a ctypes call: run it eagerly
def _fused_scan(*args: object) -> tuple[torch.Tensor, torch.Tensor]:
    """The 'cpp' backend's autograd Function, opaque to torch.compile (a graph break)."""
    return scan_fused.FusedScanFn.apply(*args)


SCAN_FORWARD_FLOPS = 7  # per (batch, channel, step, state): Δ A, exp, decay h, Δ u B, +, h C, sum
SCAN_BACKWARD_FLOPS = 15  # the adjoint and the gradients of Δ, A, B, C (no recomputation)


def scan_flops(batch: int, dim: int, length: int, d_state: int, backward: bool) -> int:
    """Arithmetic of one selective scan of u (batch, dim, length), forward (+ backward)."""
    per_element = SCAN_FORWARD_FLOPS + (SCAN_BACKWARD_FLOPS if backward else 0)
    return per_element * batch * dim * length * d_state


def _observe_flops(args: tuple) -> None:
    """Tell FLOP_OBSERVERS this call's FLOPs (experiment/flops.py says how they are counted)."""
    tensors = [x for x in args if torch.is_tensor(x)]
    backward = torch.is_grad_enabled() and any(x.requires_grad for x in tensors)
    flops = scan_flops(*args[0].shape, args[2].shape[1], backward)
    for observe in FLOP_OBSERVERS:
        observe(flops)


@scoped("sequence op")
def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    negative_eigenvalues: bool = False,
    backend: str | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The selective scan of the module docstring on the backend `resolve_backend` picks: out
    (B, D, L), or (out, last_state (B, D, N)) if return_last_state."""
    path = resolve_backend(u.device, backend)
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if FLOP_OBSERVERS:
        _observe_flops(args)
    if path == "reference":
        return selective_scan_reference(*args, negative_eigenvalues)
    if path == "cuda-mamba_ssm":
        if negative_eigenvalues:
            raise ValueError(
                "negative_eigenvalues: mamba_ssm's CUDA scan computes exp(ΔA) only; "
                "use --scan torch for this model"
            )
        return _mamba_selective_scan_fn()(*args)
    _check_shapes(u, delta, A, B, C, D, z, delta_bias)
    if path == "cpp":
        dtype = _compute_dtype(u, delta, A, B, C, D, z, delta_bias)
        out, last_state = _fused_scan(*args[:-1], negative_eigenvalues, dtype)
    else:
        out, last_state = _SelectiveScanFn.apply(*args[:-1], negative_eigenvalues, path)
    return (out, last_state) if return_last_state else out
