"""How each layer's upstream trains its parameters, as marks the optimizer reads.

A layer marks its parameters by name, `mark(self, "A_log", "D", weight_decay=0.0)`, with any of
    weight_decay  this parameter's decay instead of the run's (mamba_ssm's `_no_weight_decay` on
                  A_log, D and Mamba-2's dt_bias is {"weight_decay": 0.0})
    lr_max        the lr is min(run's lr, lr_max) (s4's example: lr = min(0.001, args.lr) for the
                  SSM parameters log_dt, A, B, P)
    lr            a fixed lr, whatever the run's (safari's Hyena filter: lr 1e-3, wd 0)
The marks live on the module (so that copies and `.to()` keep them; attributes on a parameter
do not survive copy.deepcopy). Upstream's own marks on a parameter (s4's `p._optim`, mamba_ssm's
`p._no_weight_decay`, as a plugin wrapping their modules has them) are read too.
`experiment.train.param_groups` turns them into optimizer groups when `train.param_groups` is
`upstream` (and reads only the weight decay under `mad`; `uniform` ignores them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

KEYS = frozenset({"weight_decay", "lr_max", "lr"})

NO_WEIGHT_DECAY = {"weight_decay": 0.0}  # mamba_ssm's _no_weight_decay
S4_SSM = {"weight_decay": 0.0, "lr_max": 1e-3}  # s4's register(name, x, lr=min(0.001, lr))
HYENA_FILTER = {"weight_decay": 0.0, "lr": 1e-3}  # safari's HyenaFilter(lr=1e-3, wd=0)
HYENA_POSITIONS = {"weight_decay": 0.0, "lr": 1e-5}  # its PositionalEmbedding(lr_pos_emb=1e-5)


def mark(module: nn.Module, *names: str, **hp: float) -> None:
    """Mark the module's parameters `names` (those that are None skipped) with hp, over any
    mark they have."""
    unknown = sorted(set(hp) - KEYS)
    if unknown:
        raise ValueError(f"unknown optimizer mark {', '.join(unknown)}; use {sorted(KEYS)}")
    store: dict[str, dict[str, float]] = module.__dict__.setdefault("_optim_marks", {})
    for name in names:
        if not isinstance(getattr(module, name, None), (nn.Parameter, type(None))):
            raise ValueError(f"{type(module).__name__}.{name} is not a parameter")
        if getattr(module, name) is not None:
            store[name] = {**store.get(name, {}), **hp}


def mark_where(module: nn.Module, select: Callable[[str], bool], **hp: float) -> None:
    """Mark every parameter of module whose name inside it (e.g. 'lora.0.weight') satisfies
    select, with hp: for an upstream rule over parameter names (xLSTM's, RWKV-LM's)."""
    for prefix, sub in module.named_modules():
        for name, _ in sub.named_parameters(recurse=False):
            if select(f"{prefix}.{name}" if prefix else name):
                mark(sub, name, **hp)


def marks_of(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Every parameter's mark ({} when none) by its name in model."""
    found = {}
    for name, p in model.named_parameters():
        found[name] = dict(getattr(p, "_optim", {}))
        if getattr(p, "_no_weight_decay", False):
            found[name].setdefault("weight_decay", 0.0)
    for prefix, module in model.named_modules():
        for name, hp in module.__dict__.get("_optim_marks", {}).items():
            full = f"{prefix}.{name}" if prefix else name
            if full in found:  # else a parameter shared under another name
                found[full].update(hp)
    return found
