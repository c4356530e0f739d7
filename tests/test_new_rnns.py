"""RWKV-7, HGRN2, mLSTM and sLSTM against their recurrent forms.

The mLSTM's parallel stabilized form against its recurrence (float64, 1e-10, outputs and the
gradients of every input) and against the unstabilized definition; each layer's parallel forward
against its own step-by-step recurrent form (`step`); the registry's state sizes against the state
those steps carry; the weight-decay marks against upstream's rules.
"""

import math

import pytest
import torch
from recurrent_steps import run_steps
from test_mixers import assert_same

from ssmbench.layers.hgrn2 import HGRN2
from ssmbench.layers.marks import marks_of
from ssmbench.layers.mlp import GatedMLP
from ssmbench.layers.rwkv7 import RWKV7
from ssmbench.layers.xlstm import MLSTM, SLSTM, GatedFeedForward
from ssmbench.models import build, get
from ssmbench.ops.mlstm import mlstm, mlstm_reference

LENGTHS = [1, 7, 63, 64, 65, 130]
POSITIONWISE = (GatedMLP, GatedFeedForward)  # sublayers that keep no state between positions
OPTIONS = [  # each model at its defaults and with its state-shaping options changed
    ("rwkv7", {}),
    ("rwkv7", {"head_dim": 8}),
    ("hgrn2", {}),
    ("hgrn2", {"expand_ratio": 4, "lower_bound": 0.5}),
    ("mlstm", {}),
    ("mlstm", {"n_heads": 2, "proj_factor": 4.0, "conv_kernel": 3}),
    ("slstm", {}),
    ("slstm", {"n_heads": 2, "conv_kernel": 2}),
]
IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in options.items()) or 'defaults'}"
       for name, options in OPTIONS]  # fmt: skip


def mlstm_inputs(L: int, regime: str, seed: int = 0) -> list[torch.Tensor]:
    """q, k (2, 3, L, 4), v (2, 3, L, 5) and the gates (2, 3, L): near upstream's init (ĩ ~ 0,
    f̃ ~ 3..6), or wide (ĩ up to ±30: exp(ĩ) far out of range, both branches of the max)."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(2, 3, L, *shape, generator=g, dtype=torch.float64)

    q, k, v = randn(4), randn(4), randn(5)
    if regime == "upstream-init":
        return [q, k, v, 0.1 * randn(), 4.5 + 1.5 * randn()]
    return [q, k, v, 10 * randn(), 3 * randn()]


@pytest.mark.parametrize("L", LENGTHS)
@pytest.mark.parametrize("regime", ["upstream-init", "wide"])
def test_parallel_mlstm_matches_the_recurrence(L, regime):
    assert_same(mlstm, mlstm_reference, mlstm_inputs(L, regime, seed=L), 1e-10)


def test_stabilized_mlstm_is_the_unstabilized_definition():
    """With ε = 0, h_t = C_t^T q_t / max(|n_t · q_t|, 1) from C, n summed with exp(ĩ) directly."""
    q, k, v, i_pre, f_pre = mlstm_inputs(30, "upstream-init")
    i_pre = 3 * i_pre - 2  # exp(ĩ) from ~e^-5 to ~e^1: |n·q| on both sides of 1
    C, n = torch.zeros(2, 3, 4, 5, dtype=torch.float64), torch.zeros(2, 3, 4, dtype=torch.float64)
    out, qn = [], []
    for t in range(30):
        f, i = torch.sigmoid(f_pre[:, :, t, None]), i_pre[:, :, t, None].exp()  # (2, 3, 1)
        k_t = k[:, :, t] / 2  # / √K
        C = f[..., None] * C + (i * k_t)[..., None] * v[:, :, t, None, :]
        n = f * n + i * k_t
        qn.append((q[:, :, t] * n).sum(-1, keepdim=True).abs())  # (2, 3, 1)
        out.append(torch.einsum("bhk,bhkv->bhv", q[:, :, t], C) / qn[-1].clamp(min=1))
    qn = torch.stack(qn)
    assert (qn < 1).any() and (qn > 1).any(), "both branches of the max are exercised"
    for fast in (mlstm, mlstm_reference):
        got = fast(q, k, v, i_pre, f_pre, eps=0.0)
        torch.testing.assert_close(got, torch.stack(out, dim=2), rtol=0, atol=1e-10)


def sublayers(name: str, d_model: int, options: dict) -> list[torch.nn.Module]:
    """One backbone layer's sublayers, every one either recurrent (with step) or position-wise."""
    layers = get(name).make_layers(d_model, 4, **options)
    for layer in layers:
        assert hasattr(layer, "step") or isinstance(layer, POSITIONWISE), type(layer).__name__
    return [layer for layer in layers if not isinstance(layer, POSITIONWISE)]


@pytest.mark.parametrize("name, options", OPTIONS, ids=IDS)
def test_each_layer_equals_its_recurrent_form(name, options):
    """float64, parameters moved off their init (zero-initialized weights such as the sLSTM's
    recurrent kernel or RWKV-7's channel-mix output would hide terms), outputs and input
    gradients to 1e-10; the state keeps its shapes along the way."""
    torch.manual_seed(0)
    for layer in sublayers(name, 16, options):
        layer = layer.double()
        with torch.no_grad():
            for p in layer.parameters():
                p.add_(0.3 * torch.randn_like(p))
        x = torch.randn(2, 23, 16, dtype=torch.float64)
        assert_same(layer, lambda x, layer=layer: run_steps(layer, x)[0], [x], 1e-10)
        initial, final = layer.init_state(2, x), run_steps(layer, x)[1]
        assert [t.shape for t in initial] == [t.shape for t in final]


@pytest.mark.parametrize("d_model", [16, 64])
@pytest.mark.parametrize("name, options", OPTIONS, ids=IDS)
def test_state_size_is_the_recurrent_state(name, options, d_model):
    """The registry's state_size counts exactly the elements the recurrent form carries."""
    x = torch.zeros(1, d_model)
    carried = sum(t.numel() for layer in sublayers(name, d_model, options)
                  for t in layer.init_state(1, x))  # fmt: skip
    for length in (1, 1000):
        assert get(name).state(d_model, 4, length, **options) == carried


def test_rwkv7_state_is_a_matrix_per_head():
    """K x K per head, H·K = D: D·K, not D (the per-channel state of RWKV-4)."""
    assert get("rwkv7").state(64, 16, 100) == 64 * 64 + 2 * 64
    assert get("rwkv7").state(256, 16, 100) == 256 * 64 + 2 * 256  # 4 heads of 64


def undecayed(name: str) -> set[str]:
    """The parameters of a 1-layer model's mixers marked with no weight decay."""
    marks = marks_of(build(name, vocab_size=10, d_model=16, n_layers=1))
    return {
        n.split(".fn.")[1] for n, hp in marks.items() if ".fn." in n and hp.get("weight_decay") == 0
    }


def test_weight_decay_follows_upstream():
    """RWKV-LM: decay only on the projections' matrices; xLSTM: none on names without 'weight'
    or with 'norm'."""
    rwkv = build("rwkv7", vocab_size=10, d_model=16, n_layers=1)
    decayed = {n.split(".fn.")[1] for n, _ in rwkv.named_parameters() if ".fn." in n}
    decayed -= undecayed("rwkv7")
    assert decayed == {"r_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight",
                       "key.weight", "value.weight"}  # fmt: skip
    assert undecayed("mlstm") == {"conv1d.bias", "igate.bias", "fgate.bias", "outnorm_weight",
                                  "learnable_skip"}  # fmt: skip
    assert undecayed("slstm") == {"conv1d.bias", "recurrent_kernel", "bias", "norm_weight"}
    assert undecayed("hgrn2") == set()


def test_hgrn2_lower_bound_bounds_the_forget_gate():
    x = 10 * torch.randn(2, 9, 16)
    torch.manual_seed(0)
    bounded = HGRN2(16, expand_ratio=4, lower_bound=0.9)
    torch.manual_seed(0)
    free = HGRN2(16, expand_ratio=4)
    log_f_bounded, log_f_free = bounded._gates(x)[3], free._gates(x)[3]  # (B, H, L, E)
    assert log_f_bounded.min() >= math.log(0.9) - 1e-6 and log_f_bounded.max() < 0
    assert log_f_free.min() < math.log(0.9)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: RWKV7(16, head_dim=6), "heads of 6"),
        (lambda: HGRN2(16, expand_ratio=6), "multiple of expand_ratio"),
        (lambda: HGRN2(16, lower_bound=1.0), "lower_bound must be in"),
        (lambda: MLSTM(16, n_heads=5), "5 heads"),
        (lambda: MLSTM(16, conv_kernel=0), "conv_kernel must be >= 1"),
        (lambda: SLSTM(18), "multiple of n_heads"),
    ],
)
def test_bad_sizes_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()
