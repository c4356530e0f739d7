"""Which implementation of each kernel family a built model runs on a device, as results record it.

A module declares the kernel families it calls in its `kernels` attribute (read by
`backends_of`); each family has a result field and the function that resolves its backend:

    selective-scan -> scan_backend  ('cpp', 'torch-sequential', 'cuda-mamba_ssm', ...)
    causal-conv1d  -> conv_backend  ('causal_conv1d' kernel, 'torch-shifted' on CPU, or 'torch')
    ssd            -> ssd_backend   ('mamba_ssm' Triton kernel or 'torch')
    delta-rule     -> delta_rule_backend ('fla' Triton kernels or 'torch')
    mamba3         -> mamba3_backend ('mamba_ssm' Triton kernel or 'torch')
    mamba3-mimo    -> mamba3_mimo_backend ('torch': upstream's TileLang kernel not dispatched)

A field is None when the model calls no kernel of that family.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ssmbench.layers.mamba2 import ssd_backend
from ssmbench.layers.mamba3 import mamba3_backend, mamba3_mimo_backend
from ssmbench.models.registry import backends_of
from ssmbench.ops.causal_conv import conv_backend
from ssmbench.ops.delta_rule import delta_rule_backend
from ssmbench.ops.scan import resolve_backend

KERNEL_FIELDS: dict[str, tuple[str, Callable[[torch.device], str]]] = {
    "selective-scan": ("scan_backend", resolve_backend),
    "causal-conv1d": ("conv_backend", conv_backend),
    "ssd": ("ssd_backend", ssd_backend),
    "delta-rule": ("delta_rule_backend", delta_rule_backend),
    "mamba3": ("mamba3_backend", mamba3_backend),
    "mamba3-mimo": ("mamba3_mimo_backend", mamba3_mimo_backend),
}

# How reports name each field.
KERNEL_LABELS = {
    "scan_backend": "scan backend",
    "conv_backend": "causal conv",
    "ssd_backend": "SSD",
    "delta_rule_backend": "delta rule",
    "mamba3_backend": "Mamba-3",
    "mamba3_mimo_backend": "Mamba-3 MIMO",
}


def recorded_backends(model: nn.Module, device: torch.device) -> dict[str, str | None]:
    """Each kernel family's result field -> the backend `model` runs on `device`, or None."""
    used = backends_of(model)
    return {
        field: resolve(device) if kernel in used else None
        for kernel, (field, resolve) in KERNEL_FIELDS.items()
    }
