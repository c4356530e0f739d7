"""Linear time-invariant SSM sequence mixers: S4 (dense HiPPO), S4D (diagonal), S4LowRank (DPLR).

Each of the H channels runs its own single-input single-output system
    x'(t) = A x(t) + B u(t),  y(t) = C x(t),
discretized with a trainable per-channel step dt into x_k = dA x_{k-1} + dB u_k, y_k = Re(C x_k).
The layer computes y = K * u + D u with the kernel K[k] = Re(C dA^k dB), k < L, by FFT convolution.

d_state = N is the state size of the equivalent real system. Complex systems (S4D-Inv/Lin,
S4LowRank) store N/2 modes; the other N/2 are their complex conjugates. A complex parameter is
stored as its real view (..., 2), as upstream s4 does, so that `.double()` (which leaves complex
tensors alone) makes the whole layer float64 / complex128.
"""

import math

import torch
from torch import nn

from ssmbench.layers.decoding import Constants
from ssmbench.layers.marks import S4_SSM, mark
from ssmbench.ops.discretize import discretize_dense, discretize_diagonal
from ssmbench.ops.hippo import hippo_legs, hippo_legs_dplr, s4d_diagonal
from ssmbench.ops.kernels import (
    conjugate_pairs,
    dense_kernel,
    dplr_kernel,
    dplr_matrix,
    fft_conv,
    vandermonde_kernel,
)


def complex_parameter(x: torch.Tensor) -> nn.Parameter:
    """x (...) complex as a trainable real view (..., 2) in float32."""
    return nn.Parameter(torch.view_as_real(x.to(torch.complex64)).clone())


class LTIMixer(nn.Module):
    """Common part: per-channel step dt, log-uniform in [dt_min, dt_max] at init; skip D; forward.

    Subclasses define kernel(L) -> (H, L) and discrete_ssm() -> (dA (H, N', N'), dB (H, N'),
    C (H, N')), the dense equivalent system with kernel(L)[h, k] = Re(C[h] dA[h]^k dB[h]).
    """

    def __init__(self, d_model: int, d_state: int, dt_min: float, dt_max: float):
        super().__init__()
        if d_model < 1 or d_state < 1:
            raise ValueError(f"d_model and d_state must be >= 1, got {d_model} and {d_state}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        self.d_model, self.d_state = d_model, d_state
        log_dt = torch.rand(d_model) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = nn.Parameter(log_dt)  # (H,)
        self.D = nn.Parameter(torch.randn(d_model))  # (H,)

    def per_channel(self, x: torch.Tensor) -> nn.Parameter:
        """A trainable copy of x for each channel, (...) -> (H, ...), float32 (complex x as its
        real view (H, ..., 2))."""
        x = x.expand(self.d_model, *x.shape)  # (H, ...)
        return complex_parameter(x) if x.is_complex() else nn.Parameter(x.float().clone())

    def mark_ssm(self, *names: str) -> None:
        """The SSM parameters (log_dt and names), trained as s4 trains them: marks.S4_SSM."""
        mark(self, "log_dt", *names, **S4_SSM)

    @property
    def dt(self) -> torch.Tensor:
        return torch.exp(self.log_dt)  # (H,)

    def kernel(self, L: int) -> torch.Tensor:
        raise NotImplementedError

    def discrete_ssm(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def init_state(self, batch: int, like: torch.Tensor) -> tuple:
        """x (B, H, N') zero, and the discrete system (dA, dB, C), computed once (Constants)."""
        dA, dB, C = self.discrete_ssm()  # (H, N', N'), (H, N'), (H, N')
        return dA.new_zeros(batch, *dB.shape), Constants((dA, dB, C))

    def step(self, u: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        """u (B, H) -> y (B, H): x <- dA x + dB u, y = Re(C x) + D u."""
        x, (dA, dB, C) = state
        x = torch.einsum("hmn,bhn->bhm", dA, x) + dB * u[..., None].to(dB.dtype)  # (B, H, N')
        y = torch.einsum("hn,bhn->bh", C.to(x.dtype), x).real + self.D * u  # (B, H)
        return y.to(u.dtype), (x, state[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"expected x of shape (B, L, {self.d_model}), got {tuple(x.shape)}")
        u = x.transpose(1, 2)  # (B, H, L)
        # kernel powers and FFTs lose too much in half precision: keep them out of autocast
        with torch.autocast(device_type=x.device.type, enabled=False):
            k = self.kernel(u.shape[-1])  # (H, L)
            y = fft_conv(u.to(k.dtype), k) + self.D[:, None] * u  # (B, H, L)
        return y.transpose(1, 2).to(x.dtype)  # (B, L, H)


class S4(LTIMixer):
    """Dense N x N state matrix per channel, trainable, init HiPPO-LegS (A, B); C random.

    Bilinear discretization; kernel by doubling (ceil(log2 L) batched matmuls).
    """

    def __init__(self, d_model: int, d_state: int = 16, dt_min: float = 1e-3, dt_max: float = 1e-1):
        super().__init__(d_model, d_state, dt_min, dt_max)
        A, B = hippo_legs(d_state)
        self.A, self.B = self.per_channel(A), self.per_channel(B)  # (H, N, N), (H, N)
        self.C = nn.Parameter(torch.randn(d_model, d_state))  # (H, N)
        self.mark_ssm("A", "B")

    def discrete_ssm(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dA, dB = discretize_dense(self.A, self.B, self.dt, "bilinear")
        return dA, dB, self.C

    def kernel(self, L: int) -> torch.Tensor:
        return dense_kernel(*self.discrete_ssm(), L)


class S4D(LTIMixer):
    """Diagonal state matrix, init 'real' (N real modes), 'inv' or 'lin' (N/2 conjugate pairs).

    A = -exp(log_neg_A_real) + i A_imag (stable for any parameter value); B = 1 (a per-mode B is
    redundant with C); C random; zero-order-hold (`disc="zoh"`, s4d.py's) or bilinear (safari's
    H3) discretization; Vandermonde kernel. For complex inits the conjugate modes double the real
    part: K = 2 Re(sum_n C_n dB_n dA_n^k).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        init: str = "lin",
        disc: str = "zoh",
    ):
        super().__init__(d_model, d_state, dt_min, dt_max)
        self.disc = disc
        A = s4d_diagonal(d_state, init)  # (N,) real or (N/2,) complex
        self.log_neg_A_real = self.per_channel(torch.log(-A.real))  # (H, N')
        self.A_imag = self.per_channel(A.imag) if A.is_complex() else None
        if A.is_complex():  # (H, N', 2): the real view of complex C
            self.C = complex_parameter(torch.randn(d_model, A.shape[0], dtype=torch.complex64))
        else:
            self.C = nn.Parameter(torch.randn(d_model, A.shape[0]))  # (H, N')
        self.mark_ssm("log_neg_A_real", "A_imag")

    def _diagonal_ssm(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """dA, dB, C (H, N') of the diagonal system, the conjugate-pair factor 2 folded into C."""
        A = -torch.exp(self.log_neg_A_real)  # (H, N')
        if self.A_imag is None:
            C = self.C
        else:
            A, C = torch.complex(A, self.A_imag), 2 * torch.view_as_complex(self.C)
        dA, dB = discretize_diagonal(A, torch.ones_like(A), self.dt, self.disc)
        return dA, dB, C

    def discrete_ssm(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dA, dB, C = self._diagonal_ssm()
        return torch.diag_embed(dA), dB, C

    def kernel(self, L: int) -> torch.Tensor:
        return vandermonde_kernel(*self._diagonal_ssm(), L)


class S4LowRank(LTIMixer):
    """Diagonal plus low rank A = diag(Lambda) - P P^* over N modes (N/2 stored, plus conjugates).

    Lambda, P, B, C trainable, complex, per channel, init from HiPPO-LegS in its DPLR form
    (hippo_legs_dplr; C random), with Im(B) clipped to [-b_clip, b_clip] as upstream s4's
    B_clip = 2. Re(Lambda) = -exp(log_neg_Lambda_real) < 0 keeps A stable.
    Bilinear discretization; kernel by Cauchy sums + Woodbury at the roots of unity.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        b_clip: float = 2.0,
    ):
        super().__init__(d_model, d_state, dt_min, dt_max)
        M = d_state // 2
        Lambda, P, B = (x[:M] for x in hippo_legs_dplr(d_state)[:3])  # (N/2,) each
        B = torch.complex(B.real, B.imag.clamp(-b_clip, b_clip))
        self.log_neg_Lambda_real = self.per_channel(torch.log(-Lambda.real))  # (H, N/2)
        self.Lambda_imag = self.per_channel(Lambda.imag)
        self.P, self.B = self.per_channel(P), self.per_channel(B)  # (H, N/2, 2) real views
        self.C = complex_parameter(torch.randn(d_model, M, dtype=torch.complex64))  # (H, N/2, 2)
        self.mark_ssm("log_neg_Lambda_real", "Lambda_imag", "P", "B")

    @property
    def Lambda(self) -> torch.Tensor:
        return torch.complex(-torch.exp(self.log_neg_Lambda_real), self.Lambda_imag)  # (H, N/2)

    def _modes(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """P, B, C (H, N/2) complex, read from their real views."""
        return tuple(torch.view_as_complex(p) for p in (self.P, self.B, self.C))

    def discrete_ssm(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        P, B, C = self._modes()
        A = dplr_matrix(self.Lambda, P)  # (H, N, N)
        dA, dB = discretize_dense(A, conjugate_pairs(B), self.dt, "bilinear")
        return dA, dB, conjugate_pairs(C)

    def kernel(self, L: int) -> torch.Tensor:
        return dplr_kernel(self.Lambda, *self._modes(), self.dt, L)

    def init_state(self, batch: int, like: torch.Tensor) -> tuple:
        """z (B, H, N/2): the first half of the complex state x = [z, conj(z)] (real inputs
        keep the conjugate half the conjugate of the first, so N/2 complex = N reals carry it)."""
        dA, dB, C = self.discrete_ssm()  # (H, N, N), (H, N), (H, N) over both halves
        return dB.new_zeros(batch, dB.shape[0], dB.shape[1] // 2), Constants((dA, dB, C))

    def step(self, u: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        """u (B, H) -> y (B, H): z <- dA_11 z + dA_12 conj(z) + dB_1 u, y = 2 Re(C_1 z) + D u."""
        z, (dA, dB, C) = state
        M = z.shape[-1]
        u_c = u[..., None].to(dB.dtype)  # (B, H, 1)
        z = (torch.einsum("hmn,bhn->bhm", dA[:, :M, :M], z)
             + torch.einsum("hmn,bhn->bhm", dA[:, :M, M:], z.conj()) + dB[:, :M] * u_c)  # fmt: skip
        y = 2 * torch.einsum("hn,bhn->bh", C[:, :M], z).real + self.D * u  # (B, H)
        return y.to(u.dtype), (z, state[1])
