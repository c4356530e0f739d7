"""The built-in models: one `ModelSpec` each (see registry.py). The study's twelve come first.

State sizes are per sequence per layer, in real elements (a complex mode counts 2): for an SSM
H channels × N states, for a Mamba block also its short convolution's d_conv - 1 past inputs, for
attention the KV cache 2·D·L, for a long convolution the L past inputs it reads.
"""

from __future__ import annotations

import math
from functools import partial

from torch import nn

from ssmbench.layers.attention import CausalSelfAttention
from ssmbench.layers.baseconv import BaseConv
from ssmbench.layers.delta_net import (
    KDA,
    DeltaNet,
    GatedDeltaNet,
    GatedDeltaNet2,
    GatedDeltaProduct,
)
from ssmbench.layers.h3 import H3
from ssmbench.layers.hgrn2 import HGRN2
from ssmbench.layers.hyena import Hyena, ImplicitFilter
from ssmbench.layers.linear_attention import GLA, BasedLinearAttention, RetNet
from ssmbench.layers.lti import S4, S4D, S4LowRank
from ssmbench.layers.mamba2 import Mamba2
from ssmbench.layers.mamba3 import Mamba3
from ssmbench.layers.mlp import GatedMLP
from ssmbench.layers.recurrent import LSTM
from ssmbench.layers.rwkv7 import RWKV7, RWKV7ChannelMix
from ssmbench.layers.s6 import S6
from ssmbench.layers.xlstm import MLSTM, SLSTM, GatedFeedForward, up_dim
from ssmbench.models.blocks import MambaBlock, SSMBlock
from ssmbench.models.registry import ModelSpec, get, register

SSMS = {
    "s4": S4,
    "s4d-real": partial(S4D, init="real"),
    "s4d-inv": partial(S4D, init="inv"),
    "s4-lowrank": S4LowRank,
    "s6": S6,
}
SSM_FACTS = {  # name: (display name, family, reference)
    "s4": ("S4", "lti-ssm", "Gu et al. 2022; state-spaces/s4 models/s4/s4.py"),
    "s4d-real": ("S4D Real", "lti-ssm", "Gu et al. 2022b; state-spaces/s4 models/s4/s4d.py"),
    "s4d-inv": ("S4D Inv", "lti-ssm", "Gu et al. 2022b; state-spaces/s4 models/s4/s4d.py"),
    "s4-lowrank": ("S4 Low Rank", "lti-ssm", "Gu et al. 2022; state-spaces/s4 models/s4/s4.py"),
    "s6": ("S6", "selective-ssm", "Gu & Dao 2023; mamba_ssm/modules/mamba_simple.py"),
}


def _ssm(kind: str, d_model: int, d_state: int) -> list[nn.Module]:
    return [SSMBlock(d_model, SSMS[kind](d_model, d_state))]


def _mamba(
    kind: str, d_model: int, d_state: int, expand: int = 2, d_conv: int = 4
) -> list[nn.Module]:
    make_ssm = partial(SSMS[kind], d_state=d_state)
    return [MambaBlock(d_model, make_ssm, expand=expand, d_conv=d_conv)]


def _s6(d_model: int, d_state: int, negative_eigenvalues: bool = False) -> list[nn.Module]:
    """negative_eigenvalues: transitions 2 exp(Δ A) - 1 in (-1, 1) (Grazzi et al. 2025)."""
    return [SSMBlock(d_model, S6(d_model, d_state, negative_eigenvalues=negative_eigenvalues))]


def _mamba_s6(
    d_model: int,
    d_state: int,
    expand: int = 2,
    d_conv: int = 4,
    dt_rank: int = 0,
    negative_eigenvalues: bool = False,
) -> list[nn.Module]:
    """dt_rank: rank of the step's projection; 0 means upstream mamba_ssm's ceil(d_model / 16).
    The study used ceil(expand·d_model / 16) (the `paper` preset sets it). negative_eigenvalues:
    transitions 2 exp(Δ A) - 1 in (-1, 1), as Grazzi et al. 2025 modify Mamba."""
    rank = dt_rank or math.ceil(d_model / 16)
    make_ssm = partial(S6, d_state=d_state, dt_rank=rank, negative_eigenvalues=negative_eigenvalues)
    return [MambaBlock(d_model, make_ssm, expand=expand, d_conv=d_conv)]


def _gated_mlp(d_model: int, d_state: int, expand: int = 2) -> list[nn.Module]:
    return [GatedMLP(d_model, expand)]


def mlp(d_model: int, expand: int) -> list[nn.Module]:
    """The gated MLP after a mixer, or none with expand 0 (zoology's state_mixer Identity)."""
    return [GatedMLP(d_model, expand)] if expand else []


def _transformer(d_model: int, d_state: int, n_heads: int = 2, expand: int = 2) -> list[nn.Module]:
    return [CausalSelfAttention(d_model, n_heads), *mlp(d_model, expand)]


def _lstm(d_model: int, d_state: int, hidden: int = 0) -> list[nn.Module]:
    """hidden: the LSTM's hidden size, 0 means d_model."""
    return [LSTM(d_model, hidden or d_model)]


def ssm_state(d_model: int, d_state: int, seq_len: int, **_: int) -> int:
    return d_model * d_state


def mamba_state(
    d_model: int, d_state: int, seq_len: int, expand: int = 2, d_conv: int = 4, **_: int
) -> int:
    return expand * d_model * (d_state + d_conv - 1)


def kv_cache(d_model: int, d_state: int, seq_len: int, **_: int) -> int:
    return 2 * d_model * seq_len


def lstm_state(d_model: int, d_state: int, seq_len: int, hidden: int = 0, **_: int) -> int:
    return 2 * (hidden or d_model)


for _kind, (_title, _family, _reference) in SSM_FACTS.items():
    register(
        ModelSpec(
            _kind,
            _s6 if _kind == "s6" else partial(_ssm, _kind),
            ssm_state,
            _title,
            _family,
            block="ssm",
            reference=_reference,
            study=True,
        )
    )
for _kind, (_title, _family, _reference) in SSM_FACTS.items():
    if _kind != "s4":
        register(
            ModelSpec(
                f"mamba-{_kind}",
                _mamba_s6 if _kind == "s6" else partial(_mamba, _kind),
                mamba_state,
                f"Mamba {_title.replace('Low Rank', 'LR')}",
                _family,
                mixer=_kind,
                block="mamba",
                reference="Gu & Dao 2023; mamba_ssm/modules/mamba_simple.py",
                study=True,
            )
        )
register(ModelSpec("gated-mlp", _gated_mlp, display_name="Gated MLP", family="mlp", study=True))
register(
    ModelSpec(
        "transformer",
        _transformer,
        kv_cache,
        "Transformer",
        "attention",
        block="transformer",
        reference="Vaswani et al. 2017 with RoPE (Su et al. 2021)",
        study=True,
    )
)
register(
    ModelSpec(
        "lstm",
        _lstm,
        lstm_state,
        "LSTM",
        "rnn",
        reference="Hochreiter & Schmidhuber 1997; torch.nn.LSTM",
        study=True,
    )
)


# The field's mixers beyond the study: the Mamba paper's Table 1 grid ({no gate, H3, Mamba} ×
# {S4D, Hyena, S6}), Mamba-2, attention variants and zoology's recall baselines.
H3_INNER = {  # the SSM inside H3 on its H = D / head_dim heads
    "s6": lambda d_state: partial(S6, d_state=d_state),
}


def _h3(inner: str, d_model: int, d_state: int, head_dim: int = 1) -> list[nn.Module]:
    return [H3(d_model, H3_INNER[inner](d_state), d_state, head_dim)]


def _h3_s4d(d_model: int, d_state: int, head_dim: int = 1, safari: bool = False) -> list[nn.Module]:
    """safari: safari's H3 configuration (S4D-Lin inner SSM, bilinear, trainable shift B) instead
    of the Mamba paper's Table 1 H3 (S4D-Real, zero-order hold, shift B = e_1)."""
    init, disc = ("lin", "bilinear") if safari else ("real", "zoh")
    inner = partial(S4D, d_state=d_state, init=init, disc=disc)
    return [H3(d_model, inner, d_state, head_dim, trainable_shift_B=safari)]


def _h3_hyena(d_model: int, d_state: int, head_dim: int = 1, l_max: int = 1024) -> list[nn.Module]:
    """l_max: the longest input the Hyena filter is built for (set by the trainer)."""
    return [H3(d_model, partial(ImplicitFilter, l_max=l_max), d_state, head_dim)]


def h3_state(d_model: int, d_state: int, seq_len: int, head_dim: int = 1, **_: int) -> int:
    """Shift SSM: N past keys per channel; inner SSM: N states per (head, i, j)."""
    return d_model * d_state + d_model * head_dim * d_state


def h3_hyena_state(d_model: int, d_state: int, seq_len: int, head_dim: int = 1, **_: int) -> int:
    return d_model * d_state + d_model * head_dim * seq_len


def _hyena(
    d_model: int, d_state: int, filter_order: int = 64, short: int = 3, emb_dim: int = 3,
    l_max: int = 1024,
) -> list[nn.Module]:  # fmt: skip
    """l_max: the longest input the filter is built for (set by the trainer)."""
    return [Hyena(d_model, filter_order, short, emb_dim, l_max)]


def hyena_state(d_model: int, d_state: int, seq_len: int, short: int = 3, **_: int) -> int:
    return 3 * d_model * (short - 1) + d_model * seq_len


def _mamba_hyena(
    d_model: int, d_state: int, expand: int = 2, d_conv: int = 4, l_max: int = 1024
) -> list[nn.Module]:
    """l_max: the longest input the filter is built for (set by the trainer)."""
    make_filter = partial(ImplicitFilter, l_max=l_max)
    return [MambaBlock(d_model, make_filter, expand=expand, d_conv=d_conv)]


def mamba_hyena_state(
    d_model: int, d_state: int, seq_len: int, expand: int = 2, d_conv: int = 4, **_: int
) -> int:
    return expand * d_model * (seq_len + d_conv - 1)


def _mamba2(
    d_model: int,
    d_state: int,
    expand: int = 2,
    headdim: int = 64,
    ngroups: int = 1,
    d_conv: int = 4,
    negative_eigenvalues: bool = False,
) -> list[nn.Module]:
    """negative_eigenvalues: transitions 2 exp(ΔA) - 1 in (-1, 1) (Grazzi et al. 2025)."""
    mixer = Mamba2(d_model, d_state, expand, headdim, ngroups, d_conv,
                   negative_eigenvalues=negative_eigenvalues)  # fmt: skip
    return [mixer]


def mamba2_state(
    d_model: int, d_state: int, seq_len: int, expand: int = 2, ngroups: int = 1, d_conv: int = 4,
    **_: int,
) -> int:  # fmt: skip
    E = expand * d_model
    return E * d_state + (d_conv - 1) * (E + 2 * ngroups * d_state)


def _mamba3(
    d_model: int, d_state: int, expand: int = 2, headdim: int = 64, ngroups: int = 1,
    rope_fraction: float = 0.5, negative_eigenvalues: bool = False, mimo_rank: int = 0,
) -> list[nn.Module]:  # fmt: skip
    """rope_fraction: the share of B/C channels the data-dependent rotation turns (0.5 or 1);
    negative_eigenvalues: real part 2 exp(ΔA) - 1 in (-1, 1) (Grazzi et al. 2025);
    mimo_rank: 0 SISO, R >= 1 MIMO with R ranks (upstream's is_mimo, mimo_rank)."""
    return [Mamba3(d_model, d_state, expand, headdim, ngroups, rope_fraction,
                   negative_eigenvalues=negative_eigenvalues, mimo_rank=mimo_rank)]  # fmt: skip


def mamba3_state(
    d_model: int, d_state: int, seq_len: int, expand: int = 2, headdim: int = 64,
    rope_fraction: float = 0.5, mimo_rank: int = 0, **_: int,
) -> int:  # fmt: skip
    return Mamba3.state_size(d_model, d_state, expand, headdim, rope_fraction, mimo_rank)


def _transformer_abs(
    d_model: int, d_state: int, n_heads: int = 2, expand: int = 2
) -> list[nn.Module]:
    return [CausalSelfAttention(d_model, n_heads, rope=False), *mlp(d_model, expand)]


def _swa(
    d_model: int, d_state: int, n_heads: int = 2, expand: int = 2, window: int = 16
) -> list[nn.Module]:
    return [CausalSelfAttention(d_model, n_heads, window=window), *mlp(d_model, expand)]


def swa_state(d_model: int, d_state: int, seq_len: int, window: int = 16, **_: int) -> int:
    return 2 * d_model * min(window + 1, seq_len)  # keys and values of positions s - w .. s


def _based(
    d_model: int, d_state: int, n_heads: int = 2, feature_dim: int = 16, window: int = 64,
    expand: int = 2, short_conv: int = 0,
) -> list[nn.Module]:  # fmt: skip
    """window 0: no sliding-window attention; short_conv k > 0: a BaseConv of width k first
    (zoology's Figure 2 Based: Hybrid[BaseConv(3), Based], no window, no MLP)."""
    return [
        *([BaseConv(d_model, short_conv)] if short_conv else []),
        BasedLinearAttention(d_model, n_heads, feature_dim),
        *([CausalSelfAttention(d_model, n_heads, window=window)] if window else []),
        *mlp(d_model, expand),
    ]


def based_state(
    d_model: int, d_state: int, seq_len: int, n_heads: int = 2, feature_dim: int = 16,
    window: int = 64, short_conv: int = 0, **_: int,
) -> int:  # fmt: skip
    features = 1 + feature_dim + feature_dim**2
    window_cache = 2 * d_model * min(window + 1, seq_len) if window else 0
    conv = d_model * (short_conv - 1) if short_conv else 0
    return n_heads * features * (d_model // n_heads + 1) + window_cache + conv


def _gla(d_model: int, d_state: int, n_heads: int = 4, expand: int = 2) -> list[nn.Module]:
    return [GLA(d_model, n_heads), *mlp(d_model, expand)]


def gla_state(d_model: int, d_state: int, seq_len: int, n_heads: int = 4, **_: int) -> int:
    return (d_model // 2) * d_model // n_heads  # key dim D/2, value dim D, per head (K/H)(V/H)


def _retnet(d_model: int, d_state: int, n_heads: int = 4, expand: int = 2) -> list[nn.Module]:
    return [RetNet(d_model, n_heads), *mlp(d_model, expand)]


def retnet_state(d_model: int, d_state: int, seq_len: int, n_heads: int = 4, **_: int) -> int:
    return d_model * 2 * d_model // n_heads  # key dim D, value dim 2D


def _baseconv(d_model: int, d_state: int, kernel: int = 3, l_max: int = 1024) -> list[nn.Module]:
    """A short (kernel) then a long BaseConv; l_max: the longest input (set by the trainer)."""
    return [BaseConv(d_model, kernel), BaseConv(d_model, 0, l_max)]


def baseconv_state(d_model: int, d_state: int, seq_len: int, kernel: int = 3, **_: int) -> int:
    return d_model * (kernel - 1) + d_model * seq_len


SAFARI = "safari src/models/sequence/"
for _name, _title, _family, _mixer in (
    ("h3", "H3", "lti-ssm", "s4d-real"),
    ("h3-hyena", "H3 Hyena", "long-conv", "hyena"),
    ("h3-s6", "H3 S6", "selective-ssm", "s6"),
):
    _ref = f"Fu et al. 2023; {SAFARI}h3.py"
    _make = {"hyena": _h3_hyena, "s4d-real": _h3_s4d}.get(_mixer, partial(_h3, _mixer))
    _state = h3_hyena_state if _mixer == "hyena" else h3_state
    register(ModelSpec(_name, _make, _state, _title, _family, _mixer, "h3", _ref))
_HYENA_REF = f"Poli et al. 2023; {SAFARI}hyena.py"
register(ModelSpec("hyena", _hyena, hyena_state, "Hyena", "long-conv", "hyena", "none", _HYENA_REF))
register(
    ModelSpec(
        "mamba-hyena",
        _mamba_hyena,
        mamba_hyena_state,
        "Mamba Hyena",
        "long-conv",
        "hyena",
        "mamba",
        f"Gu & Dao 2023 (Table 1); mamba_ssm/modules/mamba_simple.py + {SAFARI}hyena.py",
    )
)
register(
    ModelSpec(
        "mamba2",
        _mamba2,
        mamba2_state,
        "Mamba-2",
        "selective-ssm",
        "ssd",
        "mamba2",
        "Dao & Gu 2024; mamba_ssm/modules/mamba2_simple.py, ssd_minimal.py",
    )
)
register(
    ModelSpec(
        "mamba3",
        _mamba3,
        mamba3_state,
        "Mamba-3",
        "selective-ssm",
        "mamba3-siso",
        "mamba2",
        "Lahoti et al. 2026; mamba_ssm/modules/mamba3.py, tests/ops/triton/test_mamba3_siso.py",
    )
)
register(
    ModelSpec(
        "transformer-abs",
        _transformer_abs,
        kv_cache,
        "Transformer (abs. pos.)",
        "attention",
        "attention-abs",
        "transformer",
        "Vaswani et al. 2017, learned absolute positions (the Mamba paper's MHA-Abs)",
        positions=1024,
    )
)
register(
    ModelSpec(
        "swa", _swa, swa_state, "Sliding-window attn.", "attention", "swa", "transformer",
        "Beltagy et al. 2020 (local attention, RoPE); zoology zoology/mixers/slide_attn.py",
    )
)  # fmt: skip
register(
    ModelSpec(
        "based", _based, based_state, "Based", "linear-attention", "based", "transformer",
        "Arora et al. 2024; zoology zoology/mixers/based.py, feature_maps/taylor.py",
    )
)  # fmt: skip
register(
    ModelSpec(
        "gla", _gla, gla_state, "GLA", "linear-attention", "gla", "transformer",
        "Yang et al. 2024; fla fla/layers/gla.py",
    )
)  # fmt: skip
register(
    ModelSpec(
        "retnet", _retnet, retnet_state, "RetNet", "linear-attention", "retnet", "transformer",
        "Sun et al. 2023; fla fla/layers/multiscale_retention.py",
    )
)  # fmt: skip
register(
    ModelSpec(
        "baseconv", _baseconv, baseconv_state, "BaseConv", "long-conv", "baseconv", "none",
        "Arora et al. 2024; zoology zoology/mixers/base_conv.py",
    )
)  # fmt: skip


# The recurrent mixers of 2024-25 beyond the delta rule: RWKV-7, HGRN2 and xLSTM's two cells.
def _rwkv7(
    d_model: int, d_state: int, head_dim: int = 64, hidden_ratio: int = 4
) -> list[nn.Module]:
    """head_dim: channels per head (at most d_model); hidden_ratio: the channel mix's width."""
    return [RWKV7(d_model, head_dim), RWKV7ChannelMix(d_model, hidden_ratio)]


def rwkv7_state(d_model: int, d_state: int, seq_len: int, head_dim: int = 64, **_: int) -> int:
    """H heads of a K x K matrix state (H·K = D), plus the last input of each token shift."""
    return d_model * min(head_dim, d_model) + 2 * d_model


def _hgrn2(
    d_model: int, d_state: int, expand_ratio: int = 128, lower_bound: float = 0.0, expand: int = 2
) -> list[nn.Module]:
    """expand_ratio: the state expansion (channels per head, at most d_model); lower_bound: a
    fixed lower bound on the forget gate; expand: the gated MLP's width (0: none)."""
    return [HGRN2(d_model, expand_ratio, lower_bound), *mlp(d_model, expand)]


def hgrn2_state(
    d_model: int, d_state: int, seq_len: int, expand_ratio: int = 128, **_: float
) -> int:
    return d_model * min(expand_ratio, d_model)  # D / E heads of E x E


def _mlstm(
    d_model: int, d_state: int, n_heads: int = 4, proj_factor: float = 2.0, conv_kernel: int = 4
) -> list[nn.Module]:
    return [MLSTM(d_model, n_heads, proj_factor, conv_kernel)]


def mlstm_state(
    d_model: int, d_state: int, seq_len: int, n_heads: int = 4, proj_factor: float = 2.0,
    conv_kernel: int = 4, **_: float,
) -> int:  # fmt: skip
    """Per head C (d x d), n (d) and m, d = E / H; the conv's W - 1 past inputs of E channels."""
    E = up_dim(proj_factor, d_model)
    d = E // n_heads
    return n_heads * (d * d + d + 1) + (conv_kernel - 1) * E


def _slstm(
    d_model: int, d_state: int, n_heads: int = 4, conv_kernel: int = 4, ffn_factor: float = 1.3
) -> list[nn.Module]:
    return [SLSTM(d_model, n_heads, conv_kernel), GatedFeedForward(d_model, ffn_factor)]


def slstm_state(d_model: int, d_state: int, seq_len: int, conv_kernel: int = 4, **_: float) -> int:
    return 4 * d_model + (conv_kernel - 1) * d_model  # h, c, n, m; the conv's past inputs


XLSTM = "Beck et al. 2024; NX-AI/xlstm xlstm/blocks/"
register(
    ModelSpec(
        "rwkv7", _rwkv7, rwkv7_state, "RWKV-7", "linear-attention", "rwkv7", "rwkv7",
        "Peng et al. 2025; fla fla/layers/rwkv7.py, fla/ops/generalized_delta_rule/dplr/naive.py",
    )
)  # fmt: skip
register(
    ModelSpec(
        "hgrn2", _hgrn2, hgrn2_state, "HGRN2", "linear-attention", "hgrn2", "transformer",
        "Qin et al. 2024; fla fla/layers/hgrn2.py",
    )
)  # fmt: skip
register(
    ModelSpec(
        "mlstm", _mlstm, mlstm_state, "mLSTM", "rnn", "mlstm", "mlstm",
        f"{XLSTM}mlstm/layer.py, mlstm/backends.py",
    )
)  # fmt: skip
register(
    ModelSpec(
        "slstm", _slstm, slstm_state, "sLSTM", "rnn", "slstm", "slstm",
        f"{XLSTM}slstm/layer.py, slstm/src/vanilla/slstm.py",
    )
)  # fmt: skip


# The delta-rule family (fla's layers on ops.delta_rule), each followed by a gated MLP as GLA.
def _deltanet(
    d_model: int, d_state: int, n_heads: int = 4, use_gate: bool = False,
    negative_eigenvalues: bool = False, expand: int = 2,
) -> list[nn.Module]:  # fmt: skip
    """use_gate: fla's output gate SiLU(W_g x) (off by default, as fla's DeltaNet)."""
    layer = DeltaNet(d_model, n_heads, use_gate=use_gate, negative_eigenvalues=negative_eigenvalues)
    return [layer, *mlp(d_model, expand)]


def _delta(
    layer: type, d_model: int, d_state: int, n_heads: int, negative_eigenvalues: bool = False,
    expand: int = 2,
) -> list[nn.Module]:  # fmt: skip
    """negative_eigenvalues: β in [0, 2] (fla's allow_neg_eigval)."""
    mixer = layer(d_model, n_heads, negative_eigenvalues=negative_eigenvalues)
    return [mixer, *mlp(d_model, expand)]


def _gated_deltaproduct(
    d_model: int, d_state: int, n_heads: int = 2, householder: int = 2,
    negative_eigenvalues: bool = True, expand: int = 2,
) -> list[nn.Module]:  # fmt: skip
    """householder: Householder steps per token (fla's num_householder); negative eigenvalues on
    by default, as fla's GatedDeltaProduct."""
    layer = GatedDeltaProduct(d_model, n_heads, householder=householder,
                              negative_eigenvalues=negative_eigenvalues)  # fmt: skip
    return [layer, *mlp(d_model, expand)]


def delta_state(
    layer: type, d_model: int, d_state: int, seq_len: int, n_heads: int, householder: int = 1,
    **_: int,
) -> int:  # fmt: skip
    """The short convolution's 3 past inputs of q, k, v and the H·K·V delta-rule state."""
    return layer.state_size(d_model, n_heads, householder=householder)


FLA = "fla fla/layers/"
for _name, _make, _layer, _title, _reference in (
    ("deltanet", _deltanet, DeltaNet, "DeltaNet", f"Yang et al. 2024; {FLA}delta_net.py"),
    ("gated-deltanet", partial(_delta, GatedDeltaNet, n_heads=2), GatedDeltaNet, "Gated DeltaNet",
     f"Yang, Kautz & Hatamizadeh 2025; {FLA}gated_deltanet.py"),
    ("kda", partial(_delta, KDA, n_heads=4), KDA, "KDA", f"Kimi Linear 2025; {FLA}kda.py"),
    ("gated-deltanet-2", partial(_delta, GatedDeltaNet2, n_heads=4), GatedDeltaNet2,
     "Gated DeltaNet-2", f"Gated DeltaNet-2 2026; {FLA}gdn2.py"),
    ("gated-deltaproduct", _gated_deltaproduct, GatedDeltaProduct, "Gated DeltaProduct",
     f"Siems et al. 2025; {FLA}gated_deltaproduct.py"),
):  # fmt: skip
    _state = partial(delta_state, _layer)
    register(
        ModelSpec(_name, _make, _state, _title, "delta-rule", _name, "transformer", _reference)
    )

# The eigenvalue range as a model of its own, so that one sweep holds both sides of Grazzi et al.
# 2025's comparison ([0, 1] against [-1, 1]) under their own names: each of these models with
# negative_eigenvalues on by default (everything else, its mixer's colour included, the same).
for _base in ("mamba-s6", "mamba2", "deltanet", "gated-deltanet"):
    _title = f"{get(_base).title} [-1, 1]"  # the base model's name, so tables pair them
    register(get(_base).variant(f"{_base}-neg", _title, negative_eigenvalues=True))

# DeltaProduct's own comparison (Siems et al. 2025): two Householder steps, eigenvalues in [0, 1].
register(
    get("gated-deltaproduct").variant(
        "gated-deltaproduct-pos", "Gated DeltaProduct [0, 1]", negative_eigenvalues=False
    )
)

# Mamba-3 MIMO at upstream's default rank (4): the same mixer with R ranks per position.
register(get("mamba3").variant("mamba3-mimo", "Mamba-3 MIMO", mimo_rank=4))
