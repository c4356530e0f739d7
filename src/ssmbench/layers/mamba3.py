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
convolution (Mamba-3 drops it) and no `is_outproj_norm` (off by default upstream). dt_bias and D
are not decayed, as upstream marks them.

MIMO (`mimo_rank` R >= 1, upstream's is_mimo): B and C have R ranks, (R, G, N) per position,
with biases (H, R, N); each rank writes x ⊙ m^x_r into the same N × P state and reads with its
own query, and the ranks meet again at the output:

    v_r = x ⊙ m^x_r,   y_r = S_t^T q_r + D v_r,   y = Σ_r m^o_r ⊙ y_r ⊙ SiLU(z ⊙ m^z_r)

m^x, m^z, m^o (H, R, P) initialized to 1/R, 1, 1/R; q and k turn as the MIMO kernels turn them,
pairs (i, i + N/2). The state grows by the R - 1 more last keys only. MIMO runs ops.mamba3 on
every device (upstream's MIMO kernel is TileLang's and not dispatched): it records
`mamba3_mimo_backend` 'torch'. mimo_rank 0 is SISO.

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
from ssmbench.ops.mamba3 import (
    cumulative_phase,
    mamba3_mimo,
    mamba3_mimo_step,
    rotate_halves,
    rotate_pairs,
)
from ssmbench.ops.optional import on_kernel_device, optional_kernel

# mamba_ssm's fused SISO kernel (Triton): module, function
KERNEL = ("mamba_ssm.ops.triton.mamba3.mamba3_siso_combined", "mamba3_siso_combined")


def mamba3_backend(device: torch.device | str) -> str:
    """'mamba_ssm' (the fused Triton kernel) or 'torch' (ops.mamba3): what Mamba-3 runs."""
    return "mamba_ssm" if on_kernel_device(device) and optional_kernel(*KERNEL) else "torch"


def mamba3_mimo_backend(device: torch.device | str) -> str:
    """What Mamba-3 MIMO runs: 'torch' (ops.mamba3) on every device (module docstring)."""
    return "torch"


def heavy_tail(a: torch.Tensor) -> torch.Tensor:
    """1 + a for a >= 0, 1 / (1 - a) below: positive, continuous, slope 1 at 0 (upstream's
    `heavy_tail_activation` for the data-dependent A)."""
    return a.clamp(min=0) + 1 / (1 - a.clamp(max=0))


def per_head(weight: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """weight (H, R, P) viewed to broadcast against like (b, H, ..., R, P)."""
    return weight.view(weight.shape[0], *[1] * (like.dim() - 4), *weight.shape[1:])


def ranks(x: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """x (b, H, ..., P) -> per rank (b, H, ..., R, P): x ⊙ weight_r, weight (H, R, P); None
    (SISO): x itself, R = 1."""
    x = x.unsqueeze(-2)
    return x if weight is None else x * per_head(weight, x)


class Mamba3(nn.Module):
    kernels = ("mamba3",)  # read by models.backends_of: the recorded backend (MIMO: its own)

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
        mimo_rank: int = 0,
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
        if mimo_rank < 0 or (mimo_rank and d_state % 2):
            raise ValueError(f"mimo_rank must be 0 (SISO) or R >= 1 with an even d_state (got "
                             f"{mimo_rank}, d_state {d_state})")  # fmt: skip
        self.mimo_rank, R = mimo_rank, max(mimo_rank, 1)
        if mimo_rank:
            self.kernels = ("mamba3-mimo",)  # this instance's recorded backend
        self.d_state, self.ngroups, self.A_floor, self.chunk = d_state, ngroups, A_floor, chunk
        E, RGN, H = self.d_inner, R * ngroups * d_state, self.n_heads
        self.sizes = [E, E, RGN, RGN, H, H, H, self.n_angles]  # z, x, B, C, dt, a, λ, θ
        self.in_proj = nn.Linear(d_model, sum(self.sizes), bias=False)
        self.dt_bias = nn.Parameter(dt_bias_init(H, dt_min, dt_max))  # softplus^{-1}(Δ), (H,)
        self.B_bias, self.C_bias = (nn.Parameter(torch.ones(H, R, d_state)) for _ in range(2))
        self.B_norm, self.C_norm = (nn.Parameter(torch.ones(d_state)) for _ in range(2))
        self.mimo_x = self.mimo_z = self.mimo_o = None  # SISO: x, z and y as they are
        if mimo_rank:  # (H, R, P), upstream's inits
            P = self.headdim
            self.mimo_x = nn.Parameter(torch.full((H, R, P), 1 / R))
            self.mimo_z = nn.Parameter(torch.ones(H, R, P))
            self.mimo_o = nn.Parameter(torch.full((H, R, P), 1 / R))
        self.D = nn.Parameter(torch.ones(H))  # (H,)
        mark(self, "dt_bias", "D", **NO_WEIGHT_DECAY)  # as upstream's _no_weight_decay
        self.out_proj = nn.Linear(E, d_model, bias=False)

    def _project(self, u: torch.Tensor) -> tuple:
        """u (b, ..., D) -> z, x (b, ..., H, P), the normalized B and C (b, ..., R, G, N), Δ, ΔA
        and the raw trapezoid weight (b, ..., H), the raw angles θ (b, ..., A); at least
        float32."""
        dtype = torch.promote_types(u.dtype, torch.float32)
        z, x, B, C, dt, a, trap, angles = self.in_proj(u).to(dtype).split(self.sizes, dim=-1)
        heads = (self.n_heads, self.headdim)
        z, x = z.unflatten(-1, heads), x.unflatten(-1, heads)
        ranks = (max(self.mimo_rank, 1), self.ngroups, self.d_state)
        B, C = (X.unflatten(-1, ranks) for X in (B, C))  # (..., R, G, N)
        B = F.rms_norm(B, (self.d_state,), self.B_norm.to(dtype), eps=1e-5)
        C = F.rms_norm(C, (self.d_state,), self.C_norm.to(dtype), eps=1e-5)
        dt = F.softplus(dt + self.dt_bias.to(dtype))  # (..., H)
        log_decay = -heavy_tail(a).clamp(min=self.A_floor) * dt  # ΔA <= -A_floor Δ
        return z, x, B, C, dt, log_decay, trap, angles

    def _turned(self, B: torch.Tensor, C: torch.Tensor, phase: torch.Tensor) -> tuple:
        """B, C (b, ..., R, G, N) -> each head's k, q (b, H, ..., R, N): biases added, turned by
        phase (b, H, ..., A)."""
        repeat = self.n_heads // self.ngroups
        rotate = rotate_halves if self.mimo_rank else rotate_pairs
        out = []
        for X, bias in ((B, self.B_bias), (C, self.C_bias)):
            X = X.repeat_interleave(repeat, dim=-2) + bias.transpose(0, 1).to(X.dtype)  # R, H, N
            X = X.movedim(-2, 1)  # (b, H, ..., R, N)
            out.append(rotate(X, phase[..., None, :]))
        return tuple(out)

    def _gated(self, y: torch.Tensor, v: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """y, v (b, H, ..., R, P), z (b, H, ..., P) -> Σ_r m^o_r ⊙ (y_r + D v_r) ⊙ SiLU(z ⊙ m^z_r)
        (b, H, ..., P) (SISO: (y + D x) ⊙ SiLU(z))."""
        D = self.D.to(v.dtype).view(-1, *[1] * (v.dim() - 2))  # (H, 1, ..., 1)
        y = (y + D * v) * F.silu(ranks(z, self.mimo_z))  # (b, H, ..., R, P)
        return y.squeeze(-2) if self.mimo_o is None else (y * per_head(self.mimo_o, y)).sum(-2)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u (b, L, D) -> (b, L, D)."""
        b, L, _ = u.shape
        with torch.autocast(device_type=u.device.type, enabled=False):
            z, x, B, C, dt, log_decay, trap, angles = self._project(u)
            dt, log_decay, trap = (X.transpose(1, 2) for X in (dt, log_decay, trap))  # (b, H, L)
            fused = not self.mimo_rank and mamba3_backend(u.device) == "mamba_ssm"
            if fused and self.negative_eigenvalues:
                raise ValueError("negative_eigenvalues: mamba_ssm's Mamba-3 kernel computes "
                                 "exp(ΔA) only; run this model with --device cpu")  # fmt: skip
            y = (self._fused if fused else self._chunked)(z, x, B, C, dt, log_decay, trap, angles)
        return self.out_proj(y.reshape(b, L, self.d_inner).to(u.dtype))  # (b, L, D)

    def _chunked(self, z, x, B, C, dt, log_decay, trap, angles) -> torch.Tensor:
        """The gated output (b, L, H, P) by ops.mamba3; dt, log_decay, trap (b, H, L)."""
        phase = cumulative_phase(angles, dt)  # (b, H, L, A)
        k, q = self._turned(B, C, phase)  # (b, H, L, R, N)
        log_decay, sign = signed_transition(log_decay, self.negative_eigenvalues)  # (b, H, L)
        if self.negative_eigenvalues:
            s = sign.cumprod(dim=-1)[..., None, None]  # (b, H, L, 1, 1): Π_{r<=t} sign a_r
            q, k = q * s, k * s
        v = ranks(x.transpose(1, 2), self.mimo_x)  # (b, H, L, R, P)
        y = mamba3_mimo(q, k, v, log_decay, dt, trap.sigmoid(), self.chunk)  # (b, H, L, R, P)
        return self._gated(y, v, z.transpose(1, 2)).transpose(1, 2)  # (b, L, H, P)

    def _fused(self, z, x, B, C, dt, log_decay, trap, angles) -> torch.Tensor:
        """The same by mamba_ssm's SISO kernel: B, C per group, biases, raw trap and angles."""
        angles = angles[:, :, None].expand(-1, -1, self.n_heads, -1)  # (b, L, H, A)
        kernel = optional_kernel(*KERNEL)
        return kernel(C[:, :, 0], B[:, :, 0], x, log_decay, dt, trap, self.C_bias[:, 0],
                      self.B_bias[:, 0], angles, self.D, z, chunk_size=self.chunk)  # fmt: skip

    def init_state(self, batch: int, like: torch.Tensor) -> tuple:
        """The rotary phase (b, H, A), the SSM state (b, H, N, P), the last rotated keys (b, H,
        R, N) and input x (b, H, P): mamba_ssm's (angle, ssm, k, v) states."""
        like = like.new_zeros(()).to(torch.promote_types(like.dtype, torch.float32))
        H, N, P, R = self.n_heads, self.d_state, self.headdim, max(self.mimo_rank, 1)
        shapes = ((H, self.n_angles), (H, N, P), (H, R, N), (H, P))
        return tuple(like.new_zeros(batch, *shape) for shape in shapes)

    @classmethod
    def state_size(cls, d_model: int, d_state: int, expand: int = 2, headdim: int = 64,
                   rope_fraction: float = 0.5, mimo_rank: int = 0) -> int:  # fmt: skip
        """Real elements per sequence: H (A + N·P + R·N + P), A angles, R = max(mimo_rank, 1)."""
        P = min(headdim, expand * d_model)
        H, A = expand * d_model // P, int(d_state * rope_fraction) // 2
        return H * (A + d_state * P + max(mimo_rank, 1) * d_state + P)

    def step(self, u: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        """u (b, D) -> (b, D): one position of the recurrence."""
        z, x, B, C, dt, log_decay, trap, angles = self._project(u)  # (b, H, ·), θ (b, A)
        phase = cumulative_phase(angles[:, None], dt[..., None], state[0])[:, :, 0]  # (b, H, A)
        k, q = self._turned(B, C, phase)  # (b, H, R, N)
        log_decay, sign = signed_transition(log_decay, self.negative_eigenvalues)  # (b, H)
        S, k_prev, x_prev = state[1:]  # a (S + ...) = |a| (sign S + sign ...)
        previous = (sign[..., None, None] * S, sign[..., None, None] * k_prev,
                    ranks(x_prev, self.mimo_x))  # fmt: skip
        v = ranks(x, self.mimo_x)  # (b, H, R, P)
        y, (S, k, _) = mamba3_mimo_step(previous, q, k, v, log_decay, dt, trap.sigmoid())
        y = self._gated(y, v, z)  # (b, H, P)
        return self.out_proj(y.flatten(1).to(u.dtype)), (phase, S, k, x)
