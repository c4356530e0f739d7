"""The registry: every model by name, with the facts the rest of ssmbench needs about it.

A model is one `ModelSpec`: how to build one backbone layer's sublayers (`make_layers(d_model,
d_state, **options)`), its display name, family (for grouping), mixer and block (for colours and
line styles), reference (paper and upstream file), and `state_size`: the recurrent state one
sequence keeps per layer, in elements, at a given length (zoology's efficiency axis; for attention
the KV cache). Which kernel backends a model calls is read from its modules (`backends_of`), so
it is right for plugins too. A model built for a longest input (a long filter of `l_max` taps)
takes the option `l_max`; the trainer and `bench` set it to the longest input they run
(`sized_for`) unless the config gives it. Adding a model is one mixer file and one entry in
`models/zoo.py`, or `register(ModelSpec(...))` from a plugin module.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

from ssmbench.models.backbone import SequenceModel

MakeLayers = Callable[..., list[nn.Module]]


def no_state(d_model: int, d_state: int, seq_len: int, **options: Any) -> int:
    """A model that keeps nothing between positions (its state size is 0)."""
    return 0


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    make_layers: MakeLayers  # (d_model, d_state, **options) -> one layer's sublayers
    state_size: Callable[..., int] = no_state  # (d_model, d_state, seq_len, **options) -> int
    display_name: str = ""  # '' means the name
    family: str = "other"  # e.g. lti-ssm, selective-ssm, long-conv, attention, linear-attention
    mixer: str = ""  # the sequence-mixing core (same colour across blocks); '' means the name
    block: str = "none"  # the block around the mixer: none, ssm, mamba, h3, mamba2, transformer
    reference: str = ""  # paper, and the upstream file the layer follows
    study: bool = False  # one of the twelve models of the study that ssmbench reproduces
    positions: int = 0  # > 0: learned absolute position embeddings for this many positions

    @property
    def title(self) -> str:
        return self.display_name or self.name

    def options(self) -> dict[str, Any]:
        """The model's options (keyword parameters of make_layers) and their defaults."""
        params = list(inspect.signature(self.make_layers).parameters.values())[2:]
        return {p.name: p.default for p in params}

    def check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """All options, the given ones over the defaults; an unknown one is an error."""
        allowed = self.options()
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise ValueError(
                f"model {self.name!r} takes no option {', '.join(unknown)}; "
                f"its options: {', '.join(allowed) or 'none'}"
            )
        return {**allowed, **options}

    def sized_for(self, options: dict[str, Any], longest: int) -> dict[str, Any]:
        """options with `l_max` (the longest input of a model built for one, e.g. Hyena's
        filter) set to `longest` when not given; a given one shorter than `longest` is an error."""
        if "l_max" not in self.options():
            return options
        given = options.get("l_max")
        if given is None:
            return {**options, "l_max": longest}
        if given < longest:
            raise ValueError(
                f"model {self.name!r} has l_max {given} but runs inputs of length {longest}; "
                f"raise its option l_max to >= {longest} or leave it unset"
            )
        return options

    def variant(self, name: str, display_name: str, **options: Any) -> ModelSpec:
        """This model under another name with other defaults for its options (e.g. Mamba-2
        with negative eigenvalues), so that one sweep can hold both and name each."""
        self.check_options(options)
        layers = functools.partial(self.make_layers, **options)
        return dataclasses.replace(self, name=name, display_name=display_name,
                                   make_layers=layers, study=False)  # fmt: skip

    def state(self, d_model: int, d_state: int, seq_len: int, **options: Any) -> int:
        """Recurrent state per sequence per layer (elements) at length seq_len."""
        return int(self.state_size(d_model, d_state, seq_len, **self.check_options(options)))

    def describe(self, d_model: int, d_state: int, seq_len: int, **options: Any) -> dict:
        """The facts recorded with every result row (report/ reads them from there)."""
        return {
            "display_name": self.title,
            "family": self.family,
            "mixer": self.mixer or self.name,
            "block": self.block,
            "state_size": self.state(d_model, d_state, seq_len, **options),
        }


MODELS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec | str, make_layers: MakeLayers | None = None) -> ModelSpec:
    """Add a model: a ModelSpec, or (name, make_layers) for a bare model with default facts."""
    if isinstance(spec, str):
        if make_layers is None:
            raise ValueError("register(name, make_layers) needs make_layers")
        spec = ModelSpec(spec, make_layers)
    if spec.name in MODELS:
        raise ValueError(f"a model named {spec.name!r} is already registered")
    MODELS[spec.name] = spec
    return spec


@contextmanager
def restored_registry() -> Iterator[dict[str, ModelSpec]]:
    """Whatever is registered inside the block is gone after it (for tests and plugins)."""
    saved = dict(MODELS)
    try:
        yield MODELS
    finally:
        MODELS.clear()
        MODELS.update(saved)


def names() -> list[str]:
    return list(MODELS)


def study_names() -> list[str]:
    """The twelve models of the study, in the study's order."""
    return [name for name, spec in MODELS.items() if spec.study]


def get(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    return MODELS[name]


def build(
    name: str,
    vocab_size: int,
    d_model: int = 64,
    n_layers: int = 2,
    d_state: int = 16,
    **overrides: Any,
) -> SequenceModel:
    """A model mapping tokens (B, T) int64 to logits (B, T, vocab_size)."""
    spec = get(name)
    spec.check_options(overrides)
    for key, value in (
        ("vocab_size", vocab_size),
        ("d_model", d_model),
        ("n_layers", n_layers),
        ("d_state", d_state),
    ):
        if value < 1:
            raise ValueError(f"{key} must be >= 1, got {value}")
    layers = [m for _ in range(n_layers) for m in spec.make_layers(d_model, d_state, **overrides)]
    return SequenceModel(vocab_size, d_model, layers, positions=spec.positions)


def backends_of(model: nn.Module) -> list[str]:
    """The kernel families a built model calls, from its modules' `kernels` attribute (a class's,
    or an instance's where its options choose, as Mamba-3 MIMO's)."""
    found = {k for m in model.modules() for k in getattr(m, "kernels", ())}
    return sorted(found)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
