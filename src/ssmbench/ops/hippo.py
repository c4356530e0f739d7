"""State matrix initializations: HiPPO-LegS, its normal-plus-low-rank form, S4D diagonals.

Conjugate pairs: a real N-dimensional system whose eigenvalues come in conjugate pairs is fully
described by N/2 of its modes; the other N/2 are their complex conjugates. The functions that
return complex modes order them so that mode N/2 + n is the conjugate of mode n.
"""

import math

import torch


def hippo_legs(N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """HiPPO-LegS (S4 paper), float64.

    A[n, k] = -sqrt(2n+1) sqrt(2k+1) for n > k, -(n+1) for n = k, 0 for n < k;  B[n] = sqrt(2n+1).
    """
    if N < 1:
        raise ValueError(f"hippo_legs needs N >= 1, got {N}")
    q = torch.sqrt(2 * torch.arange(N, dtype=torch.float64) + 1)  # (N,)
    A = -torch.tril(q[:, None] * q[None, :], diagonal=-1)  # (N, N)
    A = A - torch.diag(torch.arange(1, N + 1, dtype=torch.float64))
    return A, q.clone()


def hippo_legs_dplr(N: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """HiPPO-LegS in diagonal-plus-low-rank form, complex128: returns (Lambda, P, B, V) with

        hippo_legs(N) = V (diag(Lambda) - P P^*) V^*,   B_legs = V B,   V unitary,

    i.e. Lambda, P, B are expressed in the eigenbasis V of the normal matrix A + p p^T, where
    p[n] = sqrt(n + 1/2) (that matrix is -1/2 I plus a skew-symmetric matrix, so Re(Lambda) = -1/2).
    Modes n < N/2 have Im(Lambda) > 0; mode N/2 + n is the conjugate of mode n (N must be even).
    """
    if N < 2 or N % 2:
        raise ValueError(f"hippo_legs_dplr needs an even N >= 2 (conjugate pairs), got {N}")
    A, B = hippo_legs(N)
    p = torch.sqrt(torch.arange(N, dtype=torch.float64) + 0.5)  # (N,)
    skew = A + p[:, None] * p[None, :] + 0.5 * torch.eye(N, dtype=torch.float64)  # (N, N)
    # skew = -skew^T, so -i * skew is Hermitian with real eigenvalues in +- pairs
    omega, V = torch.linalg.eigh(-1j * skew.to(torch.complex128))  # ascending
    V_half = V[:, N // 2 :]  # (N, N/2), eigenvalues omega > 0
    V = torch.cat([V_half, V_half.conj()], dim=1)  # (N, N): conj(v) has eigenvalue -omega
    Lambda = torch.complex(torch.full((N // 2,), -0.5, dtype=torch.float64), omega[N // 2 :])
    Lambda = torch.cat([Lambda, Lambda.conj()])  # (N,)
    Vh = V.conj().T
    return Lambda, Vh @ p.to(torch.complex128), Vh @ B.to(torch.complex128), V


def s4d_diagonal(N: int, kind: str) -> torch.Tensor:
    """S4D diagonal state matrix initializations.

    real: A_n = -(n+1), n < N (float64, N real modes).
    inv:  A_n = -1/2 + i N/pi (N/(2n+1) - 1), n < N/2 (complex128, N/2 conjugate-pair modes).
    lin:  A_n = -1/2 + i pi n,                n < N/2 (complex128, N/2 conjugate-pair modes).
    """
    if kind == "real":
        return -torch.arange(1, N + 1, dtype=torch.float64)
    if kind not in ("inv", "lin"):
        raise ValueError(f"unknown S4D init {kind!r}; use 'real', 'inv' or 'lin'")
    if N < 2 or N % 2:
        raise ValueError(f"S4D-{kind} needs an even N >= 2 (conjugate pairs), got {N}")
    n = torch.arange(N // 2, dtype=torch.float64)
    imag = N / math.pi * (N / (2 * n + 1) - 1) if kind == "inv" else math.pi * n
    return torch.complex(torch.full_like(n, -0.5), imag)
