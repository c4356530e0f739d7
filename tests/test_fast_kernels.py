"""The optional CUDA kernels (causal-conv1d's `causal_conv1d_fn`, mamba_ssm's
`mamba_chunk_scan_combined`): used when they import and the tensors are on a kernel device, with
upstream's argument layouts, and recorded; the torch paths otherwise.

Neither package nor a GPU is here: each test injects a fake module (monkeypatch.setitem on
sys.modules) that computes upstream's documented semantics independently, and makes the CPU a
kernel device for the duration of the test only (monkeypatch restores both afterwards)."""

from __future__ import annotations

import sys
import types

import pytest
import torch
import torch.nn.functional as F

import ssmbench.ops.optional as optional_module
from ssmbench.layers.hyena import ShortConv
from ssmbench.layers.mamba2 import Mamba2, ssd, ssd_backend
from ssmbench.models import build
from ssmbench.models.blocks import MambaBlock
from ssmbench.models.kernels import recorded_backends
from ssmbench.ops.causal_conv import (
    causal_conv1d,
    causal_conv1d_reference,
    causal_conv1d_shifted,
    conv_backend,
)
from ssmbench.ops.scan import resolve_backend

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _no_cached_kernels():
    """The kernel look-ups are cached: start and end every test with a fresh look-up."""
    optional_module.optional_kernel.cache_clear()
    yield
    optional_module.optional_kernel.cache_clear()


def fake_causal_conv1d_fn(calls: list, scale: float = 1.0):
    """Upstream's documented contract: x (batch, dim, seqlen), weight (dim, width), bias (dim,),
    activation None, 'silu' or 'swish' -> (batch, dim, seqlen); a direct sum over taps."""

    def causal_conv1d_fn(
        x, weight, bias=None, seq_idx=None, initial_states=None, return_final_states=False,
        final_states_out=None, activation=None,
    ):  # fmt: skip
        calls.append({"x": x, "weight": weight, "bias": bias, "activation": activation})
        assert x.dim() == 3 and weight.dim() == 2 and x.shape[1] == weight.shape[0]
        assert x.stride(1) == 1 or x.stride(2) == 1  # the layouts the kernel accepts
        assert activation in (None, "silu", "swish")
        width, length = weight.shape[1], x.shape[2]
        padded = F.pad(x, (width - 1, 0))  # zeros before t = 0
        y = sum(weight[None, :, k, None] * padded[..., k : k + length] for k in range(width))
        y = y if bias is None else y + bias[None, :, None]
        return scale * (F.silu(y) if activation else y)

    return causal_conv1d_fn


def fake_chunk_scan(calls: list, scale: float = 1.0):
    """Upstream's documented contract: x (batch, seqlen, nheads, headdim), dt (batch, seqlen,
    nheads), A (nheads,), B and C (batch, seqlen, ngroups, dstate), chunk_size -> out like x;
    h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t^T, y_t = C_t h_t, step by step."""

    def mamba_chunk_scan_combined(
        x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None,
        seq_idx=None, dt_softplus=False, dt_limit=(0.0, float("inf")), return_final_states=False,
    ):  # fmt: skip
        calls.append({"x": x, "dt": dt, "A": A, "B": B, "C": C, "chunk_size": chunk_size,
                      "D": D, "z": z, "dt_bias": dt_bias, "dt_softplus": dt_softplus})  # fmt: skip
        b, L, H, P = x.shape
        G, N = B.shape[2:]
        assert dt.shape == (b, L, H) and A.shape == (H,) and C.shape == B.shape == (b, L, G, N)
        h = x.new_zeros(b, H, N, P)
        ys = []
        for t in range(L):
            Bt, Ct = (X[:, t].repeat_interleave(H // G, dim=1) for X in (B, C))  # (b, H, N)
            h = torch.exp(dt[:, t] * A)[..., None, None] * h
            h = h + dt[:, t, :, None, None] * Bt[..., None] * x[:, t, :, None, :]
            ys.append(torch.einsum("bhn,bhnp->bhp", Ct, h))
        return scale * torch.stack(ys, dim=1)

    return mamba_chunk_scan_combined


def install(monkeypatch, conv=None, ssd_fn=None, kernel_device=True) -> None:
    """Fake packages in sys.modules; the CPU a kernel device (both undone after the test)."""
    if conv is not None:
        module = types.ModuleType("causal_conv1d")
        module.causal_conv1d_fn = conv
        monkeypatch.setitem(sys.modules, "causal_conv1d", module)
    if ssd_fn is not None:
        names = ["mamba_ssm", "mamba_ssm.ops", "mamba_ssm.ops.triton"]
        for name in names:
            package = types.ModuleType(name)
            package.__path__ = []  # a package, so that submodules import from sys.modules
            monkeypatch.setitem(sys.modules, name, package)
        module = types.ModuleType("mamba_ssm.ops.triton.ssd_combined")
        module.mamba_chunk_scan_combined = ssd_fn
        monkeypatch.setitem(sys.modules, module.__name__, module)
    if kernel_device:
        monkeypatch.setattr(optional_module, "KERNEL_DEVICES", frozenset({"cpu", "cuda"}))


def test_without_the_packages_the_torch_paths_run_and_are_recorded():
    assert conv_backend(CPU) == "torch-shifted" and ssd_backend(CPU) == "torch"
    assert conv_backend("cuda") == "torch"  # cuDNN's grouped conv1d
    model = build("mamba2", vocab_size=8, d_model=8, n_layers=1, d_state=4)
    assert recorded_backends(model, CPU) == {
        "scan_backend": None, "conv_backend": "torch-shifted", "ssd_backend": "torch",
        "delta_rule_backend": None, "mamba3_backend": None, "mamba3_mimo_backend": None,
    }  # fmt: skip
    mamba = build("mamba-s6", vocab_size=8, d_model=8, n_layers=1, d_state=4)
    assert recorded_backends(mamba, CPU) == {
        "scan_backend": resolve_backend(CPU), "conv_backend": "torch-shifted", "ssd_backend": None,
        "delta_rule_backend": None, "mamba3_backend": None, "mamba3_mimo_backend": None,
    }  # fmt: skip
    lstm = build("lstm", vocab_size=8, d_model=8, n_layers=1)
    assert set(recorded_backends(lstm, CPU).values()) == {None}
    for name in ("hyena", "baseconv"):  # their short convolutions
        model = build(name, vocab_size=8, d_model=8, n_layers=1, d_state=4)
        assert recorded_backends(model, CPU)["conv_backend"] == "torch-shifted"


def test_short_conv_is_conv1d_cut_to_causal():
    """Hyena's and BaseConv's ShortConv: nn.Conv1d's own forward, padded and cut to the first L
    outputs, is what it computes."""
    torch.manual_seed(0)
    conv = ShortConv(6, 3).double()
    x = torch.randn(2, 6, 17, dtype=torch.float64)
    expected = torch.nn.Conv1d.forward(conv, x)[..., :17]
    torch.testing.assert_close(conv(x), expected, rtol=1e-12, atol=1e-12)


def test_installed_kernels_are_not_used_off_their_device(monkeypatch):
    calls: list = []
    install(monkeypatch, conv=fake_causal_conv1d_fn(calls), ssd_fn=fake_chunk_scan(calls),
            kernel_device=False)  # fmt: skip
    assert conv_backend(CPU) == "torch-shifted" and ssd_backend(CPU) == "torch"
    Mamba2(8, d_state=4, headdim=4, chunk=4)(torch.randn(2, 7, 8))
    assert calls == []


@pytest.mark.parametrize("activation", [None, "silu"])
def test_causal_conv1d_calls_the_kernel_with_upstreams_layout_and_returns_its_output(
    monkeypatch, activation
):
    calls: list = []
    install(monkeypatch, conv=fake_causal_conv1d_fn(calls))
    assert conv_backend(CPU) == "causal_conv1d"
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 9, 6, generator=g, dtype=torch.float64).mT  # (B, D, L), channel-last
    weight, bias = torch.randn(6, 4, generator=g, dtype=torch.float64), torch.randn(6).double()
    y = causal_conv1d(x, weight, bias, activation)
    [call] = calls
    assert call["x"] is x and call["weight"] is weight and call["bias"] is bias
    assert call["activation"] == activation
    torch.testing.assert_close(y, causal_conv1d_reference(x, weight, bias, activation))


@pytest.mark.parametrize("width", [1, 2, 4])
@pytest.mark.parametrize("activation", [None, "silu"])
@pytest.mark.parametrize("with_bias", [True, False])
def test_shifted_causal_conv1d_matches_torchs_grouped_conv1d(width, activation, with_bias):
    """The CPU path (W shifted multiply-adds) against torch's conv1d, forward and gradients, in
    float64 and the channel-last layout the blocks pass."""
    g = torch.Generator().manual_seed(width)
    x = torch.randn(3, 13, 6, generator=g, dtype=torch.float64).mT.requires_grad_()  # (B, D, L)
    weight = torch.randn(6, width, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(6, generator=g, dtype=torch.float64, requires_grad=True)
    g_y = torch.randn(3, 6, 13, generator=g, dtype=torch.float64)
    results = []
    for conv in (causal_conv1d_shifted, causal_conv1d_reference):
        y = conv(x, weight, bias if with_bias else None, activation)
        results.append([y, *torch.autograd.grad(y, (x, weight, bias), g_y, allow_unused=True)])
    for ours, reference in zip(*results, strict=True):
        torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-12)


def test_the_shifted_conv_is_causal():
    x = torch.randn(1, 3, 10, dtype=torch.float64)
    weight = torch.randn(3, 4, dtype=torch.float64)
    changed = x.clone()
    changed[..., 6:] += 1.0  # the future of t = 5
    y, y_changed = (causal_conv1d_shifted(v, weight, None, "silu") for v in (x, changed))
    torch.testing.assert_close(y[..., :6], y_changed[..., :6])
    assert not torch.allclose(y[..., 6:], y_changed[..., 6:])


def test_mamba_block_and_mamba2_run_the_conv_kernel_and_use_its_output(monkeypatch):
    torch.manual_seed(0)
    u = torch.randn(2, 11, 8, dtype=torch.float64)
    block = MambaBlock(8, lambda d: torch.nn.Identity()).double()
    layer = Mamba2(8, d_state=4, headdim=4, chunk=4).double()
    eager = [block(u), layer(u)]
    calls: list = []
    install(monkeypatch, conv=fake_causal_conv1d_fn(calls))
    for module, expected, width in ((block, eager[0], 16), (layer, eager[1], 16 + 2 * 4)):
        calls.clear()
        torch.testing.assert_close(module(u), expected)  # same numbers through the kernel
        [call] = calls
        assert call["x"].shape == (2, width, 11) and call["weight"].shape == (width, 4)
        assert call["bias"].shape == (width,) and call["activation"] == "silu"
    install(monkeypatch, conv=fake_causal_conv1d_fn(calls, scale=0.5))
    optional_module.optional_kernel.cache_clear()
    assert not torch.allclose(block(u), eager[0])  # the kernel's output is what the block uses


def test_mamba2_runs_mambas_ssd_kernel_with_upstreams_layout_and_uses_its_output(monkeypatch):
    torch.manual_seed(0)
    layer = Mamba2(8, d_state=4, headdim=4, ngroups=2, chunk=4).double()
    u = torch.randn(2, 13, 8, dtype=torch.float64)
    eager = layer(u)
    calls: list = []
    install(monkeypatch, ssd_fn=fake_chunk_scan(calls))
    assert ssd_backend(CPU) == "mamba_ssm" and conv_backend(CPU) == "torch-shifted"
    torch.testing.assert_close(layer(u), eager)  # the kernel's SSD = our chunked SSD
    [call] = calls
    assert call["x"].shape == (2, 13, 4, 4) and call["dt"].shape == (2, 13, 4)  # (b, L, H, P)
    assert call["A"].shape == (4,) and call["B"].shape == call["C"].shape == (2, 13, 2, 4)
    assert (call["A"] < 0).all() and (call["dt"] > 0).all()  # A = -exp(A_log), Δ after softplus
    assert call["chunk_size"] == 4 and call["D"] is None and call["z"] is None
    assert call["dt_bias"] is None and call["dt_softplus"] is False
    model = build("mamba2", vocab_size=8, d_model=8, n_layers=1, d_state=4)
    assert recorded_backends(model, CPU)["ssd_backend"] == "mamba_ssm"
    install(monkeypatch, ssd_fn=fake_chunk_scan(calls, scale=2.0))
    optional_module.optional_kernel.cache_clear()
    x, dt = torch.randn(1, 5, 2, 3).double(), torch.rand(1, 5, 2).double()
    A, B = -torch.rand(2).double(), torch.randn(1, 5, 1, 4).double()
    y = ssd(x, dt, A, B, B, chunk=4)
    assert torch.allclose(y, 2 * fake_chunk_scan([])(x, dt, A, B, B, 4))  # its output is used
    with pytest.raises(ValueError, match="negative_eigenvalues: mamba_ssm's SSD kernel"):
        ssd(x, dt, A, B, B, chunk=4, negative_eigenvalues=True)  # exp(ΔA) only: refused


def test_a_cell_records_the_conv_and_ssd_backends():
    from ssmbench.experiment.cell import _describe
    from ssmbench.experiment.config import load_config

    cell = load_config("smoke", overrides={"models": ["mamba2"], "lengths": [8]}).cells()[0]
    model = build("mamba2", vocab_size=16, d_model=8, n_layers=1, d_state=4)
    facts = _describe(cell, model, CPU)
    assert (facts["conv_backend"], facts["ssd_backend"], facts["scan_backend"]) == (
        "torch-shifted", "torch", None,
    )  # fmt: skip


def fake_fla(monkeypatch, calls: list, scale: float = 1.0) -> None:
    """fla's chunk kernels as documented: (B, T, H, ·) tensors, `scale` on q, -> (o, state);
    computed here by ssmbench's recurrence, so their output is the torch path's."""
    from ssmbench.ops.delta_rule import FLA_KERNELS, delta_rule_reference

    def kernel(name):
        def chunk(q, k, v, *gates, scale=None, initial_state=None, output_final_state=False):
            calls.append({"kernel": name, "q": q, "gates": gates, "scale": scale})
            q, k, v, *gates = (x.transpose(1, 2) for x in (q, k, v, *gates))  # (B, H, T, ·)
            if name == "delta_rule":
                o = delta_rule_reference(q * scale, k, v, gates[0])
            elif name == "gdn2":  # g, b, w
                o = delta_rule_reference(q * scale, k, v, gates[1], gates[0], gates[2])
            else:  # g, beta
                o = delta_rule_reference(q * scale, k, v, gates[1], gates[0])
            return out_scale * o.transpose(1, 2), None

        return chunk

    out_scale = scale
    for name, module_and_function in FLA_KERNELS.items():
        install_module(monkeypatch, module_and_function, kernel(name))


@pytest.mark.parametrize("name, kernel", [
    ("deltanet", "delta_rule"), ("gated-deltanet", "gated_delta_rule"), ("kda", "kda"),
    ("gated-deltanet-2", "gdn2"), ("gated-deltaproduct", "gated_delta_rule"),
])  # fmt: skip
def test_the_delta_rule_runs_flas_kernel_for_its_gates_and_uses_its_output(
    monkeypatch, name, kernel
):
    from ssmbench.ops.delta_rule import delta_rule_backend

    torch.manual_seed(0)
    model = build(name, vocab_size=8, d_model=16, n_layers=1, d_state=4).double()
    tokens = torch.randint(0, 8, (2, 13))
    eager = model(tokens)
    calls: list = []
    fake_fla(monkeypatch, calls)
    assert delta_rule_backend(CPU) == "fla"
    assert recorded_backends(model, CPU)["delta_rule_backend"] == "fla"
    torch.testing.assert_close(model(tokens), eager)  # fla's result = the chunked form's
    assert {c["kernel"] for c in calls} == {kernel} and all(c["scale"] == 1.0 for c in calls)
    steps = 13 * (2 if name == "gated-deltaproduct" else 1)  # its 2 Householder sub-steps
    assert calls[0]["q"].shape[:2] == (2, steps)  # fla's layout: (B, T, H, K)
    fake_fla(monkeypatch, calls, scale=2.0)
    optional_module.optional_kernel.cache_clear()
    assert not torch.allclose(model(tokens), eager)  # the kernel's output is what is used


def fake_mamba3_siso_combined(calls: list, scale: float = 1.0):
    """Upstream's documented contract (mamba3_siso_combined, and mamba3_siso_fwd_ref in its
    tests): Q, K (b, L, G, N) before their biases, V and Z (b, L, H, P), ADT, DT and the raw Trap
    (b, H, L), biases (H, N), raw Angles (b, L, H, R), D (H,) -> (b, L, H, P); computed here with
    ssmbench's recurrence, so its output is the torch path's."""
    from ssmbench.ops.mamba3 import cumulative_phase, mamba3_siso_reference, rotate_pairs

    def mamba3_siso_combined(Q, K, V, ADT, DT, Trap, Q_bias, K_bias, Angles, D=None, Z=None,
                             Input_States=None, chunk_size=64, return_final_states=False,
                             cu_seqlens=None):  # fmt: skip
        calls.append({"Q": Q, "V": V, "Trap": Trap, "Angles": Angles, "chunk_size": chunk_size})
        b, L, H, P = V.shape
        assert ADT.shape == DT.shape == Trap.shape == (b, H, L) and Q_bias.shape == (H, Q.shape[-1])
        repeat = H // Q.shape[2]  # GQA: the groups' B and C shared by their heads
        q, k = (X.repeat_interleave(repeat, 2) + bias for X, bias in ((Q, Q_bias), (K, K_bias)))
        phase = cumulative_phase(Angles[:, :, 0], DT)  # the heads share the angles
        q, k = (rotate_pairs(X.transpose(1, 2), phase) for X in (q, k))
        y = mamba3_siso_reference(q, k, V.transpose(1, 2), ADT, DT, Trap.sigmoid())
        return scale * (y.transpose(1, 2) + D[:, None] * V) * F.silu(Z)

    return mamba3_siso_combined


def test_mamba3_runs_mambas_siso_kernel_with_upstreams_layout_and_uses_its_output(monkeypatch):
    from ssmbench.layers.mamba3 import KERNEL, Mamba3, mamba3_backend

    torch.manual_seed(0)
    layer = Mamba3(16, d_state=8, headdim=8, ngroups=2, chunk=4).double()
    u = torch.randn(2, 11, 16, dtype=torch.float64)
    eager = layer(u)
    for scale in (1.0, 2.0):
        calls: list = []
        install_module(monkeypatch, KERNEL, fake_mamba3_siso_combined(calls, scale))
        assert mamba3_backend(CPU) == "mamba_ssm"
        fused = layer(u)
        [call] = calls
        assert call["Q"].shape == (2, 11, 2, 8) and call["V"].shape == (2, 11, 4, 8)
        assert call["Angles"].shape == (2, 11, 4, 2) and call["chunk_size"] == 4
        assert not ((call["Trap"] >= 0) & (call["Trap"] <= 1)).all()  # raw, before the sigmoid
        if scale == 1.0:
            torch.testing.assert_close(fused, eager)  # the kernel's result = ops.mamba3's
        else:
            assert not torch.allclose(fused, eager)  # its output is what the layer uses
        optional_module.optional_kernel.cache_clear()
    model = build("mamba3", vocab_size=8, d_model=16, n_layers=1, d_state=8)
    assert recorded_backends(model, CPU)["mamba3_backend"] == "mamba_ssm"
    signed = Mamba3(16, d_state=8, headdim=8, negative_eigenvalues=True).double()
    with pytest.raises(ValueError, match="negative_eigenvalues: mamba_ssm's Mamba-3 kernel"):
        signed(u)  # exp(ΔA) only: refused, not silently run with [0, 1]
    mimo = build("mamba3-mimo", vocab_size=8, d_model=16, n_layers=1, d_state=8)
    recorded = recorded_backends(mimo, CPU)  # the SISO kernel installed, MIMO not dispatched
    assert recorded["mamba3_backend"] is None and recorded["mamba3_mimo_backend"] == "torch"
    calls.clear()
    mimo(torch.randint(0, 8, (2, 7)))
    assert calls == []


def install_module(monkeypatch, kernel: tuple[str, str], function) -> None:
    """`kernel` = (module, name) importable as `function`, and the CPU a kernel device."""
    module, name = kernel
    parts = module.split(".")
    for i in range(1, len(parts)):
        package = types.ModuleType(".".join(parts[:i]))
        package.__path__ = []
        monkeypatch.setitem(sys.modules, package.__name__, package)
    fake = types.ModuleType(module)
    setattr(fake, name, function)
    monkeypatch.setitem(sys.modules, module, fake)
    monkeypatch.setattr(optional_module, "KERNEL_DEVICES", frozenset({"cpu", "cuda"}))
