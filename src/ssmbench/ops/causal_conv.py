"""Causal depthwise convolution: Mamba's short convolution before the SSM (Gu & Dao 2023, Fig. 3).

Per batch b, channel d and time t, with a width-W filter w (D, W) and x zero before t = 0:

    y[b, d, t] = act(bias[d] + sum_{k<W} w[d, k] x[b, d, t - (W - 1) + k]),   act = SiLU or none

Shapes: x (B, D, L) in any layout, weight (D, W), bias (D,) or None -> y (B, D, L).
On CUDA tensors, when the `causal-conv1d` package imports, its fused kernel `causal_conv1d_fn`
(Dao-AILab/causal-conv1d, the one mamba_ssm uses) runs; on the CPU `causal_conv1d_shifted`, the
sum written out as W shifted multiply-adds (torch's grouped conv1d is 10-15x slower there from
L ~ 500 on, its backward: 7 ms at L 272, 105 ms at L 512 for B 16, D 128 on 2 cores); elsewhere
`causal_conv1d_reference`, torch's grouped conv1d. `conv_backend(device)` says which runs, and
results record it.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from ssmbench.ops.optional import on_kernel_device, optional_kernel
from ssmbench.ops.profiling import scoped

Activation = Literal["silu"] | None
KERNEL = ("causal_conv1d", "causal_conv1d_fn")  # the optional kernel: module, function


def conv_backend(device: torch.device | str) -> str:
    """What `causal_conv1d` runs on `device`: 'causal_conv1d' (the fused kernel), 'torch-shifted'
    (the CPU) or 'torch'."""
    if on_kernel_device(device) and optional_kernel(*KERNEL):
        return "causal_conv1d"
    return "torch-shifted" if torch.device(device).type == "cpu" else "torch"


def causal_conv1d_reference(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: Activation
) -> torch.Tensor:
    """The convolution of the module docstring with torch's grouped conv1d: x (B, D, L)."""
    D, W = weight.shape
    y = F.conv1d(x, weight[:, None], bias, padding=W - 1, groups=D)[..., : x.shape[-1]]
    return F.silu(y) if activation == "silu" else y  # (B, D, L)


def causal_conv1d_shifted(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: Activation
) -> torch.Tensor:
    """The same convolution as W multiply-adds of shifted copies of x: x (B, D, L)."""
    D, W = weight.shape
    L = x.shape[-1]
    padded = F.pad(x, (W - 1, 0))  # (B, D, W - 1 + L), zeros before t = 0
    first = padded[..., :L]  # (B, D, L): the tap k = 0, x_{t - (W - 1)}
    if bias is None:
        y = first * weight[:, :1]
    else:
        y = torch.addcmul(bias[:, None], first, weight[:, :1])
    for k in range(1, W):  # one fused multiply-add pass per tap
        y = torch.addcmul(y, padded[..., k : k + L], weight[:, k : k + 1])  # (B, D, L)
    return F.silu(y) if activation == "silu" else y


@scoped("short conv")
def causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: Activation = None,
) -> torch.Tensor:
    """x (B, D, L), weight (D, W), bias (D,) -> y (B, D, L), on the backend `conv_backend` picks."""
    backend = conv_backend(x.device)
    if backend == "causal_conv1d":
        return optional_kernel(*KERNEL)(x=x, weight=weight, bias=bias, activation=activation)
    if backend == "torch-shifted":
        return causal_conv1d_shifted(x, weight, bias, activation)
    return causal_conv1d_reference(x, weight, bias, activation)


def causal_conv1d_step(
    x: torch.Tensor,
    state: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: Activation = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One position of causal_conv1d (recurrent decoding): x (B, D) the new input, state
    (B, D, W - 1) the W - 1 inputs before it, oldest first -> y (B, D) and the next state."""
    window = torch.cat([state, x[..., None]], dim=-1)  # (B, D, W)
    y = (window * weight).sum(-1)  # (B, D)
    if bias is not None:
        y = y + bias
    return (F.silu(y) if activation == "silu" else y), window[..., 1:]
