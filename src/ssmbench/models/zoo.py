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
from ssmbench.layers.h3 import H3
from ssmbench.layers.hyena import Hyena, ImplicitFilter
from ssmbench.layers.linear_attention import GLA, BasedLinearAttention, RetNet
from ssmbench.layers.lti import S4, S4D, S4LowRank
from ssmbench.layers.mamba2 import Mamba2
from ssmbench.layers.mlp import GatedMLP
from ssmbench.layers.recurrent import LSTM
from ssmbench.layers.s6 import S6
from ssmbench.models.blocks import MambaBlock, SSMBlock
from ssmbench.models.registry import ModelSpec, register

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


def _transformer(d_model: int, d_state: int, n_heads: int = 2, expand: int = 2) -> list[nn.Module]:
    return [CausalSelfAttention(d_model, n_heads), GatedMLP(d_model, expand)]


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
    "s4d-real": lambda d_state: partial(S4D, d_state=d_state, init="real"),
    "s6": lambda d_state: partial(S6, d_state=d_state),
    "hyena": lambda d_state: ImplicitFilter,
}


def _h3(inner: str, d_model: int, d_state: int, head_dim: int = 1) -> list[nn.Module]:
    return [H3(d_model, H3_INNER[inner](d_state), d_state, head_dim)]


def h3_state(d_model: int, d_state: int, seq_len: int, head_dim: int = 1, **_: int) -> int:
    """Shift SSM: N past keys per channel; inner SSM: N states per (head, i, j)."""
    return d_model * d_state + d_model * head_dim * d_state


def h3_hyena_state(d_model: int, d_state: int, seq_len: int, head_dim: int = 1, **_: int) -> int:
    return d_model * d_state + d_model * head_dim * seq_len


def _hyena(
    d_model: int, d_state: int, filter_order: int = 64, short: int = 3, emb_dim: int = 3
) -> list[nn.Module]:
    return [Hyena(d_model, filter_order, short, emb_dim)]


def hyena_state(d_model: int, d_state: int, seq_len: int, short: int = 3, **_: int) -> int:
    return 3 * d_model * (short - 1) + d_model * seq_len


def _mamba_hyena(d_model: int, d_state: int, expand: int = 2, d_conv: int = 4) -> list[nn.Module]:
    return [MambaBlock(d_model, ImplicitFilter, expand=expand, d_conv=d_conv)]


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
) -> list[nn.Module]:
    return [Mamba2(d_model, d_state, expand, headdim, ngroups, d_conv)]


def mamba2_state(
    d_model: int, d_state: int, seq_len: int, expand: int = 2, ngroups: int = 1, d_conv: int = 4,
    **_: int,
) -> int:  # fmt: skip
    E = expand * d_model
    return E * d_state + (d_conv - 1) * (E + 2 * ngroups * d_state)


def _transformer_abs(
    d_model: int, d_state: int, n_heads: int = 2, expand: int = 2
) -> list[nn.Module]:
    return [CausalSelfAttention(d_model, n_heads, rope=False), GatedMLP(d_model, expand)]


def _swa(
    d_model: int, d_state: int, n_heads: int = 2, expand: int = 2, window: int = 16
) -> list[nn.Module]:
    return [CausalSelfAttention(d_model, n_heads, window=window), GatedMLP(d_model, expand)]


def swa_state(d_model: int, d_state: int, seq_len: int, window: int = 16, **_: int) -> int:
    return 2 * d_model * min(window, seq_len)


def _based(
    d_model: int, d_state: int, n_heads: int = 2, feature_dim: int = 16, window: int = 64,
    expand: int = 2,
) -> list[nn.Module]:  # fmt: skip
    return [
        BasedLinearAttention(d_model, n_heads, feature_dim),
        CausalSelfAttention(d_model, n_heads, window=window),
        GatedMLP(d_model, expand),
    ]


def based_state(
    d_model: int, d_state: int, seq_len: int, n_heads: int = 2, feature_dim: int = 16,
    window: int = 64, **_: int,
) -> int:  # fmt: skip
    features = 1 + feature_dim + feature_dim**2
    return n_heads * features * (d_model // n_heads + 1) + 2 * d_model * min(window, seq_len)


def _gla(d_model: int, d_state: int, n_heads: int = 4, expand: int = 2) -> list[nn.Module]:
    return [GLA(d_model, n_heads), GatedMLP(d_model, expand)]


def gla_state(d_model: int, d_state: int, seq_len: int, n_heads: int = 4, **_: int) -> int:
    return (d_model // 2) * d_model // n_heads  # key dim D/2, value dim D, per head (K/H)(V/H)


def _retnet(d_model: int, d_state: int, n_heads: int = 4, expand: int = 2) -> list[nn.Module]:
    return [RetNet(d_model, n_heads), GatedMLP(d_model, expand)]


def retnet_state(d_model: int, d_state: int, seq_len: int, n_heads: int = 4, **_: int) -> int:
    return d_model * 2 * d_model // n_heads  # key dim D, value dim 2D


def _baseconv(d_model: int, d_state: int, kernel: int = 3) -> list[nn.Module]:
    return [BaseConv(d_model, kernel), BaseConv(d_model, 0)]


def baseconv_state(d_model: int, d_state: int, seq_len: int, kernel: int = 3, **_: int) -> int:
    return d_model * (kernel - 1) + d_model * seq_len


SAFARI = "safari src/models/sequence/"
for _name, _title, _family, _mixer in (
    ("h3", "H3", "lti-ssm", "s4d-real"),
    ("h3-hyena", "H3 Hyena", "long-conv", "hyena"),
    ("h3-s6", "H3 S6", "selective-ssm", "s6"),
):
    _ref = f"Fu et al. 2023; {SAFARI}h3.py"
    _state = h3_hyena_state if _mixer == "hyena" else h3_state
    register(ModelSpec(_name, partial(_h3, _mixer), _state, _title, _family, _mixer, "h3", _ref))
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
