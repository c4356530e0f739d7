"""Selective scan: every backend against the reference, the reference against a closed form,
and backend resolution."""

import functools
import itertools
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from ssmbench.ops import scan, scan_fused
from ssmbench.ops.scan import (
    resolve_backend,
    selective_scan,
    selective_scan_reference,
    set_default_backend,
)

# Every fast backend runs every test below against the reference ('cuda' needs a GPU).
PATHS = ["torch-sequential", "torch-chunked", "cpp"]
BC_SHAPES = ["(D,N)", "(B,N,L)", "(B,1,N,L)", "(B,2,N,L)"]
OPTIONS = ["z", "D", "delta_bias", "delta_softplus", "return_last_state", "negative_eigenvalues"]


def _asan_runtime() -> Path:
    """The compiler's AddressSanitizer runtime, which the cpp kernels' checked build needs (a
    relative name when the compiler has none)."""
    compiler = shutil.which("c++") or shutil.which("g++") or "c++"
    found = subprocess.run([compiler, "-print-file-name=libasan.so"], capture_output=True)
    return Path(found.stdout.decode().strip() or "libasan.so")


def make_inputs(bc_shape, options, batch=2, dim=4, n=3, length=11, dtype=torch.float64, seed=0):
    """Random inputs of selective_scan as (args, kwargs); A < 0, delta > 0 unless softplus."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype)

    bc = {
        "(D,N)": (dim, n),
        "(B,N,L)": (batch, n, length),
        "(B,1,N,L)": (batch, 1, n, length),
        "(B,2,N,L)": (batch, 2, n, length),
    }[bc_shape]
    softplus = "delta_softplus" in options
    delta = randn(batch, dim, length) if softplus else torch.rand(batch, dim, length, generator=gen)
    args = [
        randn(batch, dim, length),  # u
        delta.to(dtype),
        -torch.rand(dim, n, generator=gen, dtype=dtype) - 0.1,  # A
        randn(*bc),
        randn(*bc),
    ]
    kwargs = {
        "D": randn(dim) if "D" in options else None,
        "z": randn(batch, dim, length) if "z" in options else None,
        "delta_bias": randn(dim) * 0.3 if "delta_bias" in options else None,
        "delta_softplus": softplus,
        "return_last_state": "return_last_state" in options,
        "negative_eigenvalues": "negative_eigenvalues" in options,
    }
    return args, kwargs


def map_tensors(fn, args, kwargs):
    """fn applied to every tensor among args (all tensors) and kwargs."""
    return [fn(x) for x in args], {k: fn(v) if torch.is_tensor(v) else v for k, v in kwargs.items()}


def outputs_and_grads(fn, args, kwargs, seed=1):
    """Outputs of fn and the gradients of a fixed random linear loss w.r.t. every tensor input."""
    inputs, kw = map_tensors(lambda x: x.detach().clone().requires_grad_(), args, kwargs)
    outputs = fn(*inputs, **kw)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    gen = torch.Generator().manual_seed(seed)
    weights = [torch.randn(o.shape, generator=gen, dtype=torch.float64) for o in outputs]
    loss = sum((o.double() * w).sum() for o, w in zip(outputs, weights, strict=True))
    tensors = inputs + [v for v in kw.values() if torch.is_tensor(v)]
    return list(outputs) + list(torch.autograd.grad(loss, tensors))


def assert_all_close(actual, expected, rtol):
    """Each pair agrees to rtol relative to the largest magnitude of the expected tensor."""
    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert a.shape == e.shape, f"item {i}: shape {a.shape} != {e.shape}"
        assert torch.isfinite(a).all(), f"item {i}: not finite"
        scale = e.double().abs().max().item() or 1.0
        error = (a.double() - e.double()).abs().max().item()
        assert error <= rtol * scale, f"item {i}: max error {error:.3g}, scale {scale:.3g}"


def torch_path(path):
    return lambda *args, **kwargs: selective_scan(*args, **kwargs, backend=path)


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 4 steps of make_inputs' default sizes, so that length 11 has three, the last one
    short ('torch' paths; the cpp kernels' chunks are fixed, see test_fused_chunk_boundaries)."""
    elements = 4 * 2 * 3 * 4  # T B N D
    monkeypatch.setitem(scan.CHUNK_ELEMENTS, "torch-sequential", elements)
    monkeypatch.setitem(scan.CHUNK_ELEMENTS, "torch-chunked", elements)


# The 'torch' paths against the reference


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("bc_shape", BC_SHAPES)
@pytest.mark.parametrize(
    "options",
    [c for r in range(len(OPTIONS) + 1) for c in itertools.combinations(OPTIONS, r)],
    ids=lambda c: "+".join(c) or "plain",
)
def test_matches_reference_float64(small_chunks, path, bc_shape, options):
    args, kwargs = make_inputs(bc_shape, options)
    expected = outputs_and_grads(selective_scan_reference, args, kwargs)
    assert_all_close(outputs_and_grads(torch_path(path), args, kwargs), expected, rtol=1e-10)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("bc_shape", BC_SHAPES)
def test_matches_reference_float32_default_chunks(path, bc_shape):
    """Default chunks: three of 256 steps for torch-sequential, ten of 64 for cpp, the last one
    short."""
    args, kwargs = make_inputs(bc_shape, OPTIONS, 4, 32, 16, length=600, dtype=torch.float32)
    expected = outputs_and_grads(selective_scan_reference, args, kwargs)
    assert_all_close(outputs_and_grads(torch_path(path), args, kwargs), expected, rtol=1e-5)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("decay", ["vanishing", "near_one"])
def test_extreme_decays(small_chunks, path, dtype, decay):
    """exp(Δ A) underflowing to 0 (Δ|A| ~ 1e3) and within 1e-6 of 1 (Δ|A| ~ 1e-6)."""
    args, kwargs = make_inputs("(B,N,L)", ["D", "return_last_state"], length=40, dtype=dtype)
    u, delta, A, B, C = args
    if decay == "vanishing":
        delta, A = delta * 0 + 20, A * 50
    else:
        delta, A = delta * 1e-3, A * 1e-3
    args = [u, delta, A, B, C]
    expected = outputs_and_grads(selective_scan_reference, args, kwargs)
    rtol = 1e-10 if dtype == torch.float64 else 1e-5
    assert_all_close(outputs_and_grads(torch_path(path), args, kwargs), expected, rtol=rtol)


@pytest.mark.parametrize("path", PATHS)
def test_bfloat16_inputs(small_chunks, path):
    """bf16 inputs, float32 arithmetic: compared with the reference on the same rounded inputs in
    float32; out and gradients come back in bf16, the last state in float32."""
    args, kwargs = make_inputs("(B,N,L)", OPTIONS, length=40, dtype=torch.float32)
    args_bf16, kwargs_bf16 = map_tensors(torch.Tensor.bfloat16, args, kwargs)
    actual = outputs_and_grads(torch_path(path), args_bf16, kwargs_bf16)
    assert [x.dtype for x in actual[:2]] == [torch.bfloat16, torch.float32]
    assert all(g.dtype == torch.bfloat16 for g in actual[2:])
    rounded = map_tensors(torch.Tensor.float, args_bf16, kwargs_bf16)
    assert_all_close(actual, outputs_and_grads(selective_scan_reference, *rounded), rtol=2e-2)


@pytest.mark.parametrize("path", PATHS)
def test_strided_inputs(small_chunks, path):
    """Inputs laid out as the S6 layer passes them, x.mT with x (B, L, D) contiguous."""
    args, kwargs = make_inputs("(B,N,L)", OPTIONS, length=20)
    strided = map_tensors(lambda x: x.mT.contiguous().mT if x.dim() == 3 else x, args, kwargs)
    assert not strided[0][0].is_contiguous()
    expected = outputs_and_grads(selective_scan_reference, args, kwargs)
    assert_all_close(outputs_and_grads(torch_path(path), *strided), expected, rtol=1e-10)


# The default transitions (the signed ones are tested at lengths 11 and 70, across chunks)
EVERY_LENGTH_OPTIONS = [o for o in OPTIONS if o != "negative_eigenvalues"]
# (batch, dim) where the cpp backward's blocks of channels are 1 wide, and > 1, at 1 and 2 threads
WIDTHS = {"block-1": (2, 2), "block>1": (1, 16)}


@pytest.fixture(params=[1, 2], ids=lambda n: f"{n}-threads")
def threads(request):
    """torch's intra-op threads (which the cpp kernels use) set for one test, then restored."""
    saved = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(saved)


@functools.cache
def reference_at(bc_shape: str, width: str, length: int) -> tuple:
    """make_inputs at a width and length, and the reference's outputs and gradients on them
    (computed once: every backend and thread count compares with the same)."""
    batch, dim = WIDTHS[width]
    args, kwargs = make_inputs(bc_shape, EVERY_LENGTH_OPTIONS, batch, dim, n=3, length=length)
    return args, kwargs, outputs_and_grads(selective_scan_reference, args, kwargs)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("bc_shape", BC_SHAPES)
@pytest.mark.parametrize("path", PATHS)
def test_every_length_and_layout(monkeypatch, threads, path, bc_shape, width):
    """Every backend at every L in 1 ... 130: either side of the chunks of 64 steps (the cpp
    backward's, and the torch paths' set to the same), L = 1 included, where a time-varying B or
    C has one row as a time-invariant one does; outputs and every gradient."""
    batch, dim = WIDTHS[width]
    if path in scan.CHUNK_ELEMENTS:
        monkeypatch.setitem(scan.CHUNK_ELEMENTS, path, 64 * batch * dim * 3)  # 64 steps of N = 3
    if bc_shape != "(D,N)":  # time-invariant B and C have no blocks
        B = reference_at(bc_shape, width, 1)[0][3]
        assert (scan_fused._block(dim, batch, B, B) == 1) == (width == "block-1")
    for length in range(1, 131):
        args, kwargs, expected = reference_at(bc_shape, width, length)
        actual = outputs_and_grads(torch_path(path), args, kwargs)
        try:
            assert_all_close(actual, expected, rtol=1e-10)
        except AssertionError as error:
            raise AssertionError(f"L = {length}: {error}") from None


@pytest.mark.slow
def test_every_length_and_layout_under_sanitizers():
    """The test above on the cpp backend's checked build (SSMBENCH_SCAN_DEBUG=1: ASan, UBSan,
    libstdc++ assertions), in a process that loads the ASan runtime first; uncaptured (-s), so
    that a sanitizer's report, printed as the process dies, reaches the assertion."""
    runtime = _asan_runtime()
    if not runtime.is_file():
        pytest.skip(f"the C++ compiler has no AddressSanitizer runtime ({runtime})")
    env = {
        **os.environ,
        scan_fused.DEBUG: "1",
        "LD_PRELOAD": str(runtime),
        "ASAN_OPTIONS": "detect_leaks=0",  # Python's and torch's allocations live to the end
    }
    command = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", __file__]
    command += ["-k", "test_every_length_and_layout and cpp", "-m", "not slow"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "16 passed" in done.stdout


@pytest.mark.parametrize("bc_shape", ["(B,N,L)", "(B,2,N,L)", "(D,N)"])
def test_fused_small_batch_splits_channels(bc_shape):
    """Batch 1: the backward splits the channels into blocks (each within one group) whose
    partial gradients of B and C are summed afterwards."""
    args, kwargs = make_inputs(bc_shape, OPTIONS, batch=1, dim=16, n=5, length=20)
    assert scan_fused._block(16, 1, args[3], args[4]) < (16 if bc_shape != "(B,2,N,L)" else 8)
    expected = outputs_and_grads(selective_scan_reference, args, kwargs)
    assert_all_close(outputs_and_grads(torch_path("cpp"), args, kwargs), expected, rtol=1e-10)


def test_fused_block_stays_within_a_group():
    B1, B4 = torch.zeros(2, 1, 3, 5), torch.zeros(2, 4, 3, 5)
    assert scan_fused._block(64, 64, B1, B1) == 64  # enough batch items: one block per batch row
    assert scan_fused._block(64, 64, B4, B1) == 16  # one group of B per block
    assert scan_fused._block(64, 1, torch.zeros(64, 3), torch.zeros(64, 3)) == 1
    for batch in (1, 2, 3):
        assert 16 % scan_fused._block(64, batch, B4, B4) == 0


@pytest.mark.parametrize("n", [1, 16, 17, 40])
def test_fused_state_sizes(n):
    """N = 16 runs a build of its own (the states one vector register); other N are padded to a
    multiple of 16 with inert states."""
    args, kwargs = make_inputs("(B,N,L)", OPTIONS, n=n, length=70)
    expected = outputs_and_grads(selective_scan_reference, args, kwargs)
    assert_all_close(outputs_and_grads(torch_path("cpp"), args, kwargs), expected, rtol=1e-10)


@pytest.fixture
def build_cache(monkeypatch, tmp_path):
    """An empty kernel cache under tmp_path; the real compiler."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("CXX", raising=False)
    return tmp_path / "ssmbench"


def test_build_is_cached_per_source_flags_and_cpu(build_cache, monkeypatch):
    built = scan_fused.build()
    assert built.parent == build_cache and built.suffix == ".so"
    assert not list(build_cache.glob("*.tmp"))  # compiled under a temporary name, then renamed
    compiles, run = [], scan_fused.subprocess.run
    monkeypatch.setattr(
        scan_fused.subprocess, "run", lambda *a, **k: compiles.append(a) or run(*a, **k)
    )
    assert scan_fused.build() == built and not compiles  # found in the cache
    monkeypatch.setattr(scan_fused, "_cpu", lambda: "another CPU")
    assert scan_fused.build() != built and len(compiles) == 1  # -march=native: built anew


def test_build_failures_are_one_line(build_cache, monkeypatch):
    monkeypatch.setattr(scan_fused.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match=r"^no C\+\+ compiler found: install g\+\+"):
        scan_fused.build()
    broken = build_cache.parent / "broken.cpp"
    broken.write_text("this is not C++\n")
    monkeypatch.setattr(scan_fused, "SOURCE", broken)
    with pytest.raises(RuntimeError, match=r"^\S+ failed on broken.cpp: .*error") as error:
        scan_fused.build("g++")
    assert "\n" not in str(error.value)
    with pytest.raises(RuntimeError, match="could not compile broken.cpp"):
        scan_fused.build(str(build_cache.parent / "no-such-compiler"))


def test_cache_falls_back_to_a_private_temp_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(scan_fused.os, "access", lambda path, mode: False)
    fallback = scan_fused.cache_dir()
    assert str(fallback).startswith(tempfile.gettempdir()) and str(os.getuid()) in fallback.name


# The reference against the recurrence written out as a sum


def closed_form(u, delta, A, B, C, D, z):
    """y[b, d, t] = silu(z) (sum_{s<=t} sum_n C_t[n] prod_{s<r<=t} exp(Δ_r A[d, n]) Δ_s B_s[n] u_s
    + D u_t), with B, C (B, G, N, L), channel d in group d // (dim // G); also h_{L-1}."""
    batch, dim, length = u.shape
    n_state, per_group = A.shape[1], dim // B.shape[1]
    y = torch.zeros_like(u)
    last = torch.zeros(batch, dim, n_state, dtype=u.dtype)
    for b, d, n, t in itertools.product(range(batch), range(dim), range(n_state), range(length)):
        g = d // per_group
        h_t = 0.0
        for s in range(t + 1):
            decay = math.exp(A[d, n] * delta[b, d, s + 1 : t + 1].sum())
            h_t += decay * delta[b, d, s] * B[b, g, n, s] * u[b, d, s]
        y[b, d, t] += C[b, g, n, t] * h_t
        if t == length - 1:
            last[b, d, n] = h_t
    y += D[:, None] * u
    return y * z * torch.sigmoid(z), last


@pytest.mark.parametrize("bc_shape", ["(B,2,N,L)", "(D,N)"])
def test_reference_matches_closed_form(bc_shape):
    args, kwargs = make_inputs(bc_shape, ["z", "D"], batch=2, dim=4, n=2, length=5)
    u, delta, A, B, C = args
    out, last = selective_scan_reference(*args, **{**kwargs, "return_last_state": True})
    if bc_shape == "(D,N)":  # one group per channel, constant over batch and time
        B, C = (X[None, :, :, None].expand(2, 4, 2, 5) for X in (B, C))
    y, h = closed_form(u, delta, A, B, C, kwargs["D"], kwargs["z"])
    torch.testing.assert_close(out, y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(last, h, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("path", ["reference", *PATHS])
def test_negative_eigenvalues_flip_the_state(path):
    """With 2 exp(Δ A) - 1 and exp(Δ A) ~ 0 the transition is -1: one impulse then alternates
    in sign; the default transition exp(Δ A) ~ 0 forgets it at once."""
    u = torch.zeros(1, 1, 6, dtype=torch.float64)
    u[..., 0] = 1.0
    delta, A, B = (
        torch.ones_like(u),
        torch.full((1, 1), -60.0, dtype=torch.float64),
        torch.ones(1, 1),
    )
    B = B.double()
    flipped = selective_scan(u, delta, A, B, B, negative_eigenvalues=True, backend=path)
    assert flipped.flatten().tolist() == pytest.approx([1, -1, 1, -1, 1, -1])
    forgets = selective_scan(u, delta, A, B, B, backend=path)
    assert forgets.flatten().tolist() == pytest.approx([1, 0, 0, 0, 0, 0])


def test_reference_backward_is_linear_in_length():
    """The reference unbinds the time axis once instead of indexing each step, whose backward
    would build a full-size zero tensor per step (quadratic in L)."""
    args, kwargs = make_inputs("(B,N,L)", ["z", "D"], length=16)
    out = selective_scan_reference(*[x.requires_grad_() for x in args], **kwargs)
    names, stack, seen = [], [out.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.append(type(node).__name__)
        stack.extend(next_node for next_node, _ in node.next_functions)
    assert "UnbindBackward0" in names
    assert not {"SelectBackward0", "SliceBackward0", "IndexBackward0"} & set(names)


# Backend resolution


@pytest.fixture
def clean_backend(monkeypatch):
    monkeypatch.delenv(scan.ENV_VAR, raising=False)
    yield monkeypatch
    set_default_backend("auto")


def test_auto_picks_by_device(clean_backend):
    assert resolve_backend("cpu") == "cpp"
    clean_backend.setattr(scan_fused, "available", lambda: False)
    clean_backend.setattr(scan_fused, "why_unavailable", lambda: "no C++ compiler found")
    assert resolve_backend("cpu") == scan.TORCH_PATH_BY_DEVICE["cpu"]
    with pytest.raises(ValueError, match="'cpp' cannot run here: no C\\+\\+ compiler found"):
        resolve_backend("cpu", "cpp")
    clean_backend.setattr(scan, "_mamba_selective_scan_fn", lambda: None)
    assert resolve_backend("cuda") == scan.TORCH_PATH_BY_DEVICE["cuda"]
    clean_backend.setattr(scan, "_mamba_selective_scan_fn", lambda: object())
    assert resolve_backend("cuda") == "cuda-mamba_ssm"
    assert resolve_backend("cpu") == scan.TORCH_PATH_BY_DEVICE["cpu"]


def test_cpp_needs_cpu_tensors(clean_backend):
    with pytest.raises(ValueError, match="CPU tensors"):
        resolve_backend("cuda", "cpp")


def test_priority_argument_then_default_then_env(clean_backend):
    clean_backend.setenv(scan.ENV_VAR, "reference")
    assert resolve_backend("cpu") == "reference"
    set_default_backend("torch-chunked")
    assert resolve_backend("cpu") == "torch-chunked"
    assert resolve_backend("cpu", "torch-sequential") == "torch-sequential"
    assert resolve_backend("cpu", "auto") == "torch-chunked"  # 'auto' defers to the next level
    set_default_backend("auto")
    assert resolve_backend("cpu") == "reference"
    clean_backend.setenv(scan.ENV_VAR, "auto")
    assert resolve_backend("cpu") == "cpp"


def test_selective_scan_runs_the_resolved_backend(clean_backend):
    args, kwargs = make_inputs("(B,N,L)", ["z"])
    clean_backend.setattr(scan, "selective_scan_reference", lambda *args: "reference ran")
    clean_backend.setenv(scan.ENV_VAR, "reference")
    assert selective_scan(*args, **kwargs) == "reference ran"
    assert torch.is_tensor(selective_scan(*args, **kwargs, backend="torch"))


def test_unknown_backend_names_the_valid_ones(clean_backend):
    with pytest.raises(ValueError, match="torch-sequential"):
        resolve_backend("cpu", "triton")
    with pytest.raises(ValueError, match="set_default_backend"):
        set_default_backend("fast")
    clean_backend.setenv(scan.ENV_VAR, "fast")
    with pytest.raises(ValueError, match=scan.ENV_VAR):
        resolve_backend("cpu")


def test_forced_cuda_says_what_is_missing(clean_backend):
    clean_backend.setattr(scan, "_mamba_selective_scan_fn", lambda: None)
    with pytest.raises(ValueError, match=r'pip install "ssmbench\[cuda\]"'):
        resolve_backend("cuda", "cuda")
    clean_backend.setattr(scan, "_mamba_selective_scan_fn", lambda: object())
    with pytest.raises(ValueError, match="CUDA tensors"):
        resolve_backend("cpu", "cuda")


@pytest.mark.parametrize(
    "change",
    [
        {"A": torch.zeros(5, 3)},
        {"B": torch.zeros(2, 3, 10)},
        {"B": torch.zeros(2, 3, 3, 11)},
        {"z": torch.zeros(2, 4, 10)},
        {"D": torch.zeros(3)},
    ],
    ids=["A", "B-length", "B-groups", "z", "D"],
)
@pytest.mark.parametrize("backend", ["reference", "torch", "cpp"])
def test_bad_shapes_raise(change, backend):
    args, kwargs = make_inputs("(B,N,L)", ["z", "D"])
    names = ["u", "delta", "A", "B", "C"]
    args = [change.get(name, x) for name, x in zip(names, args, strict=True)]
    kwargs = {k: change.get(k, v) for k, v in kwargs.items()}
    with pytest.raises(ValueError, match=next(iter(change))):
        selective_scan(*args, **kwargs, backend=backend)


def test_checked_build_needs_the_asan_runtime(monkeypatch):
    monkeypatch.setenv(scan_fused.DEBUG, "1")
    error = scan_fused._library.__wrapped__()  # uncached: the switch is read on each load
    assert isinstance(error, RuntimeError)
    assert "LD_PRELOAD=$(c++ -print-file-name=libasan.so)" in str(error)
