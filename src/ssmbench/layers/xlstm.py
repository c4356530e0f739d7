"""xLSTM's mLSTM and sLSTM blocks (Beck et al. 2024), following NX-AI/xlstm
`xlstm/blocks/mlstm/{layer,cell}.py` and `xlstm/blocks/slstm/{layer,cell}.py` with the vanilla
backend `slstm/src/vanilla/slstm.py`.

mLSTM block (no FFN), E = proj_factor·D rounded up to a multiple of 64, H heads of E/H:

    x_m, z = W_up x                                       (E each)
    c = SiLU(conv_4(x_m));  q, k = W_q c, W_k c;  v = W_v x_m   (block-diagonal, blocks of 4)
    ĩ, f̃ = W_i [q, k, v] + b_i, W_f [q, k, v] + b_f        (one gate per head)
    y = W_down ((GroupNorm_head(mLSTM(q, k, v, ĩ, f̃)) + s ⊙ c) ⊙ SiLU(z))   (`ops.mlstm`)

sLSTM block, H heads of D/H channels, the recurrent weights R block-diagonal per head:

    c = SiLU(conv_4(x));  (ĩ, f̃, z̃, õ)_t = (W_i c, W_f c, W_z x, W_o x)_t + R h_{t-1} + b
    m_t = max(log σ(f̃_t) + m_{t-1}, ĩ_t);  i_t = exp(ĩ_t - m_t);
    f_t = exp(log σ(f̃_t) + m_{t-1} - m_t)
    c_t = f_t c_{t-1} + i_t tanh(z̃_t),  n_t = f_t n_{t-1} + i_t,  h_t = σ(õ_t) c_t / n_t
    y = GroupNorm_head(h), then the gated FFN W_down (GELU(W_g y) ⊙ W_u y) (1.3·D rounded up to 64s)

h_{t-1} enters the gates, so the sLSTM runs as a loop over positions (its nature); m_0 = -∞ gives
upstream's first step m_1 = ĩ_1. Upstream's min(·, 1) on i and f is left out: m_t bounds both.

Inits as upstream (small-init and Wang-init projections, the forget-gate biases, zero recurrent
weights, the residual-form norm weights 1 + w); where upstream scales an init by the block's index
or the number of blocks, a layer built alone takes index 0 of 1. Weight decay as upstream's rule
(`WeightDecayOptimGroupMixin`): none on a parameter whose name lacks 'weight' or has 'norm'
(biases, norms, the skip, the recurrent kernel). `step` runs one position on the recurrent state.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ssmbench.layers.linear_attention import heads
from ssmbench.layers.marks import NO_WEIGHT_DECAY, mark_where
from ssmbench.ops.causal_conv import causal_conv1d
from ssmbench.ops.mlstm import mlstm, mlstm_initial_state, mlstm_step

State = tuple[torch.Tensor, ...]


def up_dim(factor: float, d_model: int) -> int:
    """xLSTM's up-projection width: factor·D rounded up to a multiple of 64."""
    return 64 * math.ceil(factor * d_model / 64)


def no_upstream_decay(module: nn.Module) -> None:
    """xLSTM's rule: weight decay only on parameters named '...weight...' outside norms."""
    mark_where(module, lambda name: "weight" not in name or "norm" in name, **NO_WEIGHT_DECAY)


def small_init_(weight: torch.Tensor, dim: int) -> None:
    nn.init.normal_(weight, std=math.sqrt(2 / (5 * dim)))  # Nguyen & Salazar 2019


def wang_init_(weight: torch.Tensor, dim: int, n_blocks: int = 1) -> None:
    nn.init.normal_(weight, std=2 / n_blocks / math.sqrt(dim))


def head_norm(h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """xLSTM's MultiHeadLayerNorm: h (B, H, L, d) normalized per head, times 1 + weight (H·d,)
    -> (B, L, H·d)."""
    H, d = h.shape[1], h.shape[3]
    h = F.layer_norm(h, (d,), eps=1e-5) * (1 + weight.view(H, 1, d))
    return h.transpose(1, 2).flatten(2)


def conv_step(
    window: torch.Tensor, x: torch.Tensor, conv: nn.Conv1d
) -> tuple[torch.Tensor, torch.Tensor]:
    """One position of the causal depthwise conv: window (B, C, W - 1) holds the past inputs, x
    (B, C) -> y (B, C) before the activation, and the next window."""
    full = torch.cat([window, x[..., None]], dim=-1)  # (B, C, W)
    return (full * conv.weight[:, 0]).sum(-1) + conv.bias, full[..., 1:]


def causal_conv(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """SiLU(conv(x)), causal: x (B, L, C) -> (B, L, C)."""
    return causal_conv1d(x.mT, conv.weight[:, 0], conv.bias, activation="silu").mT


def depthwise(channels: int, width: int) -> nn.Conv1d:
    if width < 1:
        raise ValueError(f"conv_kernel must be >= 1, got {width}")
    return nn.Conv1d(channels, channels, width, groups=channels, padding=width - 1)


class HeadwiseLinear(nn.Module):
    """A block-diagonal linear map (xLSTM's LinearHeadwiseExpand): n blocks of d/n -> d/n."""

    def __init__(self, features: int, n_blocks: int, init_dim: int) -> None:
        super().__init__()
        if features % n_blocks:
            raise ValueError(f"{features} features do not split into {n_blocks} blocks")
        self.n_blocks = n_blocks
        size = features // n_blocks
        self.weight = nn.Parameter(torch.empty(n_blocks, size, size))
        small_init_(self.weight, init_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., features) -> (..., features)."""
        x = x.unflatten(-1, (self.n_blocks, -1))  # (..., n, d/n)
        return torch.einsum("...hd,hod->...ho", x, self.weight).flatten(-2)


class MLSTM(nn.Module):
    kernels = ("causal-conv1d",)  # read by models.backends_of: the recorded conv backend

    def __init__(
        self,
        d_model: int,
        n_heads: int = 4,
        proj_factor: float = 2.0,
        conv_kernel: int = 4,
        qkv_blocksize: int = 4,
    ) -> None:
        super().__init__()
        E = up_dim(proj_factor, d_model)
        if E % n_heads or E % qkv_blocksize:
            raise ValueError(f"the inner width {E} must split into {n_heads} heads and blocks "
                             f"of {qkv_blocksize}")  # fmt: skip
        self.n_heads = n_heads
        self.proj_up = nn.Linear(d_model, 2 * E, bias=False)
        small_init_(self.proj_up.weight, d_model)
        self.q_proj, self.k_proj, self.v_proj = (
            HeadwiseLinear(E, E // qkv_blocksize, d_model) for _ in range(3))  # fmt: skip
        self.conv1d = depthwise(E, conv_kernel)
        self.igate, self.fgate = nn.Linear(3 * E, n_heads), nn.Linear(3 * E, n_heads)
        nn.init.zeros_(self.igate.weight)
        nn.init.normal_(self.igate.bias, std=0.1)
        nn.init.zeros_(self.fgate.weight)
        with torch.no_grad():
            self.fgate.bias.copy_(torch.linspace(3.0, 6.0, n_heads))
        self.outnorm_weight = nn.Parameter(torch.zeros(E))  # the norm's weight is 1 + this
        self.learnable_skip = nn.Parameter(torch.ones(E))
        self.proj_down = nn.Linear(E, d_model, bias=False)
        wang_init_(self.proj_down.weight, d_model)
        no_upstream_decay(self)

    def _cell_inputs(self, x_m: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x_m, c (B, L, E) -> q, k, v (B, H, L, E/H) and ĩ, f̃ (B, H, L)."""
        q, k, v = self.q_proj(c), self.k_proj(c), self.v_proj(x_m)  # (B, L, E)
        qkv = torch.cat([q, k, v], dim=-1)  # (B, L, 3E)
        H = self.n_heads
        gates = (self.igate(qkv).transpose(1, 2), self.fgate(qkv).transpose(1, 2))  # (B, H, L)
        return heads(q, H), heads(k, H), heads(v, H), *gates

    def _out(self, h: torch.Tensor, c: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """h (B, H, L, E/H), c, z (B, L, E) -> y (B, L, D)."""
        h = head_norm(h, self.outnorm_weight)  # (B, L, E)
        return self.proj_down((h + self.learnable_skip * c) * F.silu(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, L, D) -> (B, L, D)."""
        x_m, z = self.proj_up(x).chunk(2, dim=-1)  # (B, L, E) each
        c = causal_conv(x_m, self.conv1d)
        return self._out(mlstm(*self._cell_inputs(x_m, c)), c, z)

    def init_state(self, batch: int, like: torch.Tensor) -> State:
        """The conv's past inputs (B, E, W - 1), then the cell's C, n and m."""
        E, W = self.conv1d.in_channels, self.conv1d.kernel_size[0]
        d = E // self.n_heads
        return like.new_zeros(batch, E, W - 1), *mlstm_initial_state(
            batch, self.n_heads, d, d, like
        )

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One position: x (B, D) and the state -> y (B, D) and the next state."""
        window, *cell = state
        x_m, z = self.proj_up(x).chunk(2, dim=-1)  # (B, E) each
        c, window = conv_step(window, x_m, self.conv1d)
        c = F.silu(c)
        q, k, v, i, f = (t[:, :, 0] for t in self._cell_inputs(x_m[:, None], c[:, None]))
        h, cell = mlstm_step(tuple(cell), q, k, v, i, f)  # (B, H, E/H)
        return self._out(h[:, :, None], c[:, None], z[:, None])[:, 0], (window, *cell)


class SLSTM(nn.Module):
    kernels = ("causal-conv1d",)  # read by models.backends_of: the recorded conv backend

    def __init__(self, d_model: int, n_heads: int = 4, conv_kernel: int = 4) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be a multiple of n_heads ({n_heads})")
        self.n_heads = n_heads
        d = d_model // n_heads
        self.conv1d = depthwise(d_model, conv_kernel)
        self.i_proj, self.f_proj, self.z_proj, self.o_proj = (
            HeadwiseLinear(d_model, n_heads, d_model) for _ in range(4))  # fmt: skip
        self.recurrent_kernel = nn.Parameter(torch.zeros(n_heads, d, 4 * d))  # h -> i, f, z, o
        bias = torch.zeros(n_heads, 4, d)  # per head and gate; the forget gate's as a power law
        bias[:, 1] = 5.0 - 12.0 * torch.linspace(0.0, 1.0, d) ** 0.3
        self.bias = nn.Parameter(bias)
        self.norm_weight = nn.Parameter(torch.zeros(d_model))  # the norm's weight is 1 + this
        no_upstream_decay(self)

    def _inputs(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x, c (B, L, D) -> the gates' input parts W x + b (B, L, H, 4, D/H)."""
        wx = torch.stack([self.i_proj(c), self.f_proj(c), self.z_proj(x), self.o_proj(x)], -2)
        return wx.unflatten(-1, (self.n_heads, -1)).transpose(-3, -2) + self.bias

    def _cell(self, wx: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One step of the cell: wx (B, H, 4, d), state h, c, n, m (B, H, d) -> h, next state."""
        h, c, n, m = state
        raw = wx + (h[..., None, :] @ self.recurrent_kernel).unflatten(-1, (4, -1))[:, :, 0]
        i_pre, f_pre, z_pre, o_pre = raw.unbind(2)  # (B, H, d) each
        log_f = m + F.logsigmoid(f_pre)
        m = torch.maximum(i_pre, log_f)
        i, f = torch.exp(i_pre - m), torch.exp(log_f - m)
        c = f * c + i * torch.tanh(z_pre)
        n = f * n + i
        h = torch.sigmoid(o_pre) * c / n
        return h, (h, c, n, m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, L, D) -> (B, L, D)."""
        wx = self._inputs(x, causal_conv(x, self.conv1d))  # (B, L, H, 4, d)
        state = self.init_state(x.shape[0], x)[1:]
        out = []
        for wx_t in wx.unbind(1):
            h, state = self._cell(wx_t, state)
            out.append(h)
        return head_norm(torch.stack(out, dim=2), self.norm_weight)  # (B, H, L, d) -> (B, L, D)

    def init_state(self, batch: int, like: torch.Tensor) -> State:
        """The conv's past inputs (B, D, W - 1), then h, c, n (zero) and m (-∞), (B, H, D/H)."""
        D, W = self.conv1d.in_channels, self.conv1d.kernel_size[0]
        zeros = like.new_zeros(batch, self.n_heads, D // self.n_heads)
        return (
            like.new_zeros(batch, D, W - 1),
            zeros,
            zeros,
            zeros,
            torch.full_like(zeros, -torch.inf),
        )

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One position: x (B, D) and the state -> y (B, D) and the next state."""
        window, *cell = state
        c, window = conv_step(window, x, self.conv1d)
        h, cell = self._cell(self._inputs(x[:, None], F.silu(c)[:, None])[:, 0], tuple(cell))
        return head_norm(h[:, :, None], self.norm_weight)[:, 0], (window, *cell)


class GatedFeedForward(nn.Module):
    """xLSTM's gated FFN after the sLSTM: W_down (GELU(W_g x) ⊙ W_u x), no biases."""

    def __init__(self, d_model: int, proj_factor: float = 1.3) -> None:
        super().__init__()
        up = up_dim(proj_factor, d_model)
        self.proj_up = nn.Linear(d_model, 2 * up, bias=False)
        self.proj_down = nn.Linear(up, d_model, bias=False)
        small_init_(self.proj_up.weight, d_model)
        wang_init_(self.proj_down.weight, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, L, D) -> (B, L, D)."""
        gate, up = self.proj_up(x).chunk(2, dim=-1)
        return self.proj_down(F.gelu(gate) * up)

    def init_state(self, batch: int, like: torch.Tensor) -> None:
        return None  # position-wise: nothing to carry

    def step(self, x: torch.Tensor, state: None) -> tuple[torch.Tensor, None]:
        """x (B, D) -> (B, D)."""
        return self(x), None
