"""Where a training step's time goes: torch.profiler's events of a few steps, grouped by the
ssmbench module that issued each op and by op.

Every module with a group below runs its forward inside a profiler scope `ssmbench::<group>` (a
forward pre-hook opens it, a forward hook closes it; the optimizer's step likewise), and so does
every op decorated `ops.profiling.scoped`; an op belongs to the innermost scope around it. A
backward node (`autograd::engine::evaluate_function: X`) belongs to the group of the forward op
that made it (the same sequence number), so each group has a forward and a backward part. Groups:

    embedding      nn.Embedding (and learned positions)
    projections    every nn.Linear (in_proj, q/k/v, gates, out_proj, the head)
    short conv     ops.causal_conv1d, the short causal convolutions
    sequence op    the selective scan, chunked linear attention, SSD, Mamba-3's recurrence, the
                   delta rule, DPLR (RWKV-7), mLSTM, LTI kernels, FFT convolution, attention (SDPA)
                   and torch's LSTM
    norms          LayerNorm, RMSNorm, GroupNorm and gated norms
    mlp            the gated MLP sublayers, less their projections
    mixer          the rest of each mixer: its gates, activations and reshapes
    backbone       the residual adds and what the model does outside its layers
    grad accum     autograd accumulating parameter gradients
    optimizer      optimizer.step
    loss and glue  ops outside every module: the loss, zero_grad, clipping

Each event's self time counts once, so the groups add up to the time spent in ops; `python` is
the rest of the step's wall time (interpreter and hooks). Times are host (CPU) times: on CUDA,
where kernels run asynchronously, they say where launches and synchronizations go, not the GPU.
"""

from __future__ import annotations

import copy
import time
from collections import defaultdict
from collections.abc import Callable

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

from ssmbench.experiment.config import TrainConfig
from ssmbench.experiment.train import make_optimizer, train_step
from ssmbench.layers.mlp import GatedMLP
from ssmbench.models.backbone import Residual, SequenceModel
from ssmbench.ops.profiling import PREFIX

BACKWARD = "autograd::engine::evaluate_function: "
GROUPS = ("embedding", "projections", "short conv", "sequence op", "norms", "mlp", "mixer",
          "backbone", "grad accum", "optimizer", "loss and glue", "python")  # fmt: skip


def group_of(module: nn.Module, mixers: set[int]) -> str | None:
    """The module's own group, or None: its ops belong to the scope around it."""
    if isinstance(module, nn.Embedding):
        return "embedding"
    if isinstance(module, nn.Linear):
        return "projections"
    if isinstance(module, nn.LayerNorm | nn.GroupNorm) or "Norm" in type(module).__name__:
        return "norms"
    if isinstance(module, nn.RNNBase):
        return "sequence op"
    if isinstance(module, GatedMLP):
        return "mlp"
    if id(module) in mixers:
        return "mixer"
    return "backbone" if isinstance(module, SequenceModel) else None


def scoped(model: nn.Module, optimizer: torch.optim.Optimizer) -> list:
    """Open a profiler scope around each grouped module's forward and the optimizer's step; the
    handles returned remove the hooks."""
    mixers = {id(m.fn) for m in model.modules() if isinstance(m, Residual)}
    handles, open_scopes = [], []

    def enter(name: str) -> Callable[..., None]:
        def hook(*_: object) -> None:
            open_scopes.append(record_function(PREFIX + name).__enter__())

        return hook

    def leave(*_: object) -> None:
        open_scopes.pop().__exit__(None, None, None)

    for module in model.modules():
        group = group_of(module, mixers)
        if group is not None:
            handles.append(module.register_forward_pre_hook(enter(group)))
            handles.append(module.register_forward_hook(leave))
    handles.append(optimizer.register_step_pre_hook(enter("optimizer")))
    handles.append(optimizer.register_step_post_hook(leave))
    return handles


def _scope(event) -> str:
    """The group of the innermost ssmbench scope around a forward event."""
    while event is not None:
        if event.name.startswith(PREFIX):
            return event.name.removeprefix(PREFIX)
        event = event.cpu_parent
    return "loss and glue"


def _backward_root(event):
    """The evaluate_function event this event runs inside, or None in the forward."""
    while event is not None and not event.name.startswith(BACKWARD):
        event = event.cpu_parent
    return event


def grouped(events, wall_ms: float) -> dict[str, dict[str, float]]:
    """{group: {"forward": ms, "backward": ms}} from the profiler's events of the step(s)."""
    made_by = {e.sequence_nr: e for e in events if e.sequence_nr >= 0 and _backward_root(e) is None}
    times: dict[str, dict[str, float]] = defaultdict(lambda: {"forward": 0.0, "backward": 0.0})
    for event in events:
        root = _backward_root(event)
        if root is None:
            times[_scope(event)]["forward"] += event.self_cpu_time_total / 1e3
        elif "AccumulateGrad" in root.name:
            times["grad accum"]["backward"] += event.self_cpu_time_total / 1e3
        else:
            forward = made_by.get(root.sequence_nr)
            group = _scope(forward) if forward is not None else "loss and glue"
            times[group]["backward"] += event.self_cpu_time_total / 1e3
    in_ops = sum(t["forward"] + t["backward"] for t in times.values())
    times["python"]["forward"] = max(wall_ms - in_ops, 0.0)
    return {g: dict(times[g]) for g in GROUPS if g in times}


def profile_steps(
    model: nn.Module, optimizer: torch.optim.Optimizer, step: Callable[[], None], repeats: int = 3
) -> dict:
    """Profile `repeats` calls of `step` (one training step of model with optimizer, already
    warmed up): per step, each group's forward and backward ms, the wall ms, and the ten ops
    with the most self time."""
    handles = scoped(model, optimizer)
    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            started = time.perf_counter()
            for _ in range(repeats):
                step()
            wall_ms = (time.perf_counter() - started) * 1e3
    finally:
        for handle in handles:
            handle.remove()
    groups = grouped(prof.events(), wall_ms)
    per_step = {g: {k: v / repeats for k, v in t.items()} for g, t in groups.items()}
    ops = sorted(prof.key_averages(), key=lambda a: a.self_cpu_time_total, reverse=True)
    top = [(a.key, a.self_cpu_time_total / 1e3 / repeats) for a in ops if not _is_scope(a.key)]
    return {"wall_ms": wall_ms / repeats, "groups": per_step, "top_ops": top[:10]}


def profile_training(
    model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, warmup: int = 2, repeats: int = 3
) -> dict:
    """profile_steps of the training step `measure` times (a copy of model, TrainConfig()'s
    optimizer), after `warmup` unprofiled steps."""
    hp = TrainConfig()
    trainee = copy.deepcopy(model).train()
    optimizer = make_optimizer(trainee, hp)
    steps = iter(range(1 << 62))

    def step() -> None:
        train_step(trainee, optimizer, inputs, labels, hp, next(steps))

    for _ in range(warmup):
        step()
    return profile_steps(trainee, optimizer, step, repeats)


def _is_scope(name: str) -> bool:
    return name.startswith((PREFIX, BACKWARD))
