"""Optional fused CUDA kernels (mamba_ssm, causal-conv1d): found when their package imports, used
only for tensors on a kernel device; the callers fall back to their torch paths otherwise."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable

import torch

# Device types on which an installed fused kernel is used (these kernels are CUDA only).
KERNEL_DEVICES = frozenset({"cuda"})


@functools.cache
def optional_kernel(module: str, name: str) -> Callable | None:
    """`module.name` when its package imports (and loads its compiled library), else None."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, OSError, RuntimeError, AttributeError):
        return None


def on_kernel_device(device: torch.device | str) -> bool:
    """Whether an installed fused kernel may run for tensors on `device`."""
    return torch.device(device).type in KERNEL_DEVICES
