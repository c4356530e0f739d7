"""Discretization of x'(t) = A x(t) + B u(t) with step dt into x_k = dA x_{k-1} + dB u_k.

zoh (zero-order hold, u constant over the step):  dA = exp(dt A),  dB = A^{-1} (exp(dt A) - I) B.
bilinear (trapezoid rule):  dA = (I - dt/2 A)^{-1} (I + dt/2 A),  dB = (I - dt/2 A)^{-1} dt B.
Real or complex tensors; leading dimensions (e.g. one system per channel) broadcast.
"""

import torch

METHODS = ("zoh", "bilinear")


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown discretization {method!r}; use one of {METHODS}")


def discretize_diagonal(
    A: torch.Tensor, B: torch.Tensor, dt: torch.Tensor, method: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Diagonal A given by its diagonal: A, B (..., N), dt (...) -> dA, dB (..., N)."""
    _check_method(method)
    dtA = dt[..., None] * A  # (..., N)
    if method == "zoh":
        dA = torch.exp(dtA)
        return dA, (dA - 1) / A * B
    denominator = 1 - dtA / 2
    return (1 + dtA / 2) / denominator, dt[..., None] * B / denominator


def discretize_dense(
    A: torch.Tensor, B: torch.Tensor, dt: torch.Tensor, method: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense A: A (..., N, N), B (..., N), dt (...) -> dA (..., N, N), dB (..., N).

    zoh uses exp([[dt A, dt B], [0, 0]]) = [[dA, dB], [0, 1]], which needs no inverse of A.
    """
    _check_method(method)
    N = A.shape[-1]
    dt = dt[..., None, None]  # (..., 1, 1)
    if method == "zoh":
        top = torch.cat([A, B[..., None]], dim=-1) * dt  # (..., N, N+1)
        augmented = torch.cat([top, torch.zeros_like(top[..., :1, :])], dim=-2)  # (..., N+1, N+1)
        expm = torch.linalg.matrix_exp(augmented)
        return expm[..., :N, :N], expm[..., :N, N]
    eye = torch.eye(N, dtype=A.dtype, device=A.device)
    backward = eye - dt / 2 * A  # (..., N, N)
    forward = torch.cat([eye + dt / 2 * A, dt * B[..., None]], dim=-1)  # (..., N, N+1)
    solved = torch.linalg.solve(backward, forward)  # (..., N, N+1)
    return solved[..., :N], solved[..., N]
