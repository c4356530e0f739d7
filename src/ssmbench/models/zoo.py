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
from ssmbench.layers.lti import S4, S4D, S4LowRank
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


def _mamba_s6(
    d_model: int, d_state: int, expand: int = 2, d_conv: int = 4, dt_rank: int = 0
) -> list[nn.Module]:
    """dt_rank: rank of the step's projection; 0 means upstream mamba_ssm's ceil(d_model / 16).
    The study used ceil(expand·d_model / 16) (the `paper` preset sets it)."""
    make_ssm = partial(S6, d_state=d_state, dt_rank=dt_rank or math.ceil(d_model / 16))
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
            partial(_ssm, _kind),
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
