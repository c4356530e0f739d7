"""The selective scan of `ssmbench.ops.scan` as two fused CPU kernels (C++, `scan_cpu.cpp`, built
on first use by the system's compiler): one call each, parallel over (batch, channel).

Forward, per (b, d): Δ_t = softplus(δ_t + bias_d) for all t at once (vectorized), then per step

    h_n = exp(Δ_t A_dn) h_n + Δ_t u_t B_tn,     out_t = (Σ_n h_n C_tn + D_d u_t) silu(z_t)

with the state h (N,) in a small local array, the loop over n one vector operation. The kernel
writes only out, the last state and h at the start of every chunk of CHUNK steps
(B, D, L / CHUNK, N): nothing of size (B, D, L, N).

Backward, per (b, d), chunks in reverse: recompute the chunk's decays exp(Δ_t A) and states from
its saved start into local (CHUNK, N) buffers, then run the adjoint backwards in time,

    λ_t = g_t C_t + exp(Δ_{t+1} A) λ_{t+1}     (λ_{L-1} also gets dL/dh_{L-1}),  g_t = dL/dy_t
    dL/dC_t += g_t h_t,   dL/dB_t += λ_t Δ_t u_t,   dL/d(Δ_t A) = λ_t exp(Δ_t A) h_{t-1}

Gradients of B and C shared across channels ((batch, groups, N, L)) are summed over a block of
channels into a (batch, blocks, L, N) buffer, blocks never straddling a group, then over blocks in
torch; per-channel ones (A, D, delta_bias, time-invariant B and C) go to (batch, D, ...) buffers
summed over batch in torch. N is padded to whole vector lanes with inert states (A = B = C = 0).

The library is compiled for this machine's CPU (-march=native) into a per-user cache, named by a
hash of the source, the flags and the CPU, so an edit, a new flag or another CPU builds anew.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import math
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

SOURCE = Path(__file__).with_name("scan_cpu.cpp")
FLAGS = (
    "-O3",
    "-march=native",
    "-fopenmp",
    "-ffp-contract=fast",
    "-fno-math-errno",
    "-fassociative-math",
    "-fno-signed-zeros",
    "-fno-trapping-math",
)
# SSMBENCH_SCAN_DEBUG=1: a checked build instead, AddressSanitizer and UBSan (stops at the first
# out-of-bounds access or undefined operation) and libstdc++'s assertions; it loads only into a
# process that runs the ASan runtime first: LD_PRELOAD=$(c++ -print-file-name=libasan.so).
DEBUG = "SSMBENCH_SCAN_DEBUG"
DEBUG_FLAGS = (
    "-O1",
    "-g",
    "-march=native",
    "-fopenmp",
    "-fsanitize=address,undefined",
    "-fno-sanitize-recover=all",
    "-fno-omit-frame-pointer",
    "-D_GLIBCXX_ASSERTIONS",
)
CHUNK = 64  # as in scan_cpu.cpp: steps whose states the backward recomputes at once
LANES = 16  # N is padded to a multiple: the loops over the states are whole vector operations


class _Layout(ctypes.Structure):  # scan_cpu.cpp's Layout, of B or C
    _fields_ = [(name, ctypes.c_int64) for name in ("batch", "groups", "time", "vary")]


class _Shape(ctypes.Structure):  # scan_cpu.cpp's Shape
    _fields_ = [(name, ctypes.c_int64) for name in ("batch", "dim", "length", "n")]
    _fields_ += [("b", _Layout), ("c", _Layout)]
    flags = ("block", "softplus", "has_z", "negative", "threads")
    _fields_ += [(name, ctypes.c_int64) for name in flags]


class _Args(ctypes.Structure):  # scan_cpu.cpp's Args: data pointers, inputs then outputs
    _fields_ = [
        (name, ctypes.c_void_p)
        for name in ("u", "delta", "A", "Bx", "Cx", "Dv", "z", "bias", "g_out", "g_last", "out")
        + ("y", "starts", "last", "g_u", "g_delta", "g_z", "g_Bx", "g_Cx", "g_A", "g_D", "g_bias")
    ]


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/ssmbench (default ~/.cache/ssmbench), or a per-user temp directory when
    that cannot be written."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ssmbench"
    try:
        base.mkdir(parents=True, exist_ok=True)
        if os.access(base, os.W_OK):
            return base
    except OSError:
        pass
    fallback = Path(tempfile.gettempdir()) / f"ssmbench-{os.getuid()}"
    fallback.mkdir(mode=0o700, exist_ok=True)
    return fallback


def _cpu() -> str:
    """What -march=native depends on: the CPU's model and feature flags (Linux), else its name."""
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.machine() + platform.processor()
    wanted = [line for line in info if line.startswith(("model name", "flags"))]
    return "\n".join(wanted[:2])


def debugging() -> bool:
    """Whether $SSMBENCH_SCAN_DEBUG asks for the checked build."""
    return os.environ.get(DEBUG, "") not in ("", "0")


def build(compiler: str | None = None) -> Path:
    """The shared library of scan_cpu.cpp for this CPU (the checked one when debugging()),
    compiled once into cache_dir(); raises RuntimeError with one line saying why it cannot be
    built."""
    compiler = compiler or os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        raise RuntimeError("no C++ compiler found: install g++ (or clang++), or set $CXX")
    flags = DEBUG_FLAGS if debugging() else FLAGS
    source = SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([source, " ".join(flags).encode(), _cpu().encode()]))
    target = cache_dir() / f"scan_cpu-{key.hexdigest()[:16]}.so"
    if target.exists():
        return target
    partial = target.with_suffix(f".{os.getpid()}.tmp")  # then renamed: builds may race
    command = [compiler, *flags, "-std=c++17", "-shared", "-fPIC", "-o", str(partial), str(SOURCE)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise RuntimeError(f"{compiler} could not compile {SOURCE.name}: {error}") from None
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or ["no message"])[0]
        raise RuntimeError(f"{compiler} failed on {SOURCE.name}: {first}")
    os.replace(partial, target)
    return target


@functools.cache
def _library() -> ctypes.CDLL | RuntimeError:
    """The loaded kernels, or the error that says why there are none."""
    if debugging() and not hasattr(ctypes.CDLL(None), "__asan_init"):
        return RuntimeError(
            f"{DEBUG} is set but the ASan runtime is not loaded: "
            "run with LD_PRELOAD=$(c++ -print-file-name=libasan.so), or unset it"
        )
    try:
        library = ctypes.CDLL(str(build()))
    except (RuntimeError, OSError) as error:
        return RuntimeError(str(error))
    for name in ("scan_forward_f32", "scan_forward_f64", "scan_backward_f32", "scan_backward_f64"):
        getattr(library, name).argtypes = [ctypes.POINTER(_Shape), ctypes.POINTER(_Args)]
        getattr(library, name).restype = None
    return library


@torch.compiler.assume_constant_result  # torch.compile: read once while tracing, not traced
def available() -> bool:
    """Whether the fused kernels can run (the library builds and loads)."""
    return not isinstance(_library(), RuntimeError)


def why_unavailable() -> str:
    """One line: why the fused kernels cannot run ('' when they can)."""
    library = _library()
    return str(library) if isinstance(library, RuntimeError) else ""


def _call(direction: str, shape: _Shape, dtype: torch.dtype, **arrays: np.ndarray) -> None:
    """Runs scan_{direction}_{f32|f64} on the arrays (missing ones are null)."""
    pointers = _Args(**{name: x.ctypes.data for name, x in arrays.items()})
    suffix = "f32" if dtype == torch.float32 else "f64"
    getattr(_library(), f"scan_{direction}_{suffix}")(ctypes.byref(shape), ctypes.byref(pointers))


def _shape(inputs: dict[str, np.ndarray], B, C, block, softplus, has_z, negative) -> _Shape:
    """The kernels' Shape for inputs["u"] (B, D, L) and inputs["Bx"], ["Cx"] (Bb, G, Lt, padded
    N), B and C as given (time-varying unless (D, N): said, as Lt is 1 either way at L = 1)."""
    (batch, dim, length), n = inputs["u"].shape, inputs["Bx"].shape[-1]
    b, c = (_Layout(*inputs[k].shape[:3], X.dim() > 2) for k, X in (("Bx", B), ("Cx", C)))
    flags = (block, softplus, has_z, negative, torch.get_num_threads())
    return _Shape(batch, dim, length, n, b, c, *flags)


def _array(x: torch.Tensor, dtype: torch.dtype) -> np.ndarray:
    """x as a contiguous array in dtype, sharing memory when it already is one."""
    return x.detach().to(dtype).contiguous().numpy()


def _padded(n: int) -> int:
    """N rounded up to whole vector lanes; the kernels see zeros in the extra states (A = 0,
    B = C = 0: their states stay 0 and add nothing)."""
    return -(-n // LANES) * LANES


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


def _kernel_inputs(u, delta, A, B, C, D, z, delta_bias, dtype) -> dict[str, np.ndarray]:
    """The kernels' u, delta, A, Bx, Cx, Dv, z, bias: D and bias zeros when None, z a dummy."""
    zeros = torch.zeros(u.shape[1])  # (D,)
    return dict(
        u=_array(u, dtype),
        delta=_array(delta, dtype),
        A=_pad_states(A, dtype),
        Bx=_bc(B, dtype),
        Cx=_bc(C, dtype),
        Dv=_array(zeros if D is None else D, dtype),
        z=_array(torch.zeros(1, 1, 1) if z is None else z, dtype),
        bias=_array(zeros if delta_bias is None else delta_bias, dtype),
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
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, negative, dtype):
        (batch, dim, length), n = u.shape, _padded(A.shape[1])
        out = torch.empty(batch, dim, length, dtype=dtype)
        starts = torch.empty(batch, dim, -(-length // CHUNK), n, dtype=dtype)
        last = torch.empty(batch, dim, n, dtype=dtype)
        y = (
            torch.empty(batch, dim, length, dtype=dtype) if z is not None else last
        )  # before the gate
        inputs = _kernel_inputs(u, delta, A, B, C, D, z, delta_bias, dtype)
        shape = _shape(inputs, B, C, 1, delta_softplus, z is not None, negative)
        outputs = dict(out=out.numpy(), y=y.numpy(), starts=starts.numpy(), last=last.numpy())
        _call("forward", shape, dtype, **inputs, **outputs)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, starts, y)
        ctx.delta_softplus, ctx.negative, ctx.dtype = delta_softplus, negative, dtype
        return out.to(u.dtype), last[..., : A.shape[1]]

    @staticmethod
    @once_differentiable
    def backward(ctx, g_out, g_last):
        u, delta, A, B, C, D, z, delta_bias, starts, y = ctx.saved_tensors
        dtype, (batch, dim, length), n = ctx.dtype, u.shape, _padded(A.shape[1])
        block = _block(dim, batch, B, C)
        empty = functools.partial(torch.empty, dtype=dtype)  # the kernel writes every element
        g_u, g_delta = empty(batch, dim, length), empty(batch, dim, length)
        g_z = empty(batch, dim, length) if z is not None else empty(1, 1, 1)
        g_B, g_C = (  # partial sums, accumulated into
            torch.zeros(batch, dim, 1, n, dtype=dtype)
            if X.dim() == 2
            else torch.zeros(batch, dim // block, length, n, dtype=dtype)
            for X in (B, C)
        )
        g_A, g_D, g_bias = empty(batch, dim, n), empty(batch, dim), empty(batch, dim)
        inputs = _kernel_inputs(u, delta, A, B, C, D, z, delta_bias, dtype)
        has_z = z is not None
        shape = _shape(inputs, B, C, block, ctx.delta_softplus, has_z, ctx.negative)
        cotangents = dict(g_out=_array(g_out, dtype), g_last=_pad_states(g_last, dtype))
        saved = dict(starts=starts.numpy(), y=y.numpy())
        grads = dict(g_u=g_u, g_delta=g_delta, g_z=g_z, g_Bx=g_B, g_Cx=g_C, g_A=g_A, g_D=g_D)
        grads["g_bias"] = g_bias
        outputs = {name: g.numpy() for name, g in grads.items()}
        _call("backward", shape, dtype, **inputs, **saved, **cotangents, **outputs)
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
            None,
        )
