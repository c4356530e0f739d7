"""Checks made once, before any cell starts or anything is written: does this sweep fit here?

Each raises ConfigError (one line: what is wrong, how to fix it) or returns notes to print.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ssmbench.experiment.config import CellConfig, ConfigError, SweepConfig

GiB = 2**30
# Bytes of saved activations per (sample, position, channel, layer) in a training step: float32
# values of the widest mixer (S6 keeps a d_state-wide state per channel for the backward pass),
# plus a few d_model-wide tensors (projections, gate, norm, residual).
_FLOAT = 4
_WIDE_TENSORS = 8


def training_bytes(cell: CellConfig) -> int:
    """Rough peak memory of a cell: batch × length × width × layers × (N + 8) × 4 B, plus the
    fixed validation and test sets (int64 tokens)."""
    a, hp, length = cell.arch, cell.train, cell.seq_len
    activations = hp.batch_size * length * a.d_model * a.n_layers * (a.d_state + _WIDE_TENSORS)
    fixed_sets = 2 * (hp.val_size + hp.test_size) * length * 8
    return activations * _FLOAT + fixed_sets


def available_bytes(device: torch.device) -> int | None:
    """Free memory on `device`: CUDA's free bytes, or the host's MemAvailable; None if unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(config: SweepConfig, device: torch.device) -> None:
    """Refuse a sweep whose largest cell would clearly not fit in memory."""
    cell = max(config.cells(), key=training_bytes)
    need, have = training_bytes(cell), available_bytes(device)
    if have is None or need <= have:
        return
    raise ConfigError(
        f"length {cell.seq_len} × batch {cell.train.batch_size} × width "
        f"{cell.arch.d_model} needs about {need / GiB:.1f} GiB, more than the "
        f"{have / GiB:.1f} GiB free on {device.type}; lower --lengths or the batch size, "
        "or pass --skip-memory-check"
    )


def check_scan(config: SweepConfig, device: torch.device) -> None:
    """The scan backend asked for must run on the device the cells will use."""
    from ssmbench.ops.scan import resolve_backend

    try:
        resolve_backend(device, config.scan)
    except ValueError as e:
        raise ConfigError(f"--scan {config.scan}: {e}") from None


def scan_note(config: SweepConfig, device: torch.device) -> str | None:
    """A warning when 'auto' cannot use the fused CPU scan and falls back to torch's."""
    from ssmbench.ops import scan_fused
    from ssmbench.ops.scan import resolve_backend

    if device.type != "cpu" or config.scan not in (None, "auto") or scan_fused.available():
        return None
    fallback = resolve_backend(device, config.scan)
    return (
        f"warning: the fused CPU scan is unavailable ({scan_fused.why_unavailable()}); "
        f"the S6 and Mamba models use {fallback}, about 3x slower"
    )


def threads_note(config: SweepConfig) -> str | None:
    cores = os.cpu_count() or 1
    total = (config.threads or 0) * (config.workers if config.executor == "local" else 1)
    if config.threads is None or total <= cores:
        return None
    return (
        f"warning: --threads {config.threads} × {config.workers} worker(s) asks for more than "
        f"this machine's {cores} cores; cells will run slower, not faster"
    )
