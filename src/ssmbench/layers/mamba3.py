"""The Mamba-3 mixer, SISO (Lahoti et al., ICLR 2026), following mamba_ssm `modules/mamba3.py`.

E = expand·D inner channels in H heads of size P; B and C in G groups shared by H/G heads each;
R = ⌊N·rope_fraction / 2⌋ rotation angles:

    z, x, B, C, dt, a, λ, θ = W_in u           # (E,), (E,), (G, N), (G, N), (H,), (H,), (H,), (R,)
    B, C = RMSNorm(B) + B_bias, RMSNorm(C) + C_bias          # (H, N) per head, biases init 1
    Δ = softplus(dt + dt_bias);  A = -max(f(a), A_floor)     # f(a) = 1 + a (a >= 0), 1/(1 - a)
    φ_t = φ_{t-1} + π tanh(θ_t) Δ_t  (mod 2π)                # data-dependent rotary phase
    q, k = rot(C, φ_t), rot(B, φ_t)                          # the first 2R channels, pairwise
    S_t = e^{ΔA} S_{t-1} + (1-λ) Δ e^{ΔA} k_{t-1} x_{t-1}^T + λ Δ k_t x_t^T,  λ = sigmoid(λ)
    y_t = S_t^T q_t + D x_t;   out = W_out (y ⊙ SiLU(z))

(ops.mamba3: the recurrence and its parallel form.) A rotation by φ_t of q and k is the complex
eigenvalue e^{iφ} of the transition, the state tracking that real decays lack: Mamba-3's own
answer to the negative-eigenvalue question. `negative_eigenvalues` (not upstream's; Grazzi et al.
2025's change, as on S6 and Mamba-2) makes the real part e^{ΔA} into 2 e^{ΔA} - 1 in (-1, 1)
(ops.linear_attention.signed_transition: q and k times the cumulative sign). No short
convolution (Mamba-3 drops it); no MIMO (`is_mimo`, TileLang-only upstream) and no
`is_outproj_norm` (off by default upstream). dt_bias and D are not decayed, as upstream marks them.

On CUDA tensors, when mamba_ssm imports, its fused Triton kernel `mamba3_siso_combined` runs the
part from the normalized B, C to the gated output instead (biases, rotation, recurrence, D and
the gate inside it, trap and angles passed raw as upstream's module passes them);
`mamba3_backend(device)` says which runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssmbench.layers.mamba2 import dt_bias_init
from ssmbench.layers.marks import NO_WEIGHT_DECAY, mark
from ssmbench.ops.linear_attention import signed_transition
from ssmbench.ops.mamba3 import cumulative_phase, mamba3_siso, mamba3_siso_step, rotate_pairs
from ssmbench.ops.optional import on_kernel_device, optional_kernel

# mamba_ssm's fused SISO kernel (Triton): module, function
KERNEL = ("mamba_ssm.ops.triton.mamba3.mamba3_siso_combined", "mamba3_siso_combined")


def mamba3_backend(device: torch.device | str) -> str:
    """'mamba_ssm' (the fused Triton kernel) or 'torch' (ops.mamba3): what Mamba-3 runs."""
    return "mamba_ssm" if on_kernel_device(device) and optional_kernel(*KERNEL) else "torch"


def heavy_tail(a: torch.Tensor) -> torch.Tensor:
    """1 + a for a >= 0, 1 / (1 - a) below: positive, continuous, slope 1 at 0 (upstream's
    `heavy_tail_activation` for the data-dependent A)."""
    return a.clamp(min=0) + 1 / (1 - a.clamp(max=0))


class Mamba3(nn.Module):
    kernels = ("mamba3",)  # read by models.backends_of: the recorded backend

    def __init__(
        self,
        d_model: int,
        d_state: int = 128,
        expand: int = 2,
        headdim: int = 64,
        ngroups: int = 1,
        rope_fraction: float = 0.5,
        A_floor: float = 1e-4,
        chunk: int = 64,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        negative_eigenvalues: bool = False,
    ) -> None:
        super().__init__()
        self.negative_eigenvalues = negative_eigenvalues
        self.d_inner = expand * d_model
        self.headdim = min(headdim, self.d_inner)  # fewer, smaller heads at small widths
        self.n_heads = self.d_inner // self.headdim
        if self.d_inner % self.headdim or self.n_heads % ngroups:
            raise ValueError(f"d_inner ({self.d_inner}) must split into heads of {self.headdim} "
                             f"in {ngroups} groups")  # fmt: skip
        self.n_angles = int(d_state * rope_fraction) // 2
        if rope_fraction not in (0.5, 1.0) or self.n_angles == 0:
            raise ValueError(f"rope_fraction must be 0.5 or 1.0 with d_state * rope_fraction >= "
                             f"2 (got {rope_fraction}, d_state {d_state})")  # fmt: skip
        self.d_state, self.ngroups, self.A_floor, self.chunk = d_state, ngroups, A_floor, chunk
        E, GN, H = self.d_inner, ngroups * d_state, self.n_heads
        self.sizes = [E, E, GN, GN, H, H, H, self.n_angles]  # z, x, B, C, dt, a, λ, θ
        self.in_proj = nn.Linear(d_model, sum(self.sizes), bias=False)
        self.dt_bias = nn.Parameter(dt_bias_init(H, dt_min, dt_max))  # softplus^{-1}(Δ), (H,)
        self.B_bias, self.C_bias = (nn.Parameter(torch.ones(H, d_state)) for _ in range(2))
        self.B_norm, self.C_norm = (nn.Parameter(torch.ones(d_state)) for _ in range(2))
        self.D = nn.Parameter(torch.ones(H))  # (H,)
        mark(self, "dt_bias", "D", **NO_WEIGHT_DECAY)  # as upstream's _no_weight_decay
        self.out_proj = nn.Linear(E, d_model, bias=False)

    def _project(self, u: torch.Tensor) -> tuple:
        """u (b, ..., D) -> z, x (b, ..., H, P), the normalized B and C (b, ..., G, N), Δ, ΔA and
        the raw trapezoid weight (b, ..., H), the raw angles θ (b, ..., R); at least float32."""
        dtype = torch.promote_types(u.dtype, torch.float32)
        z, x, B, C, dt, a, trap, angles = self.in_proj(u).to(dtype).split(self.sizes, dim=-1)
        heads = (self.n_heads, self.headdim)
        z, x = z.unflatten(-1, heads), x.unflatten(-1, heads)
        B, C = (X.unflatten(-1, (self.ngroups, self.d_state)) for X in (B, C))  # (..., G, N)
        B = F.rms_norm(B, (self.d_state,), self.B_norm.to(dtype), eps=1e-5)
        C = F.rms_norm(C, (self.d_state,), self.C_norm.to(dtype), eps=1e-5)
        dt = F.softplus(dt + self.dt_bias.to(dtype))  # (..., H)
        log_decay = -heavy_tail(a).clamp(min=self.A_floor) * dt  # ΔA <= -A_floor Δ
        return z, x, B, C, dt, log_decay, trap, angles

    def _heads(self, B: torch.Tensor, C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """B, C (..., G, N) -> each head's, biases added (..., H, N)."""
        repeat = self.n_heads // self.ngroups
        B = B.repeat_interleave(repeat, dim=-2) + self.B_bias.to(B.dtype)
        return B, C.repeat_interleave(repeat, dim=-2) + self.C_bias.to(C.dtype)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u (b, L, D) -> (b, L, D)."""
        b, L, _ = u.shape
        with torch.autocast(device_type=u.device.type, enabled=False):
            z, x, B, C, dt, log_decay, trap, angles = self._project(u)
            dt, log_decay, trap = (X.transpose(1, 2) for X in (dt, log_decay, trap))  # (b, H, L)
            fused = mamba3_backend(u.device) == "mamba_ssm"
            if fused and self.negative_eigenvalues:
                raise ValueError("negative_eigenvalues: mamba_ssm's Mamba-3 kernel computes "
                                 "exp(ΔA) only; run this model with --device cpu")  # fmt: skip
            y = (self._fused if fused else self._chunked)(z, x, B, C, dt, log_decay, trap, angles)
        return self.out_proj(y.reshape(b, L, self.d_inner).to(u.dtype))  # (b, L, D)

    def _chunked(self, z, x, B, C, dt, log_decay, trap, angles) -> torch.Tensor:
        """The gated output (b, L, H, P) by ops.mamba3; dt, log_decay, trap (b, H, L)."""
        B, C = self._heads(B, C)  # (b, L, H, N)
        phase = cumulative_phase(angles, dt)  # (b, H, L, R)
        q, k = (rotate_pairs(X.transpose(1, 2), phase) for X in (C, B))  # (b, H, L, N)
        log_decay, sign = signed_transition(log_decay, self.negative_eigenvalues)  # (b, H, L)
        if self.negative_eigenvalues:
            s = sign.cumprod(dim=-1)[..., None]  # (b, H, L, 1): Π_{r<=t} sign a_r
            q, k = q * s, k * s
        y = mamba3_siso(q, k, x.transpose(1, 2), log_decay, dt, trap.sigmoid(), self.chunk)
        return (y.transpose(1, 2) + self.D.to(x.dtype)[:, None] * x) * F.silu(z)

    def _fused(self, z, x, B, C, dt, log_decay, trap, angles) -> torch.Tensor:
        """The same by mamba_ssm's kernel: B, C per group, biases, raw trap and angles."""
        angles = angles[:, :, None].expand(-1, -1, self.n_heads, -1)  # (b, L, H, R)
        kernel = optional_kernel(*KERNEL)
        return kernel(C, B, x, log_decay, dt, trap, self.C_bias, self.B_bias, angles, self.D, z,
                      chunk_size=self.chunk)  # fmt: skip

    def init_state(self, batch: int, like: torch.Tensor) -> tuple:
        """The rotary phase (b, H, R), the SSM state (b, H, N, P), the last rotated key (b, H, N)
        and value (b, H, P): mamba_ssm's (angle, ssm, k, v) states."""
        like = like.new_zeros(()).to(torch.promote_types(like.dtype, torch.float32))
        H, N, P = self.n_heads, self.d_state, self.headdim
        shapes = ((H, self.n_angles), (H, N, P), (H, N), (H, P))
        return tuple(like.new_zeros(batch, *shape) for shape in shapes)

    @classmethod
    def state_size(cls, d_model: int, d_state: int, expand: int = 2, headdim: int = 64,
                   rope_fraction: float = 0.5) -> int:  # fmt: skip
        """Real elements per sequence: H (R + N·P + N + P)."""
        P = min(headdim, expand * d_model)
        H, R = expand * d_model // P, int(d_state * rope_fraction) // 2
        return H * (R + d_state * P + d_state + P)

    def step(self, u: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        """u (b, D) -> (b, D): one position of the recurrence."""
        z, x, B, C, dt, log_decay, trap, angles = self._project(u)  # (b, H, ·), θ (b, R)
        (B, C), trap = self._heads(B, C), trap.sigmoid()  # (b, H, N), (b, H)
        phase = cumulative_phase(angles[:, None], dt[..., None], state[0])[:, :, 0]  # (b, H, R)
        q, k = rotate_pairs(C, phase), rotate_pairs(B, phase)  # (b, H, N)
        log_decay, sign = signed_transition(log_decay, self.negative_eigenvalues)  # (b, H)
        S, k_prev, v_prev = state[1:]  # a (S + ...) = |a| (sign S + sign ...)
        previous = (sign[..., None, None] * S, sign[..., None] * k_prev, v_prev)
        y, ssm = mamba3_siso_step(previous, q, k, x, log_decay, dt, trap)  # (b, H, P)
        y = (y + self.D.to(x.dtype)[:, None] * x) * F.silu(z)
        return self.out_proj(y.flatten(1).to(u.dtype)), (phase, *ssm)
