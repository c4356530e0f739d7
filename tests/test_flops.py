"""FLOPs of a training step counted on tiny cases by hand, and the distance from the peak."""

import math

import pytest
import torch
from torch import nn

from ssmbench.experiment import bench as bench_module
from ssmbench.experiment.flops import (
    count_flops,
    distance_from_peak,
    matmul_peak_gflops,
    train_step_flops,
)
from ssmbench.models import build
from ssmbench.ops.kernels import fft_conv
from ssmbench.ops.scan import selective_scan
from ssmbench.report import bench as report_bench


def test_fft_convolution_counts_each_real_fft():
    """u (2, 3, 8), k (3, 8): rfft of u and of k zero-padded to 16, irfft back to 16 points,
    each 2.5 n log2 n per transform of n = 16 points."""
    u, k = torch.randn(2, 3, 8), torch.randn(3, 8)
    per_transform = 2.5 * 16 * math.log2(16)
    assert count_flops(lambda: fft_conv(u, k)) == (6 + 3 + 6) * per_transform


def test_selective_scan_counts_forward_and_backward_per_state():
    batch, dim, length, n = 2, 4, 5, 3
    u, delta, z = (torch.randn(batch, dim, length) for _ in range(3))
    A, B, C = -torch.rand(dim, n), torch.randn(batch, n, length), torch.randn(batch, n, length)
    elements = batch * dim * length * n
    with torch.no_grad():
        assert count_flops(lambda: selective_scan(u, delta, A, B, C, z=z)) == 7 * elements
    u.requires_grad_()
    step = lambda: selective_scan(u, delta, A, B, C, z=z).sum().backward()  # noqa: E731
    assert count_flops(step) == (7 + 15) * elements


def test_matmuls_are_counted_by_torch_two_per_multiply_add():
    layer = nn.Linear(4, 5, bias=False)
    x = torch.randn(3, 4, requires_grad=True)  # backward: grads of x and of the weight
    assert count_flops(lambda: layer(x)) == 2 * 3 * 4 * 5
    assert count_flops(lambda: layer(x).sum().backward()) == 3 * (2 * 3 * 4 * 5)


@pytest.mark.parametrize("name", ["mamba-s6", "s4d-real", "transformer"])
def test_a_training_step_counts_more_than_its_matmuls_alone(name):
    """The model's own step: positive, and for S6 and S4D models it includes the analytic part
    (the scan, the FFTs) on top of what FlopCounterMode sees."""
    torch.manual_seed(0)
    model = build(name, 8, d_model=8, n_layers=1, d_state=4)
    inputs, labels = torch.randint(0, 8, (2, 12)), torch.randint(0, 8, (2, 12))
    total = train_step_flops(model, inputs, labels)
    from torch.utils.flop_counter import FlopCounterMode

    from ssmbench.experiment.config import TrainConfig
    from ssmbench.experiment.train import make_optimizer, train_step

    optimizer = make_optimizer(model, TrainConfig())
    with FlopCounterMode(display=False) as plain:
        train_step(model, optimizer, inputs, labels, TrainConfig(), 0)
    assert total > 0
    if name == "transformer":
        assert total == plain.get_total_flops()
    else:
        assert total > plain.get_total_flops()


def test_distance_from_peak():
    figures = distance_from_peak(flops=2e9, step_ms=100.0, tokens=1000, peak_gflops=40.0)
    assert figures["tokens_per_s"] == pytest.approx(1e4)
    assert figures["achieved_gflops"] == pytest.approx(20.0)
    assert figures["peak_fraction"] == pytest.approx(0.5)
    assert 0 < matmul_peak_gflops(torch.device("cpu"), n=64, repeats=1) < 1e6


def test_ratios_use_eager_rows_and_the_table_shows_compiled_ones():
    eager = {"model": "s6", "seq_len": 8, "status": "done", "compiled": False, "train_ms": 2.0}
    compiled = {**eager, "compiled": True, "train_ms": 1.0}
    assert bench_module._done([eager, compiled]) == {("s6", 8): eager}
    assert report_bench._any_compiled([eager, compiled])
    assert not report_bench._any_compiled([eager])
    assert bench_module.COMPILE_MODES["both"] == (False, True)
