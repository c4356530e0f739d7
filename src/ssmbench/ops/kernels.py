"""Convolution kernels of discrete linear time-invariant SSMs, and the causal FFT convolution.

The discrete system x_k = dA x_{k-1} + dB u_k, y_k = Re(C x_k), x_{-1} = 0, is the causal
convolution y = K * u with kernel K[k] = Re(C dA^k dB), k = 0 .. L-1.
"""

import math

import torch

from ssmbench.ops.discretize import discretize_dense
from ssmbench.ops.profiling import scoped


def _check_length(L: int) -> None:
    if L < 1:
        raise ValueError(f"kernel length must be >= 1, got {L}")


@scoped("sequence op")
def vandermonde_kernel(dA: torch.Tensor, dB: torch.Tensor, C: torch.Tensor, L: int) -> torch.Tensor:
    """Diagonal dA: K[k] = Re(sum_n C_n dB_n dA_n^k). dA, dB, C (..., N) -> K (..., L) real.

    Doubling: the powers X = [1, dA, ..., dA^(m-1)] extend to [X, dA^m X], and dA^m squares,
    so ceil(log2 L) elementwise products give all L powers.
    """
    _check_length(L)
    powers = torch.ones_like(dA)[..., None]  # (..., N, 1): dA^k for k < m
    power = dA  # dA^m
    while powers.shape[-1] < L:
        powers = torch.cat([powers, power[..., None] * powers], dim=-1)  # (..., N, 2m)
        power = power * power
    K = torch.einsum("...n,...nl->...l", C * dB, powers[..., :L])
    return K.real if K.is_complex() else K


@scoped("sequence op")
def dense_kernel(dA: torch.Tensor, dB: torch.Tensor, C: torch.Tensor, L: int) -> torch.Tensor:
    """Dense dA: K[k] = Re(C dA^k dB). dA (..., N, N), dB, C (..., N) -> K (..., L) real.

    Doubling: the columns X = [dB, dA dB, ..., dA^(m-1) dB] extend to [X, dA^m X], and dA^m squares,
    so ceil(log2 L) batched matmuls give all L columns.
    """
    _check_length(L)
    columns = dB[..., None]  # (..., N, 1)
    power = dA  # dA^m with m = number of columns
    while columns.shape[-1] < L:
        columns = torch.cat([columns, power @ columns], dim=-1)  # (..., N, 2m)
        power = power @ power
    K = torch.einsum("...n,...nl->...l", C, columns[..., :L])
    return K.real if K.is_complex() else K


def conjugate_pairs(x: torch.Tensor) -> torch.Tensor:
    """(..., M) -> (..., 2M): the M modes followed by their complex conjugates."""
    return torch.cat([x, x.conj()], dim=-1)


def dplr_matrix(Lambda: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """Full state matrix diag(Lambda) - P P^* over all 2M modes from M conjugate-pair modes.

    Lambda, P (..., M) complex -> A (..., 2M, 2M) complex.
    """
    Lambda, P = conjugate_pairs(Lambda), conjugate_pairs(P)  # (..., 2M)
    return torch.diag_embed(Lambda) - P[..., :, None] * P.conj()[..., None, :]


@scoped("sequence op")
def dplr_kernel(
    Lambda: torch.Tensor,
    P: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    dt: torch.Tensor,
    L: int,
) -> torch.Tensor:
    """Kernel of the bilinear discretization of A = diag(Lambda) - P P^* (S4 algorithm).

    Lambda, P, B, C (..., M) complex hold M conjugate-pair modes (the system has 2M modes, mode
    M + n the conjugate of mode n, so K is real); dt (...). Returns K (..., L) real.

    With C~ = C (I - dA^L), the generating function sum_{k<L} K[k] z^k equals, at the L-th roots
    of unity z (z^L = 1),  K^(z) = C~ ((1 - z)/dt I - s A)^{-1} B,  s = (1 + z)/2.  Woodbury on
    D + s P P^*, D = diag((1 - z)/dt - s Lambda), gives K^ = r00 - s r01 r10 / (1 + s r11) with
    Cauchy sums r_ab = sum_n a_n b_n / D_n over (a, b) in {C~, P^*} x {B, P}. K = inverse DFT.
    """
    _check_length(L)
    M = Lambda.shape[-1]
    A = dplr_matrix(Lambda, P)  # (..., 2M, 2M)
    dA, _ = discretize_dense(A, conjugate_pairs(B), dt, "bilinear")
    C = conjugate_pairs(C)  # (..., 2M)
    C_tilde = C - (C[..., None, :] @ torch.linalg.matrix_power(dA, L)).squeeze(-2)  # C (I - dA^L)
    C_tilde = C_tilde[..., :M]  # conjugate pairs are preserved, keep the first M modes

    angle = -2 * math.pi / L * torch.arange(L // 2 + 1, dtype=dt.dtype, device=dt.device)
    z = torch.polar(torch.ones_like(angle), angle)  # (Z,) roots of unity, Z = L // 2 + 1
    s = (1 + z) / 2  # (Z,)
    one_minus_z = (1 - z) / dt[..., None, None]  # (..., 1, Z)
    inv_D = 1 / (one_minus_z - s * Lambda[..., None])  # (..., M, Z)
    inv_D_conj = 1 / (one_minus_z - s * Lambda.conj()[..., None])  # (..., M, Z)
    numerators = torch.stack([C_tilde * B, C_tilde * P, P.conj() * B, P.conj() * P], dim=-2)
    # (..., 4, M) @ (..., M, Z): each mode plus its conjugate mode, whose a_n b_n is conjugated
    r = numerators @ inv_D + numerators.conj() @ inv_D_conj  # (..., 4, Z)
    r00, r01, r10, r11 = r.unbind(-2)  # (..., Z) each
    K_hat = r00 - s * r01 * r10 / (1 + s * r11)
    return torch.fft.irfft(K_hat, n=L)


@scoped("sequence op")
def fft_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Causal convolution y[t] = sum_{j<=t} k[j] u[t-j]. u (B, H, L), k (H, L) -> y (B, H, L)."""
    if u.shape[-1] != k.shape[-1] or u.shape[-2] != k.shape[-2]:
        raise ValueError(
            f"fft_conv needs u (B, H, L) and k (H, L); got {tuple(u.shape)}, {tuple(k.shape)}"
        )
    L = u.shape[-1]
    y = torch.fft.irfft(torch.fft.rfft(u, n=2 * L) * torch.fft.rfft(k, n=2 * L), n=2 * L)
    return y[..., :L]
