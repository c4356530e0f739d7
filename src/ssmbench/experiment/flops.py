"""How far a training step runs from the machine's peak: its FLOPs, and the peak, measured.

FLOPs of one training step (forward, backward, optimizer step), counted as

    torch.utils.flop_counter.FlopCounterMode   matmuls, convolutions, attention (2 per multiply-add)
  + FFTs, analytically (its custom_mapping): a real FFT of length n costs 2.5 n log2 n, a complex
        one 5 n log2 n (the radix-2 count), for rfft/irfft/fft in the forward and the backward
  + the selective scan, analytically (ssmbench.ops.scan.scan_flops): per (batch, channel, step,
        state) 7 in the forward (Δ A, exp, decay h, Δ u B, add, h C, sum) and 15 in the backward
        (the adjoint and the gradients of Δ, A, B, C; the fused kernel's recomputation of the
        states is not counted, as activation recomputation is not counted in model FLOPs).

Elementwise work (activations, norms, the gating, Adam's update) is not counted: the figure is the
model's arithmetic in the operations that can run near peak, the usual basis of "model FLOPs
utilization". The peak is a float32 matmul (n x n by n x n, 2 n^3 FLOPs) timed on the same
device and threads just before: the fraction of peak is (FLOPs / step time) / that rate.
"""

from __future__ import annotations

import contextlib
import copy
import math
import statistics
import time
from collections.abc import Callable, Iterator

import torch
from torch.utils.flop_counter import FlopCounterMode

from ssmbench.ops import scan


def _fft_flops(points: int, n: int, per_point: float) -> int:
    """`points` values transformed in FFTs of length n: per_point n log2 n per n values."""
    return int(per_point * points * math.log2(n)) if n > 1 else 0


def _transformed_length(shape, dims) -> int:
    return math.prod(shape[d] for d in dims)


def _r2c(x_shape, dim, normalization, onesided, out_shape=None, **kwargs) -> int:
    return _fft_flops(math.prod(x_shape), _transformed_length(x_shape, dim), 2.5)


def _c2r(x_shape, dim, normalization, last_dim_size, out_shape=None, **kwargs) -> int:
    return _fft_flops(math.prod(out_shape), _transformed_length(out_shape, dim), 2.5)


def _c2c(x_shape, dim, normalization, forward, out_shape=None, **kwargs) -> int:
    return _fft_flops(math.prod(x_shape), _transformed_length(x_shape, dim), 5.0)


PEAK_FIGURES = ("train_flops", "tokens_per_s", "achieved_gflops", "peak_gflops", "peak_fraction")
FFT_FLOPS = {
    torch.ops.aten._fft_r2c: _r2c,
    torch.ops.aten._fft_c2r: _c2r,
    torch.ops.aten._fft_c2c: _c2c,
}


@contextlib.contextmanager
def _counting_scans() -> Iterator[list[int]]:
    """Each selective_scan call inside adds its scan_flops to the yielded list."""
    counts: list[int] = []
    scan.FLOP_OBSERVERS.append(counts.append)
    try:
        yield counts
    finally:
        scan.FLOP_OBSERVERS.remove(counts.append)


def count_flops(step: Callable[[], object]) -> int:
    """FLOPs of running `step` once, as the module docstring counts them."""
    with (
        FlopCounterMode(display=False, custom_mapping=FFT_FLOPS) as counter,
        _counting_scans() as scans,
    ):
        step()
    return counter.get_total_flops() + sum(scans)


MATMUL_N = 2048


def matmul_peak_gflops(device: torch.device, n: int = MATMUL_N, repeats: int = 5) -> float:
    """GFLOP/s of an n x n float32 matmul on `device` with the current threads (median)."""
    a, b = (torch.randn(n, n, device=device) for _ in range(2))
    torch.mm(a, b)  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def train_step_flops(model: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> int:
    """FLOPs of one training step (the trainer's, default TrainConfig) of a copy of `model`."""
    from ssmbench.experiment.config import TrainConfig
    from ssmbench.experiment.train import make_optimizer, train_step

    trainee = copy.deepcopy(model).train()
    optimizer = make_optimizer(trainee, TrainConfig())
    return count_flops(lambda: train_step(trainee, optimizer, inputs, labels, TrainConfig(), 0))


def distance_from_peak(flops: int, step_ms: float, tokens: int, peak_gflops: float) -> dict:
    """tokens/s, achieved GFLOP/s and their fraction of the peak, for a step of `step_ms`."""
    achieved = flops / (step_ms / 1e3) / 1e9
    return {
        "train_flops": flops,
        "tokens_per_s": tokens / (step_ms / 1e3),
        "achieved_gflops": achieved,
        "peak_gflops": peak_gflops,
        "peak_fraction": achieved / peak_gflops,
    }
