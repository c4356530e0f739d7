"""`bench --profile`: a training step's time by module group, forward and backward, from
torch.profiler's events; the groups add up to the step and land where the work is."""

import torch
from torch import nn

from ssmbench.cli import main
from ssmbench.experiment.profile import GROUPS, profile_steps, profile_training
from ssmbench.models import build, register, restored_registry
from ssmbench.ops.profiling import scoped

V = 10


class SlowBackward(torch.autograd.Function):
    """Identity whose backward does n matmuls: work that exists only in the backward pass."""

    @staticmethod
    def forward(ctx, x, n):
        ctx.n = n
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        m = torch.randn(256, 256)
        for _ in range(ctx.n):
            m = m @ m / 256
        return grad + 0 * m.sum(), None


@scoped("sequence op")
def heavy_mix(x: torch.Tensor) -> torch.Tensor:
    """A causal cumulative mean with a heavy forward (matmuls) and a heavy backward."""
    m = torch.randn(256, 256)
    for _ in range(20):
        m = m @ m / 256
    mean = x.cumsum(1) / torch.arange(1, x.shape[1] + 1)[:, None]  # (B, L, D)
    return SlowBackward.apply(mean + 0 * m.sum(), 40)


class HeavyMixer(nn.Module):
    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return heavy_mix(self.proj(x))


def profiled(name: str, **sizes) -> dict:
    torch.manual_seed(0)
    model = build(name, vocab_size=V, d_model=16, n_layers=2, d_state=4, **sizes)
    tokens = torch.randint(0, V, (4, 24))
    return profile_training(model, tokens, tokens, warmup=1, repeats=2)


def test_a_mixers_op_gets_its_forward_and_its_backward():
    with restored_registry():
        register("heavy", lambda d_model, d_state: [HeavyMixer(d_model)])
        found = profiled("heavy")
    groups = found["groups"]
    op = groups["sequence op"]
    spent = sum(t["forward"] + t["backward"] for t in groups.values())
    assert op["forward"] > 0.2 * spent and op["backward"] > 0.4 * spent, groups
    assert groups["loss and glue"]["backward"] < 0.1 * op["backward"]


def test_groups_add_up_to_the_step_and_name_the_mamba_blocks_parts():
    found = profiled("mamba-s6")
    groups = found["groups"]
    assert list(groups) == [g for g in GROUPS if g in groups]
    total = sum(t["forward"] + t["backward"] for t in groups.values())
    assert abs(total - found["wall_ms"]) < 1e-6 * found["wall_ms"]
    for group in ("projections", "short conv", "sequence op", "norms", "optimizer", "grad accum"):
        assert sum(groups[group].values()) > 0, group
    for group in ("projections", "short conv", "sequence op"):
        assert groups[group]["backward"] > 0, group
    assert found["top_ops"] and all(not n.startswith("ssmbench::") for n, _ in found["top_ops"])


def test_profiling_leaves_no_hooks_behind():
    torch.manual_seed(0)
    model = build("transformer", vocab_size=V, d_model=16, n_layers=1)
    optimizer = torch.optim.Adam(model.parameters())
    tokens = torch.randint(0, V, (2, 8))

    def step():
        model(tokens).sum().backward()
        optimizer.step()

    found = profile_steps(model, optimizer, step, repeats=1)
    assert sum(found["groups"]["sequence op"].values()) > 0  # the hooks were there
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert not optimizer._optimizer_step_pre_hooks and not optimizer._optimizer_step_post_hooks


def test_bench_profile_prints_the_groups(capsys):
    args = ["bench", "--models", "lstm,transformer", "--lengths", "16", "--batch-size", "2"]
    assert main([*args, "--repeats", "1", "--profile"]) == 0
    out = capsys.readouterr().out
    assert "Where a training step's time goes" in out
    table = out.split("Where a training step's time goes")[1]
    assert "| lstm | 16 |" in table and "| transformer | 16 |" in table and "sequence op" in table
