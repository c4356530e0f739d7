"""The delta-rule mixers on ops.delta_rule, each structured as its fla layer.

Shared by all five (fla `fla/layers/{delta_net,gated_deltanet,kda,gdn2,gated_deltaproduct}.py`),
per position x_t (D,), with H heads of key size K and value size V:

    q, k, v = SiLU(conv1d_causal(W_q x, W_k x, W_v x))   width 4, no bias, per channel
    q <- K^-1/2 q/||q||,  k <- k/||k||                   (x / sqrt(Σx² + 1e-6), fla's l2norm)
    β = sigmoid(W_b x), times 2 with negative_eigenvalues (fla's allow_neg_eigval: β in [0, 2])
    o = delta_rule(q, k, v, β, log-decay, write);   out = W_o (RMSNorm_head(o) ⊙ gate(x))

and they differ in their gates:

- DeltaNet (Yang et al. 2024): no decay; output RMSNorm without a gate (fla's use_gate=False).
- Gated DeltaNet (Yang, Kautz & Hatamizadeh 2025): a = -exp(A_log) softplus(W_a x + dt_bias), a
  scalar per head, A_log = log U(0, 16), dt_bias = softplus^-1(dt), dt log-uniform in [1e-3,
  1e-1] (as Mamba-2); output gate SiLU(W_g x).
- KDA (Kimi Linear 2025): the same decay per key channel, W_a x replaced by a low-rank
  W_f2 W_f1 x (rank V), A_log = log U(1, 16) per head, dt_bias per channel; output gate
  sigmoid(W_g2 W_g1 x + c) (rank V).
- Gated DeltaNet-2 (fla `fla/layers/gdn2.py`): KDA with β per key channel (erase gate, (K,)) and
  a write gate w = sigmoid(W_w x) per value channel.
- Gated DeltaProduct (Siems et al. 2025): Gated DeltaNet with n_h keys, values and betas per
  token (`householder`, default 2) and negative eigenvalues on by default (as fla).

A_log and dt_bias take no weight decay (fla's `_no_weight_decay`). `step` is each layer's
recurrent form: one position from the state (the conv's last 3 inputs, the delta rule's S).
`chunk` is the op's chunk: 32 by default, 8 for KDA and GDN-2, whose per-channel decays cost
s·K per position in sub-chunks of s = 4 (chunks 8 and 16 were the fastest of 8-32 with
sub-chunks of 2-8, within 20% of each other; op forward + backward, 2 CPU cores, L 72 and 1032).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ssmbench.layers.linear_attention import GatedOutput, heads
from ssmbench.layers.mamba2 import dt_bias_init
from ssmbench.layers.marks import NO_WEIGHT_DECAY, mark
from ssmbench.ops.causal_conv import causal_conv1d, causal_conv1d_step
from ssmbench.ops.delta_rule import (
    delta_product,
    delta_rule,
    delta_rule_step,
    householder_substeps,
)

Gate = Literal["silu", "sigmoid", "none"]
State = tuple[torch.Tensor, torch.Tensor]  # conv inputs (B, C, d_conv - 1), S (B, H, K, V)


def l2_normalize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """x / sqrt(Σ x² + eps) over the last axis (fla's l2norm)."""
    return x * torch.rsqrt(x.square().sum(-1, keepdim=True) + eps)


class DeltaOutput(GatedOutput):
    """GatedOutput (RMSNorm per head ⊙ SiLU(W_g x)) with fla's other output gates: 'sigmoid'
    (KDA, GDN-2: sigmoid(W_g2 W_g1 x + c), rank V per head) and 'none' (the norm alone)."""

    def __init__(self, d_model: int, value_dim: int, n_heads: int, gate: Gate) -> None:
        super().__init__(d_model, value_dim, n_heads)
        self.gate = gate
        if gate == "sigmoid":
            rank = value_dim // n_heads
            self.g_proj = nn.Sequential(
                nn.Linear(d_model, rank, bias=False), nn.Linear(rank, value_dim)
            )
        elif gate == "none":
            self.g_proj = None

    def forward(self, o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """o (B, H, L, V), x (B, L, D) -> (B, L, D)."""
        if self.gate == "silu":
            return super().forward(o, x)
        o = F.rms_norm(o, o.shape[-1:], self.norm_weight, eps=1e-5).transpose(1, 2).flatten(2)
        return self.o_proj(o if self.g_proj is None else o * torch.sigmoid(self.g_proj(x)))


class DeltaRuleMixer(nn.Module):
    """What the five layers share (module docstring); subclasses add their gates (`gates`)."""

    kernels = ("causal-conv1d", "delta-rule")  # read by models.backends_of: recorded backends
    key_ratio = 1.0  # key width / d_model when head_dim is not given (fla's layer defaults)
    value_ratio = 1.0  # value width / key width (fla's expand_v)
    erase_per_channel = False  # β per key channel (GDN-2) or per head

    @classmethod
    def widths(cls, d_model: int, n_heads: int, head_dim: int = 0) -> tuple[int, int]:
        """(K, V) per head: head_dim, by default key_ratio·d_model / n_heads; V = value_ratio·K."""
        key_dim = head_dim * n_heads or cls.key_ratio * d_model
        if n_heads < 1 or head_dim < 0 or key_dim % n_heads:
            raise ValueError(
                f"{key_dim:g} key channels ({cls.key_ratio:g} x d_model {d_model}) do not split "
                f"into n_heads {n_heads}; choose n_heads dividing them or give head_dim"
            )
        K = int(key_dim) // n_heads
        if (K * cls.value_ratio) % 1:
            raise ValueError(f"value head size {cls.value_ratio:g} x {K} is not an integer")
        return K, int(K * cls.value_ratio)

    @classmethod
    def state_size(
        cls, d_model: int, n_heads: int, head_dim: int = 0, householder: int = 1, d_conv: int = 4
    ) -> int:
        """Elements of the recurrent state per sequence: the conv's d_conv - 1 inputs, H·K·V."""
        K, V = cls.widths(d_model, n_heads, head_dim)
        conv_channels = n_heads * (K + householder * (K + V))
        return (d_conv - 1) * conv_channels + n_heads * K * V

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        head_dim: int = 0,
        householder: int = 1,
        negative_eigenvalues: bool = False,
        output_gate: Gate = "silu",
        d_conv: int = 4,
        chunk: int = 32,
    ) -> None:
        super().__init__()
        if householder < 1:
            raise ValueError(f"householder must be >= 1, got {householder}")
        self.head_k, self.head_v = self.widths(d_model, n_heads, head_dim)
        self.n_heads, self.householder, self.chunk = n_heads, householder, chunk
        self.negative_eigenvalues = negative_eigenvalues
        key_dim, value_dim = n_heads * self.head_k, n_heads * self.head_v
        self.split = [key_dim, householder * key_dim, householder * value_dim]  # q, k, v
        self.qkv_proj = nn.Linear(d_model, sum(self.split), bias=False)  # fla's q/k/v_proj
        self.conv1d = nn.Conv1d(sum(self.split), sum(self.split), d_conv, groups=sum(self.split),
                                bias=False)  # fmt: skip
        erase = key_dim if self.erase_per_channel else householder * n_heads
        self.b_proj = nn.Linear(d_model, erase, bias=False)
        self.out = DeltaOutput(d_model, value_dim, n_heads, output_gate)

    def gates(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x (B, L, D) -> delta_rule's beta (and log_decay, write) in heads: here β alone."""
        beta = torch.sigmoid(self.b_proj(x))  # (B, L, n_h·H) or (B, L, H·K)
        beta = 2 * beta if self.negative_eigenvalues else beta  # in [0, 2]: fla's allow_neg_eigval
        if self.erase_per_channel:
            return {"beta": heads(beta, self.n_heads)}  # (B, H, L, K)
        beta = beta.unflatten(-1, (self.householder, self.n_heads)).permute(0, 3, 1, 2)
        return {"beta": beta[..., 0] if self.householder == 1 else beta}  # (B, H, L[, n_h])

    def qkv(self, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The convolved projections c (B, C, L) -> q (B, H, L, K), k (B, H, L[, n_h], K), v."""
        q, k, v = c.split(self.split, dim=1)
        H, n = self.n_heads, self.householder
        q = l2_normalize(q.unflatten(1, (H, -1)).mT) * self.head_k**-0.5  # (B, H, L, K)
        k, v = (x.unflatten(1, (n, H, -1)).permute(0, 2, 4, 1, 3) for x in (k, v))
        k = l2_normalize(k)  # (B, H, L, n_h, K); fla's layout (n_h, H, K) per position
        return (q, k[:, :, :, 0], v[:, :, :, 0]) if n == 1 else (q, k, v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, L, D) -> (B, L, D)."""
        # in (B, C, L) throughout: the conv's backward is ~2x slower on a transposed gradient
        u = torch.matmul(self.qkv_proj.weight, x.mT)  # (B, C, L): W_qkv x
        c = causal_conv1d(u, self.conv1d.weight[:, 0], None, activation="silu")  # (B, C, L)
        dtype = torch.promote_types(x.dtype, torch.float32)  # the recurrence never in half
        with torch.autocast(device_type=x.device.type, enabled=False):
            q, k, v = (t.to(dtype) for t in self.qkv(c))
            gates = {name: g.to(dtype) for name, g in self.gates(x).items()}
            if self.householder > 1:
                o = delta_product(q, k, v, **gates, chunk=self.chunk)  # (B, H, L, V)
            else:
                o = delta_rule(q, k, v, **gates, chunk=self.chunk)  # (B, H, L, V)
        return self.out(o.to(x.dtype), x)

    def init_state(self, batch: int, like: torch.Tensor) -> State:
        """Zero state: conv inputs (B, C, d_conv - 1) and S (B, H, K, V)."""
        p = self.conv1d.weight
        conv = like.new_zeros(batch, p.shape[0], p.shape[-1] - 1)
        return conv, like.new_zeros(batch, self.n_heads, self.head_k, self.head_v)

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """The recurrent form: one position x (B, D) from state -> (y (B, D), the next state),
        by ops.delta_rule_step (DeltaProduct: its n_h sub-steps)."""
        conv, S = state
        weight = self.conv1d.weight[:, 0]  # (C, d_conv)
        c, conv = causal_conv1d_step(self.qkv_proj(x), conv, weight, activation="silu")  # (B, C)
        q, k, v = self.qkv(c[..., None])  # (B, H, 1, ·)
        gates = self.gates(x[:, None])
        if self.householder > 1:
            steps = (*householder_substeps(q, k, v, **gates), None)
        else:
            steps = (q, k, v, gates["beta"], gates.get("log_decay"), gates.get("write"))
        n = self.householder
        for sub in zip(*([None] * n if t is None else t.unbind(2) for t in steps), strict=True):
            o, S = delta_rule_step(S, *sub)  # o (B, H, V): read after the last sub-step
        return self.out(o[:, :, None], x[:, None])[:, 0], (conv, S)

    def recurrent(self, x: torch.Tensor) -> tuple[torch.Tensor, State]:
        """x (B, L, D) through `step`, one position at a time -> (y (B, L, D), final state)."""
        state, out = self.init_state(x.shape[0], x), []
        for x_t in x.unbind(1):
            y_t, state = self.step(x_t, state)
            out.append(y_t)
        return torch.stack(out, dim=1), state


class DeltaNet(DeltaRuleMixer):
    """fla `DeltaNet` (expand_k = expand_v = 1, use_beta, qk SiLU + L2 norm)."""

    def __init__(
        self,
        d_model: int,
        n_heads: int = 4,
        head_dim: int = 0,
        use_gate: bool = False,
        negative_eigenvalues: bool = False,
        chunk: int = 32,
    ) -> None:
        gate = "silu" if use_gate else "none"
        super().__init__(d_model, n_heads, head_dim, 1, negative_eigenvalues, gate, chunk=chunk)


class GatedDeltaNet(DeltaRuleMixer):
    """fla `GatedDeltaNet` (key width 0.75·d_model, expand_v 2, use_gate)."""

    key_ratio, value_ratio = 0.75, 2.0

    def __init__(
        self,
        d_model: int,
        n_heads: int = 2,
        head_dim: int = 0,
        householder: int = 1,
        negative_eigenvalues: bool = False,
        chunk: int = 32,
    ) -> None:
        super().__init__(d_model, n_heads, head_dim, householder, negative_eigenvalues, chunk=chunk)
        self.a_proj = nn.Linear(d_model, n_heads, bias=False)
        self.A_log = nn.Parameter(torch.empty(n_heads).uniform_(0, 16).log())  # (H,)
        self.dt_bias = nn.Parameter(dt_bias_init(n_heads))  # (H,)
        mark(self, "A_log", "dt_bias", **NO_WEIGHT_DECAY)

    def gates(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        a = -self.A_log.exp() * F.softplus(self.a_proj(x) + self.dt_bias)  # (B, L, H) <= 0
        return {**super().gates(x), "log_decay": a.transpose(1, 2)}  # (B, H, L)


class GatedDeltaProduct(GatedDeltaNet):
    """fla `GatedDeltaProduct` (num_householder 2, use_forget_gate, allow_neg_eigval True)."""

    def __init__(
        self,
        d_model: int,
        n_heads: int = 2,
        head_dim: int = 0,
        householder: int = 2,
        negative_eigenvalues: bool = True,
        chunk: int = 32,
    ) -> None:
        super().__init__(d_model, n_heads, head_dim, householder, negative_eigenvalues, chunk)


class KDA(DeltaRuleMixer):
    """fla `KimiDeltaAttention` (expand_v 1, key width d_model)."""

    def __init__(
        self,
        d_model: int,
        n_heads: int = 4,
        head_dim: int = 0,
        negative_eigenvalues: bool = False,
        chunk: int = 8,
    ) -> None:
        super().__init__(
            d_model, n_heads, head_dim, 1, negative_eigenvalues, "sigmoid", chunk=chunk
        )
        key_dim = n_heads * self.head_k
        self.f_proj = nn.Sequential(
            nn.Linear(d_model, self.head_v, bias=False), nn.Linear(self.head_v, key_dim, bias=False)
        )
        self.A_log = nn.Parameter(torch.empty(n_heads).uniform_(1, 16).log())  # (H,)
        self.dt_bias = nn.Parameter(dt_bias_init(key_dim))  # (H·K,)
        mark(self, "A_log", "dt_bias", **NO_WEIGHT_DECAY)

    def gates(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = heads(F.softplus(self.f_proj(x) + self.dt_bias), self.n_heads)  # (B, H, L, K)
        return {**super().gates(x), "log_decay": -self.A_log.exp()[:, None, None] * f}


class GatedDeltaNet2(KDA):
    """fla `GatedDeltaNet2`: KDA with an erase gate per key and a write gate per value channel."""

    erase_per_channel = True

    def __init__(
        self,
        d_model: int,
        n_heads: int = 4,
        head_dim: int = 0,
        negative_eigenvalues: bool = False,
        chunk: int = 8,
    ) -> None:
        super().__init__(d_model, n_heads, head_dim, negative_eigenvalues, chunk)
        self.w_proj = nn.Linear(d_model, n_heads * self.head_v, bias=False)

    def gates(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        write = heads(torch.sigmoid(self.w_proj(x)), self.n_heads)  # (B, H, L, V)
        return {**super().gates(x), "write": write}
