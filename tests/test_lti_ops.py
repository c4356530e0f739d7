"""LTI SSM ops (HiPPO, discretization, kernels, FFT convolution) against plain references."""

import math

import pytest
import torch

from ssmbench.ops.discretize import discretize_dense, discretize_diagonal
from ssmbench.ops.hippo import hippo_legs, hippo_legs_dplr, s4d_diagonal
from ssmbench.ops.kernels import (
    dense_kernel,
    dplr_kernel,
    fft_conv,
    vandermonde_kernel,
)

F64, C128 = torch.float64, torch.complex128


def assert_matches_reference(fast, reference, inputs, atol=1e-10):
    """fast(*inputs) == reference(*inputs), outputs and gradients of a random linear loss."""
    inputs = [x.detach().clone().requires_grad_() for x in inputs]
    out_fast, out_ref = fast(*inputs), reference(*inputs)
    out_fast = out_fast if isinstance(out_fast, tuple) else (out_fast,)
    out_ref = out_ref if isinstance(out_ref, tuple) else (out_ref,)
    weights = [torch.randn_like(o) for o in out_ref]
    for a, b in zip(out_fast, out_ref, strict=True):
        torch.testing.assert_close(a, b, atol=atol, rtol=0)

    def loss(outputs):
        return sum((o * w).real.sum() for o, w in zip(outputs, weights, strict=True))

    grads_fast = torch.autograd.grad(loss(out_fast), inputs, materialize_grads=True)
    grads_ref = torch.autograd.grad(loss(out_ref), inputs, materialize_grads=True)
    for a, b in zip(grads_fast, grads_ref, strict=True):
        torch.testing.assert_close(a, b, atol=atol, rtol=0)


def loop_kernel(dA, dB, C, L):
    """K[k] = Re(C dA^k dB) by a Python loop of matrix-vector products. dA (..., N, N)."""
    x, K = dB, []
    for _ in range(L):
        K.append((C * x).sum(-1))
        x = (dA @ x[..., None])[..., 0]
    K = torch.stack(K, dim=-1)
    return K.real if K.is_complex() else K


def random_stable(shape, dtype):
    """Random eigenvalues with negative real part."""
    real = -torch.rand(shape, dtype=F64) * 2 - 0.1
    if dtype == F64:
        return real
    return torch.complex(real, torch.randn(shape, dtype=F64) * 5)


# HiPPO and initializations


@pytest.mark.parametrize("N", [1, 5, 16])
def test_hippo_legs_matches_definition(N):
    A, B = hippo_legs(N)
    assert A.dtype == F64 and A.shape == (N, N) and B.shape == (N,)
    for n in range(N):
        assert B[n] == pytest.approx(math.sqrt(2 * n + 1), abs=1e-14)
        for k in range(N):
            if n > k:
                expected = -math.sqrt(2 * n + 1) * math.sqrt(2 * k + 1)
            elif n == k:
                expected = -(n + 1)
            else:
                expected = 0.0
            assert A[n, k] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("N", [2, 8, 64])
def test_hippo_legs_dplr_reconstructs_hippo(N):
    A, B = hippo_legs(N)
    Lambda, P, B_diag, V = hippo_legs_dplr(N)
    eye = torch.eye(N, dtype=C128)
    torch.testing.assert_close(V.conj().T @ V, eye, atol=1e-12, rtol=0)
    A_rebuilt = V @ (torch.diag(Lambda) - P[:, None] * P.conj()[None, :]) @ V.conj().T
    torch.testing.assert_close(A_rebuilt, A.to(C128), atol=1e-10, rtol=0)
    torch.testing.assert_close(V @ B_diag, B.to(C128), atol=1e-10, rtol=0)
    # P is sqrt(n + 1/2) in the original basis; modes N/2 + n are conjugates of modes n
    p = torch.sqrt(torch.arange(N, dtype=F64) + 0.5).to(C128)
    torch.testing.assert_close(V @ P, p, atol=1e-10, rtol=0)
    M = N // 2
    assert torch.all(Lambda.real == -0.5) and torch.all(Lambda.imag[:M] > 0)
    for x in (Lambda, P, B_diag, V.T):
        torch.testing.assert_close(x[M:], x[:M].conj(), atol=0, rtol=0)


def test_s4d_diagonal_matches_formulas():
    N = 8
    real, inv, lin = (s4d_diagonal(N, kind) for kind in ("real", "inv", "lin"))
    assert real.shape == (N,) and inv.shape == lin.shape == (N // 2,)
    for n in range(N):
        assert real[n] == -(n + 1)
    for n in range(N // 2):
        assert inv[n] == pytest.approx(complex(-0.5, N / math.pi * (N / (2 * n + 1) - 1)))
        assert lin[n] == pytest.approx(complex(-0.5, math.pi * n))


@pytest.mark.parametrize(
    "call",
    [
        lambda: s4d_diagonal(8, "legs"),
        lambda: s4d_diagonal(7, "inv"),
        lambda: hippo_legs_dplr(7),
        lambda: hippo_legs(0),
        lambda: discretize_diagonal(torch.ones(2), torch.ones(2), torch.ones(()), "euler"),
        lambda: dense_kernel(torch.eye(2), torch.ones(2), torch.ones(2), 0),
        lambda: fft_conv(torch.ones(2, 3, 5), torch.ones(3, 4)),
    ],
)
def test_bad_arguments_raise_value_error(call):
    with pytest.raises(ValueError):
        call()


# Discretization


def reference_dense(A, B, dt, method):
    """Textbook formulas with explicit inverses."""
    eye = torch.eye(A.shape[-1], dtype=A.dtype)
    dt = dt[..., None, None]
    if method == "zoh":
        dA = torch.linalg.matrix_exp(dt * A)
        return dA, (torch.linalg.inv(A) @ (dA - eye) @ B[..., None])[..., 0]
    inverse = torch.linalg.inv(eye - dt / 2 * A)
    return inverse @ (eye + dt / 2 * A), (inverse @ (dt * B[..., None]))[..., 0]


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
@pytest.mark.parametrize("dtype", [F64, C128])
def test_discretize_dense_matches_reference(method, dtype):
    H, N = 3, 6
    A = torch.randn(H, N, N, dtype=dtype) - 3 * torch.eye(N, dtype=dtype)
    B = torch.randn(H, N, dtype=dtype)
    dt = torch.rand(H, dtype=F64) * 0.5 + 0.01
    fast = lambda A, B, dt: discretize_dense(A, B, dt, method)  # noqa: E731
    ref = lambda A, B, dt: reference_dense(A, B, dt, method)  # noqa: E731
    assert_matches_reference(fast, ref, [A, B, dt], atol=1e-9)


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
@pytest.mark.parametrize("dtype", [F64, C128])
def test_discretize_diagonal_matches_dense(method, dtype):
    H, N = 3, 6
    A, B = random_stable((H, N), dtype), torch.randn(H, N, dtype=dtype)
    dt = torch.rand(H, dtype=F64) * 0.5 + 0.01

    def fast(A, B, dt):
        dA, dB = discretize_diagonal(A, B, dt, method)
        return torch.diag_embed(dA), dB

    ref = lambda A, B, dt: reference_dense(torch.diag_embed(A), B, dt, method)  # noqa: E731
    assert_matches_reference(fast, ref, [A, B, dt], atol=1e-9)


def test_zoh_is_exact_for_constant_input():
    """x(dt) from x(0) under u = 1 by many small RK4 steps equals dA x(0) + dB."""
    N, dt, steps = 4, 0.3, 300
    A, B, x0 = (
        torch.randn(N, N, dtype=F64) - 2 * torch.eye(N, dtype=F64),
        torch.randn(N, dtype=F64),
        torch.randn(N, dtype=F64),
    )
    f = lambda x: A @ x + B  # noqa: E731
    x, h = x0, dt / steps
    for _ in range(steps):
        k1 = f(x)
        k2 = f(x + h / 2 * k1)
        k3 = f(x + h / 2 * k2)
        k4 = f(x + h * k3)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    dA, dB = discretize_dense(A, B, torch.tensor(dt, dtype=F64), "zoh")
    torch.testing.assert_close(dA @ x0 + dB, x, atol=1e-10, rtol=0)


# Kernels


@pytest.mark.parametrize("L", [1, 2, 37, 64])
@pytest.mark.parametrize("dtype", [F64, C128])
def test_vandermonde_kernel_matches_loop(L, dtype):
    H, N = 3, 5
    dA = torch.exp(0.1 * random_stable((H, N), dtype))
    dB, C = torch.randn(H, N, dtype=dtype), torch.randn(H, N, dtype=dtype)
    ref = lambda dA, dB, C: loop_kernel(torch.diag_embed(dA), dB, C, L)  # noqa: E731
    fast = lambda dA, dB, C: vandermonde_kernel(dA, dB, C, L)  # noqa: E731
    assert_matches_reference(fast, ref, [dA, dB, C])


@pytest.mark.parametrize("L", [1, 2, 37, 64])
@pytest.mark.parametrize("dtype", [F64, C128])
def test_dense_kernel_matches_loop(L, dtype):
    H, N = 3, 5
    A, B = (
        torch.randn(H, N, N, dtype=dtype) - 3 * torch.eye(N, dtype=dtype),
        torch.randn(H, N, dtype=dtype),
    )
    dA, dB = discretize_dense(A, B, torch.full((H,), 0.1, dtype=F64), "bilinear")
    C = torch.randn(H, N, dtype=dtype)
    fast = lambda dA, dB, C: dense_kernel(dA, dB, C, L)  # noqa: E731
    ref = lambda dA, dB, C: loop_kernel(dA, dB, C, L)  # noqa: E731
    assert_matches_reference(fast, ref, [dA, dB, C])


def reference_dplr_kernel(Lambda, P, B, C, dt, L):
    """Expand the conjugate pairs, build A = diag(Lambda) - P P^* densely, loop of powers."""
    Lambda, P, B, C = (torch.cat([x, x.conj()], dim=-1) for x in (Lambda, P, B, C))
    A = torch.diag_embed(Lambda) - torch.einsum("...i,...j->...ij", P, P.conj())
    dA, dB = reference_dense(A, B, dt, "bilinear")
    return loop_kernel(dA, dB, C, L)


@pytest.mark.parametrize("L", [1, 2, 37, 64])
def test_dplr_kernel_matches_loop(L):
    H, M = 3, 4
    Lambda = random_stable((H, M), C128)
    P, B, C = (torch.randn(H, M, dtype=C128) for _ in range(3))
    dt = torch.rand(H, dtype=F64) * 0.2 + 0.01
    fast = lambda *x: dplr_kernel(*x, L)  # noqa: E731
    ref = lambda *x: reference_dplr_kernel(*x, L)  # noqa: E731
    assert_matches_reference(fast, ref, [Lambda, P, B, C, dt])


def test_dplr_kernel_of_hippo_matches_dense_hippo_kernel():
    """The NPLR form of HiPPO-LegS in the diagonal basis gives the same kernel as dense HiPPO."""
    H, N, L = 3, 16, 100
    A, B = hippo_legs(N)
    Lambda, P, B_diag, V = hippo_legs_dplr(N)
    C, dt = torch.randn(H, N, dtype=F64), torch.rand(H, dtype=F64) * 0.1 + 0.001
    dA, dB = discretize_dense(A.expand(H, N, N), B.expand(H, N), dt, "bilinear")
    M = N // 2
    C_diag = (C.to(C128) @ V)[:, :M]  # y = C x = (C V) x_diag
    halves = [x[:M].expand(H, M) for x in (Lambda, P, B_diag)]
    K_dplr = dplr_kernel(*halves, C_diag, dt, L)
    torch.testing.assert_close(K_dplr, dense_kernel(dA, dB, C, L), atol=1e-10, rtol=0)


def test_fft_conv_matches_direct_causal_convolution():
    Bsz, H, L = 2, 3, 50
    u, k = torch.randn(Bsz, H, L, dtype=F64), torch.randn(H, L, dtype=F64)

    def direct(u, k):
        return torch.stack(
            [(k[:, : t + 1].flip(-1) * u[..., : t + 1]).sum(-1) for t in range(L)], dim=-1
        )

    assert_matches_reference(fft_conv, direct, [u, k])
