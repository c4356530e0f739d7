"""The Mamba-2 block (Dao & Gu 2024), following mamba_ssm `modules/mamba2_simple.py`.

E = expand·D inner channels in H heads of size P, G groups of B/C shared by H/G heads each:

    z, xBC, dt = W_in u                       # (E,), (E + 2GN,), (H,)
    x, B, C = split(SiLU(conv1d_causal(xBC)))  # (H, P), (G, N), (G, N)
    Δ = softplus(dt + dt_bias);  A = -exp(A_log)   # (H,): a scalar times identity per head
    h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t x_t^T  (N, P per head);  y_t = C_t h_t + D x_t   (SSD)
    out = W_out RMSNorm(y ⊙ SiLU(z))

SSD runs as chunked linear attention (ops.linear_attention, the chunked form of `ssd_minimal.py`)
with q = C, k = B, v = Δ·x and the scalar log-decay Δ·A.

With `negative_eigenvalues` (Grazzi et al. 2025, as S6's option) the transition is
a_t = 2 exp(Δ_t A) - 1 in (-1, 1): the same linear attention on log|a_t| with C_t and B_t times
the cumulative sign (ops.linear_attention.signed_transition), exact.

On CUDA tensors, when mamba_ssm
imports, its fused Triton kernel `mamba_chunk_scan_combined` (ops/triton/ssd_combined.py) runs
instead, and the causal convolution is `ops.causal_conv1d` (the causal-conv1d kernel on CUDA when
installed); `ssd_backend(device)` and `conv_backend(device)` say which run.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ssmbench.layers.marks import NO_WEIGHT_DECAY, mark
from ssmbench.ops.causal_conv import causal_conv1d, causal_conv1d_step
from ssmbench.ops.linear_attention import (
    linear_attention,
    linear_attention_step,
    signed_transition,
)
from ssmbench.ops.optional import on_kernel_device, optional_kernel
from ssmbench.ops.profiling import scoped

# mamba_ssm's fused SSD kernel (Triton): module, function
KERNEL = ("mamba_ssm.ops.triton.ssd_combined", "mamba_chunk_scan_combined")


def ssd_backend(device: torch.device | str) -> str:
    """'mamba_ssm' (the fused Triton kernel) or 'torch' (chunked form): what `ssd` runs."""
    return "mamba_ssm" if on_kernel_device(device) and optional_kernel(*KERNEL) else "torch"


@scoped("sequence op")
def ssd(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk: int = 64,
    negative_eigenvalues: bool = False,
) -> torch.Tensor:
    """x (b, L, H, P), dt (b, L, H), A (H,), B and C (b, L, G, N) -> y (b, L, H, P), no D.
    `chunk` is the chunk length of either backend (`ssd_backend`)."""
    if ssd_backend(x.device) == "mamba_ssm":  # same layouts; dt is already Δ (no bias, softplus)
        if negative_eigenvalues:
            raise ValueError("negative_eigenvalues: mamba_ssm's SSD kernel computes exp(ΔA) "
                             "only; run this model with --device cpu")  # fmt: skip
        return optional_kernel(*KERNEL)(x, dt, A, B, C, chunk_size=chunk)
    H, G = x.shape[2], B.shape[2]
    B, C = (X.repeat_interleave(H // G, dim=2).transpose(1, 2) for X in (B, C))  # (b, H, L, N)
    v = (x * dt[..., None]).transpose(1, 2)  # (b, H, L, P)
    log_decay, sign = signed_transition((dt * A).transpose(1, 2), negative_eigenvalues)  # (b, H, L)
    if negative_eigenvalues:
        s = sign.cumprod(dim=2)[..., None]  # (b, H, L, 1): s_t = Π_{r<=t} sign(a_r)
        B, C = B * s, C * s
    y = linear_attention(C, B, v, log_decay[..., None], chunk=chunk)  # (b, H, L, P)
    return y.transpose(1, 2)  # (b, L, H, P)


def dt_bias_init(n: int, dt_min: float = 1e-3, dt_max: float = 1e-1) -> torch.Tensor:
    """softplus^-1(dt) with dt log-uniform in [dt_min, dt_max], floored at 1e-4 (fla, Mamba-2)."""
    log_dt = torch.rand(n) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
    dt = log_dt.exp().clamp(min=1e-4)
    return dt + torch.log(-torch.expm1(-dt))  # (n,)


class Mamba2(nn.Module):
    kernels = ("causal-conv1d", "ssd")  # read by models.backends_of: the recorded backends

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        expand: int = 2,
        headdim: int = 64,
        ngroups: int = 1,
        d_conv: int = 4,
        chunk: int = 64,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        negative_eigenvalues: bool = False,
    ) -> None:
        super().__init__()
        self.negative_eigenvalues = negative_eigenvalues
        self.d_inner = expand * d_model
        self.headdim = min(headdim, self.d_inner)  # fewer, smaller heads at small widths
        if self.d_inner % self.headdim or (self.d_inner // self.headdim) % ngroups:
            raise ValueError(
                f"d_inner ({self.d_inner}) must split into heads of {self.headdim} in "
                f"{ngroups} groups"
            )
        self.n_heads, self.ngroups, self.d_state, self.chunk = (
            self.d_inner // self.headdim, ngroups, d_state, chunk)  # fmt: skip
        conv_dim = self.d_inner + 2 * ngroups * d_state
        self.in_proj = nn.Linear(d_model, self.d_inner + conv_dim + self.n_heads, bias=False)
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, d_conv, groups=conv_dim, padding=d_conv - 1)
        self.dt_bias = nn.Parameter(dt_bias_init(self.n_heads, dt_min, dt_max))  # (H,)
        self.A_log = nn.Parameter(torch.empty(self.n_heads).uniform_(1, 16).log())  # (H,)
        self.D = nn.Parameter(torch.ones(self.n_heads))  # (H,)
        mark(self, "dt_bias", "A_log", "D", **NO_WEIGHT_DECAY)  # as mamba_ssm's Mamba2Simple
        self.norm_weight = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u (b, L, D) -> (b, L, D)."""
        b, L, _ = u.shape
        GN = self.ngroups * self.d_state
        z, xBC, dt = self.in_proj(u).split([self.d_inner, self.d_inner + 2 * GN, self.n_heads], -1)
        weight = self.conv1d.weight[:, 0]  # (E + 2GN, W)
        xBC = causal_conv1d(xBC.mT, weight, self.conv1d.bias, activation="silu").mT  # causal
        x, B, C = xBC.split([self.d_inner, GN, GN], dim=-1)
        x = x.view(b, L, self.n_heads, self.headdim)  # (b, L, H, P)
        dt = F.softplus(dt + self.dt_bias)  # (b, L, H)
        B, C = (X.view(b, L, self.ngroups, self.d_state) for X in (B, C))  # (b, L, G, N)
        dtype = torch.promote_types(u.dtype, torch.float32)  # the scan never in half precision
        with torch.autocast(device_type=u.device.type, enabled=False):
            A = -torch.exp(self.A_log.to(dtype))  # (H,)
            y = ssd(*(X.to(dtype) for X in (x, dt)), A, B.to(dtype), C.to(dtype), self.chunk,
                    self.negative_eigenvalues)  # fmt: skip
        y = y + self.D[:, None] * x  # (b, L, H, P)
        y = y.reshape(b, L, self.d_inner) * F.silu(z)  # gate, then normalize (as upstream)
        y = F.rms_norm(y, (self.d_inner,), self.norm_weight, eps=1e-5)
        return self.out_proj(y)  # (b, L, D)

    def init_state(self, batch: int, like: torch.Tensor) -> tuple:
        """The convolution's last W - 1 inputs (b, E + 2GN, W - 1), and the SSM state
        (b, H, N, P) per head."""
        conv = like.new_zeros(batch, self.conv1d.in_channels, self.conv1d.kernel_size[0] - 1)
        return conv, like.new_zeros(batch, self.n_heads, self.d_state, self.headdim)

    def step(self, u: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        """u (b, D) -> (b, D): h <- exp(Δ A) h + Δ B xᵀ, y = Cᵀ h + D x, per head."""
        b, GN = u.shape[0], self.ngroups * self.d_state
        z, xBC, dt = self.in_proj(u).split([self.d_inner, self.d_inner + 2 * GN, self.n_heads], -1)
        weight = self.conv1d.weight[:, 0]  # (E + 2GN, W)
        xBC, conv = causal_conv1d_step(xBC, state[0], weight, self.conv1d.bias, "silu")
        x, B, C = xBC.split([self.d_inner, GN, GN], dim=-1)
        x = x.view(b, self.n_heads, self.headdim)  # (b, H, P)
        B, C = (X.view(b, self.ngroups, 1, self.d_state) for X in (B, C))
        B, C = (X.repeat_interleave(self.n_heads // self.ngroups, 1)[:, :, 0] for X in (B, C))
        dt = F.softplus(dt + self.dt_bias)  # (b, H)
        log_decay, sign = signed_transition(dt * -torch.exp(self.A_log), self.negative_eigenvalues)
        h = sign[..., None, None] * state[1]  # a h = |a| (sign a) h
        y, h = linear_attention_step(h, C, B, x * dt[..., None], log_decay[..., None])  # (b, H, P)
        y = (y + self.D[:, None] * x).reshape(b, self.d_inner) * F.silu(z)
        y = F.rms_norm(y, (self.d_inner,), self.norm_weight, eps=1e-5)
        return self.out_proj(y), (conv, h)
