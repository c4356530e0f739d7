"""The registry: every model by name. Adding a model is one mixer file and one line below.

Each entry maps (d_model, d_state, **overrides) to the residual sublayers of one backbone layer.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial

from torch import nn

from ssmbench.layers.attention import CausalSelfAttention
from ssmbench.layers.lti import S4, S4D, S4LowRank
from ssmbench.layers.mlp import GatedMLP
from ssmbench.layers.recurrent import LSTM
from ssmbench.layers.s6 import S6
from ssmbench.models.backbone import SequenceModel
from ssmbench.models.blocks import MambaBlock, SSMBlock

SSMS: dict[str, Callable[..., nn.Module]] = {
    "s4": S4,
    "s4d-real": partial(S4D, init="real"),
    "s4d-inv": partial(S4D, init="inv"),
    "s4-lowrank": S4LowRank,
    "s6": S6,
}


def _ssm(kind: str, d_model: int, d_state: int) -> list[nn.Module]:
    return [SSMBlock(d_model, SSMS[kind](d_model, d_state))]


def _mamba(
    kind: str, d_model: int, d_state: int, expand: int = 2, d_conv: int = 4
) -> list[nn.Module]:
    make_ssm = partial(SSMS[kind], d_state=d_state)
    return [MambaBlock(d_model, make_ssm, expand=expand, d_conv=d_conv)]


def _gated_mlp(d_model: int, d_state: int, expand: int = 2) -> list[nn.Module]:
    return [GatedMLP(d_model, expand)]


def _transformer(d_model: int, d_state: int, n_heads: int = 2, expand: int = 2) -> list[nn.Module]:
    return [CausalSelfAttention(d_model, n_heads), GatedMLP(d_model, expand)]


def _lstm(d_model: int, d_state: int) -> list[nn.Module]:
    return [LSTM(d_model)]


MODELS: dict[str, Callable[..., list[nn.Module]]] = {
    **{kind: partial(_ssm, kind) for kind in SSMS},
    **{f"mamba-{kind}": partial(_mamba, kind) for kind in SSMS if kind != "s4"},
    "gated-mlp": _gated_mlp,
    "transformer": _transformer,
    "lstm": _lstm,
}


def register(name: str, make_layers: Callable[..., list[nn.Module]]) -> None:
    """Add a model: `make_layers(d_model, d_state, **options)` gives one layer's sublayers."""
    if name in MODELS:
        raise ValueError(f"a model named {name!r} is already registered")
    MODELS[name] = make_layers


def names() -> list[str]:
    return list(MODELS)


def build(
    name: str,
    vocab_size: int,
    d_model: int = 64,
    n_layers: int = 2,
    d_state: int = 16,
    **overrides: int,
) -> SequenceModel:
    """A model mapping tokens (B, T) int64 to logits (B, T, vocab_size)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    make_layer = MODELS[name]
    allowed = list(inspect.signature(make_layer).parameters)[2:]
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise ValueError(
            f"model {name!r} takes no option {', '.join(unknown)}; "
            f"its options: {', '.join(allowed) or 'none'}"
        )
    for key, value in (
        ("vocab_size", vocab_size),
        ("d_model", d_model),
        ("n_layers", n_layers),
        ("d_state", d_state),
    ):
        if value < 1:
            raise ValueError(f"{key} must be >= 1, got {value}")
    layers = [m for _ in range(n_layers) for m in make_layer(d_model, d_state, **overrides)]
    return SequenceModel(vocab_size, d_model, layers)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
