"""Optimizer groups from the layers' marks, per family as each upstream's training code makes
them, and the lr schedules against torch's own schedulers."""

import copy
import re

import pytest
import torch

from ssmbench.experiment.config import TrainConfig
from ssmbench.experiment.train import describe_groups, lr_at, make_optimizer, param_groups
from ssmbench.layers.marks import mark
from ssmbench.models import build

# Each upstream's rule, written from its code by parameter name: (lr, weight decay) given the run's
MAMBA = re.compile(r"\.(A_log|D)$")  # mamba_ssm Mamba: A_log._no_weight_decay, D._no_weight_decay
MAMBA2 = re.compile(r"\.(A_log|D|dt_bias)$")  # Mamba2Simple: the same, and dt_bias
# s4 (and s4d.py): register(name, x, lr=min(0.001, lr)) with weight decay 0 for dt, A, B, P
S4 = re.compile(r"\.(log_dt|A|B|P|log_neg_A_real|A_imag|log_neg_Lambda_real|Lambda_imag)$")


def groups_by_name(name: str, hp: TrainConfig) -> dict[str, tuple[float, float]]:
    model = build(name, vocab_size=10, d_model=16, n_layers=2, d_state=4)
    return {n: (g["lr"], g["weight_decay"]) for g in param_groups(model, hp) for n in g["names"]}


def expected(names, rule: re.Pattern, hp: TrainConfig, special: tuple[float, float]):
    return {n: special if rule.search(n) else (hp.lr, hp.weight_decay) for n in names}


@pytest.mark.parametrize("model, rule", [("mamba-s6", MAMBA), ("s6", MAMBA), ("mamba2", MAMBA2)])
def test_mamba_family_has_no_decay_where_mamba_ssm_marks(model, rule):
    hp = TrainConfig(lr=3e-3, weight_decay=0.1, optimizer="adamw")
    got = groups_by_name(model, hp)
    assert got == expected(got, rule, hp, (hp.lr, 0.0))
    assert sum(1 for n in got if rule.search(n)) >= 4, "two layers' marks"


@pytest.mark.parametrize("model", ["s4", "s4d-real", "s4d-inv", "s4-lowrank", "mamba-s4d-inv"])
@pytest.mark.parametrize("lr", [1e-4, 3e-3])
def test_s4_family_caps_the_ssm_lr_and_does_not_decay_it(model, lr):
    hp = TrainConfig(lr=lr, weight_decay=0.1, optimizer="adamw")
    got = groups_by_name(model, hp)
    assert got == expected(got, S4, hp, (min(lr, 1e-3), 0.0))
    assert any(S4.search(n) for n in got)


# safari's HyenaFilter: every implicit_filter (FFN) tensor lr 1e-3, wd 0; PositionalEmbedding's z
# lr 1e-5, wd 0 (OptimModule.register); the filter's bias and the rest the run's
HYENA_FFN = re.compile(r"\.ffn\.\d+\.(weight|bias|freq)$")
HYENA_Z = re.compile(r"\.z$")


@pytest.mark.parametrize("model", ["hyena", "mamba-hyena", "h3-hyena"])
def test_hyena_filter_has_safaris_lr_and_no_decay(model):
    hp = TrainConfig(lr=3e-4, weight_decay=0.1, optimizer="adamw")
    got = groups_by_name(model, hp)
    want = {
        n: (1e-3, 0.0) if HYENA_FFN.search(n) else (1e-5, 0.0) if HYENA_Z.search(n) else (3e-4, 0.1)
        for n in got
    }
    assert got == want
    assert sum(1 for n in got if HYENA_FFN.search(n)) == 2 * 8, (
        "2 layers of 4 Linears (3 biased) and a freq"
    )
    assert sum(1 for n in got if HYENA_Z.search(n)) == 2


def test_uniform_is_one_group_of_everything():
    model = build("mamba-s6", vocab_size=10, d_model=16, n_layers=2, d_state=4)
    hp = TrainConfig(lr=3e-3, weight_decay=0.1, param_groups="uniform")
    (group,) = param_groups(model, hp)
    assert group["names"] == [n for n, _ in model.named_parameters()]
    assert (group["lr"], group["weight_decay"]) == (3e-3, 0.1)


def test_mad_decays_all_but_biases_norms_and_no_decay_marks():
    """mad-lab's configure_optimizers: _no_weight_decay, 'bias' or 'norm' in the name -> 0."""
    hp = TrainConfig(lr=5e-4, weight_decay=0.1, optimizer="adamw", param_groups="mad")
    got = groups_by_name("mamba-s6", hp)
    rule = re.compile(r"\.(A_log|D)$|bias|norm")
    assert got == expected(got, rule, hp, (hp.lr, 0.0))


def test_marks_survive_double_and_copies():
    model = build("mamba-s6", vocab_size=10, d_model=16, n_layers=1, d_state=4)
    hp = TrainConfig(weight_decay=0.1)
    before = [g["names"] for g in param_groups(model, hp)]
    assert [g["names"] for g in param_groups(copy.deepcopy(model).double(), hp)] == before
    assert len(before) == 2


def test_bad_marks_are_refused():
    layer = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="unknown optimizer mark momentum"):
        mark(layer, "weight", momentum=0.9)
    with pytest.raises(ValueError, match="Linear.in_features is not a parameter"):
        mark(layer, "in_features", weight_decay=0.0)


def test_upstreams_own_marks_on_parameters_are_read():
    """A plugin wrapping mamba_ssm's or s4's modules brings their marks on the parameters."""
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    model[0].weight._no_weight_decay = True
    model[1].bias._optim = {"lr": 1e-3, "weight_decay": 0.0}
    got = {n: (g["lr"], g["weight_decay"]) for g in param_groups(model, TrainConfig(
        lr=1e-2, weight_decay=0.1)) for n in g["names"]}  # fmt: skip
    assert got == {"0.weight": (1e-2, 0.0), "0.bias": (1e-2, 0.1),
                   "1.weight": (1e-2, 0.1), "1.bias": (1e-3, 0.0)}  # fmt: skip


def test_the_optimizer_records_its_groups():
    model = build("s4d-inv", vocab_size=10, d_model=16, n_layers=1, d_state=4)
    hp = TrainConfig(lr=3e-3, weight_decay=0.1, optimizer="adamw")
    described = describe_groups(make_optimizer(model, hp))
    assert [(d["lr"], d["weight_decay"]) for d in described] == [(3e-3, 0.1), (1e-3, 0.0)]
    assert sum(d["params"] for d in described) == sum(p.numel() for p in model.parameters())
    assert "layers.0.fn.ssm.log_dt" in described[1]["names"]


def torch_schedule(lr: float, min_lr: float, epochs: int, steps_per_epoch: int) -> list[float]:
    """The lr at every step under torch's CosineAnnealingLR(T_max=epochs, eta_min=min_lr),
    stepped once an epoch, as zoology's and MAD's trainers do."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs, eta_min=min_lr)
    lrs = []
    for _ in range(epochs):
        lrs += [optimizer.param_groups[0]["lr"]] * steps_per_epoch
        optimizer.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize("epochs", [None, 1, 7, 64])
def test_cosine_matches_torchs_scheduler(epochs):
    max_steps = 448
    hp = TrainConfig(max_steps=max_steps, schedule="cosine", min_lr=1e-5, schedule_epochs=epochs)
    per = max_steps // (epochs or max_steps)
    reference = torch_schedule(1e-3, 1e-5, epochs or max_steps, per)
    ours = [lr_at(1e-3, hp, step) for step in range(max_steps)]
    assert ours == pytest.approx(reference, rel=1e-12, abs=0)


def test_constant_schedule_and_warm_up():
    hp = TrainConfig(max_steps=100, warmup_steps=10)
    assert [lr_at(1e-3, hp, k) for k in (0, 4, 9, 50)] == pytest.approx([1e-4, 5e-4, 1e-3, 1e-3])
    cosine = hp.model_copy(update={"schedule": "cosine", "min_lr": 2e-3})
    assert lr_at(1e-3, cosine, 99) == pytest.approx(1e-3), "a group below min_lr stays put"


def test_schedule_epochs_beyond_steps_is_refused():
    with pytest.raises(ValueError, match=r"schedule_epochs \(20\) exceeds max_steps \(10\)"):
        TrainConfig(max_steps=10, schedule="cosine", schedule_epochs=20)
