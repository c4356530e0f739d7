"""numba kernels of the fused CPU selective scan (see `ssmbench.ops.scan_fused` for the math).

Arrays: u, delta, z (B, D, L); A (D, N); Bx, Cx (Bb, G, Lt, N), channel d reading group
d // (D // G), Bb = 1 and Lt = 1 when time-invariant; Dv, bias (D,). Everything float32 or
everything float64; compiled once per dtype and cached on disk. In float32, exp is a polynomial
(Cephes' expf, error within 1 ulp of libm's) that the compiler can vectorize over the N states.
"""

from __future__ import annotations

import math
import os
import tempfile

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload

CHUNK = 64  # steps whose states the backward recomputes at once: (CHUNK, N) stays in L1
LANES = 16  # N is padded to a multiple: loops over the states are whole vector operations


def cache_dir(package_dir: str) -> str | None:
    """Where compiled kernels are cached: None (numba's default, beside this file) when the
    package directory is writable, else a per-user directory under the temp dir."""
    if os.access(package_dir, os.W_OK):
        return None
    return os.path.join(tempfile.gettempdir(), f"ssmbench-numba-{os.getuid()}")


_dir = cache_dir(os.path.dirname(os.path.abspath(__file__)))
if _dir is not None and not numba.config.CACHE_DIR:
    numba.config.CACHE_DIR = _dir

# numba's OpenMP layer leaves its threads spinning after each kernel, which starves the torch ops
# between two scans (measured: a torch-sequential scan 25x slower when interleaved with it); the
# workqueue layer's threads sleep. The kernels are not called concurrently from several threads.
if numba.config.THREADING_LAYER == "default":
    numba.config.THREADING_LAYER = "workqueue"

# error_model="numpy": no zero-division check per `/` (a branch that stops vectorization; no
# divisor here can be 0). The chunk helpers are inlined so the compiler sees the whole loop nest.
_FLAGS = dict(cache=True, nogil=True, fastmath=True, error_model="numpy")
_jit = njit(**_FLAGS)
_pjit = njit(**_FLAGS, parallel=True)
_inline = njit(**_FLAGS, inline="always")


def set_threads(n: int) -> None:
    """Run the kernels on n threads (at most numba's pool)."""
    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))


@intrinsic
def _f32_from_bits(typingctx, bits):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


def _exp(x):
    """exp(x) in x's precision."""
    return math.exp(x)


@overload(_exp, inline="always", fastmath=True)
def _exp_overload(x):
    if x != types.float32:
        return lambda x: math.exp(x)

    def exp32(x):  # exp(r) 2^k, x = k ln 2 + r, |r| <= ln 2 / 2 (Cody-Waite, Cephes polynomial)
        x = min(max(x, np.float32(-87.0)), np.float32(88.0))
        k = np.floor(x * np.float32(1.4426950408889634) + np.float32(0.5))  # float32
        r = x - k * np.float32(0.693359375) - k * np.float32(-2.12194440e-4)
        p = np.float32(1.9875691500e-4)
        p = p * r + np.float32(1.3981999507e-3)
        p = p * r + np.float32(8.3334519073e-3)
        p = p * r + np.float32(4.1665795894e-2)
        p = p * r + np.float32(1.6666665459e-1)
        p = p * r + np.float32(5.0000001201e-1)
        p = p * r * r + r + np.float32(1.0)
        return p * _f32_from_bits(np.int32(k + 127) << 23)

    return exp32


def _like(x, c):
    """The constant c in x's type (keeps float32 arithmetic float32)."""
    return c


@overload(_like, inline="always")
def _like_overload(x, c):
    cast = np.float32 if x == types.float32 else np.float64
    return lambda x, c: cast(c)


def _log1p(e):
    """log(1 + e) for 0 <= e <= 1, in e's precision."""
    return math.log1p(e)


@overload(_log1p, inline="always", fastmath=True)
def _log1p_overload(e):
    if e != types.float32:
        return lambda e: math.log1p(e)

    def log1p32(e):  # 2 atanh(s), s = e / (2 + e) <= 1/3: odd series to s^17, error < 1e-9
        s = e / (np.float32(2.0) + e)
        s2 = s * s
        p = np.float32(1 / 17) * s2 + np.float32(1 / 15)
        p = p * s2 + np.float32(1 / 13)
        p = p * s2 + np.float32(1 / 11)
        p = p * s2 + np.float32(1 / 9)
        p = p * s2 + np.float32(1 / 7)
        p = p * s2 + np.float32(1 / 5)
        p = p * s2 + np.float32(1 / 3)
        return np.float32(2.0) * s * (p * s2 + np.float32(1.0))

    return log1p32


@_jit
def _steps(delta, bias, softplus, dt, d_dt):
    """Δ_t = softplus(δ_t + bias) (or δ_t + bias) into dt (L,), dΔ/dδ into d_dt. Vectorizes:
    softplus(x) = max(x, 0) + log1p(exp(-|x|)), x itself above torch's threshold 20."""
    zero, one, threshold = _like(bias, 0.0), _like(bias, 1.0), _like(bias, 20.0)
    if not softplus:
        for t in range(dt.shape[0]):
            dt[t], d_dt[t] = delta[t] + bias, one
        return
    for t in range(dt.shape[0]):
        x = delta[t] + bias
        e = _exp(-abs(x))
        dt[t] = max(x, zero) + _log1p(e) if x <= threshold else x
        sig = (one if x >= zero else e) / (one + e)  # sigmoid(x)
        d_dt[t] = sig if x <= threshold else one


@_jit
def _gates(z, silu, d_silu):
    """silu(z) = z sigmoid(z) and its derivative sigmoid(z) (1 + z (1 - sigmoid(z))), over t."""
    one = _like(z[0], 1.0)
    for t in range(z.shape[0]):
        sig = one / (one + _exp(-z[t]))
        silu[t] = z[t] * sig
        d_silu[t] = sig * (one + z[t] * (one - sig))


@_jit
def _bc_index(X, b, d, dim):
    """X (Bb, G, Lt, N) -> (its batch index, the group of channel d, time stride 0 or 1)."""
    return (b if X.shape[0] > 1 else 0), d // (dim // X.shape[1]), (1 if X.shape[2] > 1 else 0)


@_pjit
def forward(u, delta, A, Bx, Cx, Dv, z, bias, softplus, has_z, out, starts, last):
    """out_t = (<h_t, C_t> + D u_t) silu(z_t), h_t = exp(Δ_t A) h_{t-1} + Δ_t u_t B_t: writes
    out (B, D, L), starts (B, D, ceil(L / CHUNK), N), the state before each chunk, and last
    (B, D, N)."""
    batch, dim, length = u.shape
    n = A.shape[1]
    for i in prange(batch * dim):
        b, d = i // dim, i % dim
        bb, bg, bt = _bc_index(Bx, b, d, dim)
        cb, cg, ct = _bc_index(Cx, b, d, dim)
        per_step = np.empty((4, length), dtype=u.dtype)  # Δ, dΔ/dδ, silu(z), its derivative
        _steps(delta[b, d], bias[d], softplus, per_step[0], per_step[1])
        if has_z:
            _gates(z[b, d], per_step[2], per_step[3])
        A_d, h, out_bd = A[d], np.zeros(n, dtype=u.dtype), out[b, d]
        for t in range(length):
            if t % CHUNK == 0:
                starts[b, d, t // CHUNK, :] = h
            B_t, C_t = Bx[bb, bg, t * bt], Cx[cb, cg, t * ct]
            dt_t, dtu = per_step[0, t], per_step[0, t] * u[b, d, t]
            for k in range(n):
                h[k] = _exp(dt_t * A_d[k]) * h[k] + dtu * B_t[k]
            y_t = Dv[d] * u[b, d, t]
            for k in range(n):
                y_t += h[k] * C_t[k]
            out_bd[t] = y_t
        if has_z:
            for t in range(length):
                out_bd[t] *= per_step[2, t]
        last[b, d, :] = h


@_inline
def _recompute_chunk(u, dt, A_d, Bx, b, d, t0, t1, h0, dA, hs):
    """Decays dA[s] = exp(Δ A) and states hs[s] of the steps t0 + s < t1, from h0 before t0."""
    bb, bg, bt = _bc_index(Bx, b, d, u.shape[1])
    for s in range(t1 - t0):
        t = t0 + s
        dt_t, dtu, B_t = dt[t], dt[t] * u[b, d, t], Bx[bb, bg, t * bt]
        prev, dA_s, h_s = h0 if s == 0 else hs[s - 1], dA[s], hs[s]
        for k in range(A_d.shape[0]):
            dA_s[k] = _exp(dt_t * A_d[k])
        for k in range(A_d.shape[0]):
            h_s[k] = dA_s[k] * prev[k] + dtu * B_t[k]


@_pjit
def backward(u, delta, A, Bx, Cx, Dv, z, bias, softplus, has_z, starts, g_out, g_last, block,
             g_u, g_delta, g_z, g_Bx, g_Cx, g_A, g_D, g_bias):  # fmt: skip
    """Writes g_u, g_delta, g_z (B, D, L); g_Bx, g_Cx (B, D / block, L, N): partial sums over a
    block of channels when time-varying, else (B, D, 1, N); g_A (B, D, N); g_D, g_bias (B, D)."""
    batch, dim, length = u.shape
    n, blocks = A.shape[1], dim // block
    for i in prange(batch * blocks):
        b, blk = i // blocks, i % blocks
        dA = np.empty((CHUNK, n), dtype=u.dtype)
        hs = np.empty((CHUNK, n), dtype=u.dtype)
        lam = np.empty(n, dtype=u.dtype)  # exp(Δ_{t+1} A) λ_{t+1}, carried backwards
        per_step = np.empty((5, length), dtype=u.dtype)  # Δ, dΔ/dδ, silu(z), its derivative, dL/dy
        for d in range(blk * block, (blk + 1) * block):
            _steps(delta[b, d], bias[d], softplus, per_step[0], per_step[1])
            per_step[4, :] = g_out[b, d]
            if has_z:
                _gates(z[b, d], per_step[2], per_step[3])
                for t in range(length):
                    per_step[4, t] *= per_step[2, t]
            lam[:] = g_last[b, d, :]
            for c in range(starts.shape[2] - 1, -1, -1):
                t0, t1 = c * CHUNK, min(length, (c + 1) * CHUNK)
                h0 = starts[b, d, c]
                _recompute_chunk(u, per_step[0], A[d], Bx, b, d, t0, t1, h0, dA, hs)
                _adjoint_chunk(u, A, Bx, Cx, Dv, has_z, g_out, b, d, blk, t0, t1, h0, dA, hs,
                               lam, per_step, g_u, g_delta, g_z, g_Bx, g_Cx, g_A)  # fmt: skip
            g_D_d = g_bias_d = _like(u[b, d, 0], 0.0)  # sums in registers, stored once
            for t in range(length):
                g_D_d += per_step[4, t] * u[b, d, t]
                g_bias_d += g_delta[b, d, t]
            g_D[b, d], g_bias[b, d] = g_D_d, g_bias_d


@_inline
def _adjoint_chunk(u, A, Bx, Cx, Dv, has_z, g_out, b, d, blk, t0, t1, h0, dA, hs, lam, per_step,
                   g_u, g_delta, g_z, g_Bx, g_Cx, g_A):  # fmt: skip
    """Steps t1 - 1 down to t0 of the adjoint; lam holds exp(Δ_{t1} A) λ_{t1} on entry and
    exp(Δ_{t0} A) λ_{t0} on exit."""
    bb, bg, bt = _bc_index(Bx, b, d, u.shape[1])
    cb, cg, ct = _bc_index(Cx, b, d, u.shape[1])
    A_d, g_A_d = A[d], g_A[b, d]
    for s in range(t1 - t0 - 1, -1, -1):
        t = t0 + s
        ut, dt_t, g = u[b, d, t], per_step[0, t], per_step[4, t]  # g = dL/dy_t
        B_t, C_t, dA_s, h_s = Bx[bb, bg, t * bt], Cx[cb, cg, t * ct], dA[s], hs[s]
        prev = h0 if s == 0 else hs[s - 1]
        g_B_t = g_Bx[b, blk, t] if g_Bx.shape[2] > 1 else g_Bx[b, d, 0]
        g_C_t = g_Cx[b, blk, t] if g_Cx.shape[2] > 1 else g_Cx[b, d, 0]
        if has_z:
            y_t = Dv[d] * ut
            for k in range(A_d.shape[0]):
                y_t += h_s[k] * C_t[k]
            g_z[b, d, t] = g_out[b, d, t] * y_t * per_step[3, t]
        g_dtu = g_dt_t = _like(dt_t, 0.0)  # dL/d(Δ_t u_t), dL/dΔ_t through exp(Δ_t A)
        dtu = dt_t * ut
        for k in range(A_d.shape[0]):
            lam_k = lam[k] + g * C_t[k]  # λ_t
            q_k = lam_k * dA_s[k] * prev[k]  # dL/d(Δ_t A_dk)
            g_dt_t += q_k * A_d[k]
            g_dtu += lam_k * B_t[k]
            g_A_d[k] += q_k * dt_t
            g_C_t[k] += g * h_s[k]
            g_B_t[k] += lam_k * dtu
            lam[k] = lam_k * dA_s[k]
        g_u[b, d, t] = g_dtu * dt_t + g * Dv[d]
        g_delta[b, d, t] = (g_dt_t + g_dtu * ut) * per_step[1, t]
