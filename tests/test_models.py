"""Registry-driven model tests: every registered model (and a plugin) gets each check."""

import re
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from ssmbench.experiment.config import load_config
from ssmbench.experiment.train import build_model
from ssmbench.layers.s6 import S6
from ssmbench.models import (
    MODELS,
    ModelSpec,
    backends_of,
    build,
    get,
    n_params,
    names,
    register,
    restored_registry,
)

V = 10
README = Path(__file__).parent.parent / "README.md"


def small(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build(name, vocab_size=V, d_model=16, n_layers=2, d_state=4).eval()


def check_shapes_and_gradients(name: str) -> None:
    model = small(name).train()
    tokens = torch.randint(0, V, (2, 37))
    logits = model(tokens)
    assert logits.shape == (2, 37, V) and logits.dtype == torch.float32
    logits.logsumexp(-1).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient reaches {missing}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def check_causal(name: str) -> None:
    """Changing the inputs after position t leaves the logits up to t unchanged."""
    model = small(name)
    tokens = torch.randint(0, V, (2, 41))
    t = 20
    changed = tokens.clone()
    changed[:, t + 1 :] = (tokens[:, t + 1 :] + torch.randint(1, V, (2, 41 - t - 1))) % V
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    scale = a.abs().max()
    assert (a[:, : t + 1] - b[:, : t + 1]).abs().max() <= 1e-5 * scale
    assert (a[:, t + 1 :] - b[:, t + 1 :]).abs().max() > 1e-3 * scale, "later inputs matter"


def check_float64(name: str) -> None:
    """Built in float64, the model computes in float64, forward and backward, at lengths 1 and 2
    (one-step generation; the fused scan's time-varying B and C have one row there) and 37."""
    model = small(name).double().train()
    for length in (1, 2, 37):
        logits = model(torch.randint(0, V, (2, length)))
        assert logits.dtype == torch.float64, f"L = {length}: {logits.dtype}"
        model.zero_grad()
        logits.logsumexp(-1).mean().backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(g.dtype == torch.float64 and torch.isfinite(g).all() for g in grads)


def check_prefix_consistent(name: str) -> None:
    """In float64, the logits of a prefix alone equal those of the same prefix inside a longer
    input (1e-10 of their scale): nothing a model computes depends on how many positions follow."""
    model = small(name).double()
    tokens = torch.randint(0, V, (2, 41))
    with torch.no_grad():
        full = model(tokens)  # (2, 41, V)
        for length in (1, 2, 17, 33):
            prefix = model(tokens[:, :length])
            error = (prefix - full[:, :length]).abs().max().item()
            assert error <= 1e-10 * full.abs().max().item(), f"L = {length}: off by {error:.3g}"


def check_deterministic(name: str) -> None:
    """The same seed builds the same model; the same input gives the same output."""
    tokens = torch.randint(0, V, (2, 19))
    a, b = small(name, seed=3), small(name, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(a(tokens), b(tokens), rtol=0, atol=0)
        torch.testing.assert_close(a(tokens), a(tokens), rtol=0, atol=0)


def check_facts(name: str) -> None:
    spec = get(name)
    facts = spec.describe(64, 16, 128)
    assert set(facts) == {"display_name", "family", "mixer", "block", "state_size"}
    assert isinstance(facts["state_size"], int) and facts["state_size"] >= 0
    assert spec.state(64, 16, 256) >= facts["state_size"], "state never shrinks with length"


CHECKS = [
    check_shapes_and_gradients,
    check_causal,
    check_float64,
    check_prefix_consistent,
    check_deterministic,
    check_facts,
]


@pytest.mark.parametrize(
    "name, check",
    [(name, check) for name in names() for check in CHECKS],
    ids=[f"{name}-{c.__name__.removeprefix('check_')}" for name in names() for c in CHECKS],
)
def test_every_registered_model(name, check):
    check(name)


class ScaledS6(nn.Module):
    """A plugin's mixer: S6 with a learned output scale."""

    def __init__(self, d_model: int, d_state: int) -> None:
        super().__init__()
        self.s6 = S6(d_model, d_state)
        self.scale = nn.Parameter(torch.ones(d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.s6(x) * self.scale


def test_a_plugin_gets_every_check_and_leaves_the_registry_as_it_was():
    before = dict(MODELS)
    with restored_registry():
        register(ModelSpec("plugin-s6", lambda d_model, d_state: [ScaledS6(d_model, d_state)]))
        assert "plugin-s6" in names()
        for check in CHECKS:
            check("plugin-s6")
        assert backends_of(small("plugin-s6")) == ["selective-scan"], "recorded scan backend"
    assert dict(MODELS) == before


def readme_model_rows() -> list[tuple[list[str], list[int]]]:
    """The README model table's rows: the names in the first column and the per-layer parameter
    counts of the fourth (one per distinct count: "29,568 (S4D) / 32,640 (S6)")."""
    table = README.read_text().split("| name | what it is |", 1)[1].split("\n\n", 1)[0]
    rows = []
    for line in table.splitlines()[2:]:
        cells = line.split(" | ")
        counts = re.findall(r"\d{1,3}(?:,\d{3})+", cells[3])  # thousands, comma-grouped
        rows.append(
            (re.findall(r"`([a-z0-9-]+)`", cells[0]), [int(c.replace(",", "")) for c in counts])
        )
    return rows


def test_the_readme_model_table_names_every_model_with_its_parameters_per_layer():
    listed = {}
    for models, counts in readme_model_rows():
        computed = [sum(n_params(m) for m in get(name).make_layers(64, 16)) for name in models]
        assert sorted(set(computed)) == sorted(counts), f"{models}: README {counts}, {computed}"
        listed.update(dict.fromkeys(models))
    assert sorted(listed) == sorted(names()), "README's model table vs the registry"


def test_a_variant_is_its_base_model_with_other_option_defaults():
    base, variant = get("mamba2"), get("mamba2-neg")
    assert variant.options() == {**base.options(), "negative_eigenvalues": True}
    assert (variant.family, variant.mixer, variant.reference) == (base.family, base.mixer,
                                                                  base.reference)  # fmt: skip
    assert variant.title != base.title and not variant.study
    torch.manual_seed(0)
    a = build("mamba2-neg", vocab_size=V, d_model=16, d_state=4)
    torch.manual_seed(0)
    b = build("mamba2", vocab_size=V, d_model=16, d_state=4, negative_eigenvalues=True)
    tokens = torch.randint(0, V, (2, 9))
    torch.testing.assert_close(a(tokens), b(tokens))  # the same model
    with pytest.raises(ValueError, match="takes no option"):
        base.variant("mamba2-bad", "bad", no_such_option=1)


def test_readme_plugin_example_loads_with_plugins(tmp_path, monkeypatch):
    """The README's plugin example, saved as a module, is what `--plugins` imports."""
    match = re.search(r"```python\n(# my_mixers\.py.*?)```", README.read_text(), re.S)
    assert match, "README has a plugin example starting with '# my_mixers.py'"
    code = match.group(1)
    assert len([line for line in code.splitlines() if line.strip()]) <= 16
    (tmp_path / "my_mixers.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    with restored_registry():
        config = load_config("smoke", overrides={"plugins": ["my_mixers"], "models": ["ema"]})
        assert config.models == ["ema"]
        for check in CHECKS:
            check("ema")
    sys.modules.pop("my_mixers", None)
    assert "ema" not in names()


def test_backends_are_read_from_the_modules():
    uses_scan = {name for name in names() if backends_of(small(name))}
    assert "s6" in uses_scan and "mamba-s6" in uses_scan
    assert "s4d-real" not in uses_scan and "transformer" not in uses_scan


def test_gated_mlp_mixes_no_tokens():
    model = small("gated-mlp")
    tokens = torch.randint(0, V, (2, 30))
    changed = tokens.clone()
    changed[:, 10] = (tokens[:, 10] + 1) % V
    with torch.no_grad():
        diff = (model(tokens) - model(changed)).abs().amax(dim=(0, 2))  # (T,)
    assert diff[10] > 0 and diff[torch.arange(30) != 10].max() == 0


def test_transformer_knows_positions():
    """With RoPE, the same token at two positions after a context gives different outputs."""
    model = small("transformer")
    tokens = torch.tensor([[3, 5, 5, 5, 5, 5]])
    with torch.no_grad():
        logits = model(tokens)[0]
    assert (logits[2] - logits[5]).abs().max() > 1e-4


def test_bad_build_arguments():
    with pytest.raises(ValueError, match="unknown model 'mamba'"):
        build("mamba", vocab_size=V)
    with pytest.raises(ValueError, match="takes no option n_heads"):
        build("s4d-real", vocab_size=V, n_heads=4)
    with pytest.raises(ValueError, match="d_model"):
        build("lstm", vocab_size=V, d_model=0)


def test_overrides_reach_the_layers():
    wide = build("mamba-s6", vocab_size=V, d_model=16, expand=4)
    narrow = build("mamba-s6", vocab_size=V, d_model=16, expand=2)
    assert n_params(wide) > n_params(narrow)


def test_mamba_dt_rank_defaults_to_upstream_and_is_an_option():
    """mamba_ssm: dt_rank = ceil(d_model / 16); the study's ceil(d_inner / 16) is an option."""
    default = build("mamba-s6", vocab_size=V, d_model=64)
    study = build("mamba-s6", vocab_size=V, d_model=64, dt_rank=8)
    s6s = [m for m in default.modules() if isinstance(m, S6)]
    assert {m.dt_rank for m in s6s} == {4}
    assert {m.dt_rank for m in study.modules() if isinstance(m, S6)} == {8}


def test_lstm_hidden_size_is_an_option():
    model = build("lstm", vocab_size=V, d_model=64, hidden=16)
    lstm = next(m for m in model.modules() if isinstance(m, nn.LSTM))
    assert lstm.hidden_size == 16
    assert get("lstm").state(64, 16, 100, hidden=16) == 32


def test_state_sizes_follow_their_definitions():
    assert get("s6").state(64, 16, 1000) == 64 * 16
    assert get("transformer").state(64, 16, 1000) == 2 * 64 * 1000  # the KV cache
    assert get("mamba-s6").state(64, 16, 1000) == 128 * (16 + 3)  # SSM + conv states
    assert get("gated-mlp").state(64, 16, 1000) == 0


def test_paper_preset_builds_the_studys_sizes():
    arch = load_config("paper").arch
    mamba = build("mamba-s6", vocab_size=V, **arch.build_kwargs("mamba-s6"))
    assert {m.dt_rank for m in mamba.modules() if isinstance(m, S6)} == {8}  # ceil(128 / 16)
    lstm = build("lstm", vocab_size=V, **arch.build_kwargs("lstm"))
    assert {m.hidden_size for m in lstm.modules() if isinstance(m, nn.LSTM)} == {16}
    quick = load_config("quick").arch
    assert quick.build_kwargs("mamba-s6") == {"d_model": 64, "n_layers": 2, "d_state": 16}


def cell_with(model: str, lengths: list[int], eval_lengths: list[int], options: dict):
    config = load_config(
        "smoke",
        overrides={
            "models": [model],
            "lengths": lengths,
            "task": {"name": "induction-heads", "vocab_size": 16},
            "eval_lengths": eval_lengths,
            "arch": {"d_model": 8, "n_layers": 1, "options": {model: options} if options else {}},
        },
    )
    return config.cells()[0]


@pytest.mark.parametrize("model", ["hyena", "mamba-hyena", "h3-hyena", "baseconv"])
def test_the_trainer_builds_long_filters_for_the_longest_input(model):
    """l_max unset: the longest of seq_len and eval_lengths; given: kept, or refused if short."""
    cell = cell_with(model, [16], [24, 64], {})
    built = build_model(cell, cell.task.build(cell.seq_len))
    l_maxes = {m.l_max for m in built.modules() if hasattr(m, "l_max")}
    assert l_maxes == {64}
    cell = cell_with(model, [16], [], {"l_max": 100})
    built = build_model(cell, cell.task.build(cell.seq_len))
    assert {m.l_max for m in built.modules() if hasattr(m, "l_max")} == {100}
    cell = cell_with(model, [16], [32], {"l_max": 20})
    with pytest.raises(
        ValueError, match=f"model '{model}' has l_max 20 but runs inputs of length 32"
    ):
        build_model(cell, cell.task.build(cell.seq_len))


def test_models_without_l_max_keep_their_options():
    assert get("mamba-s6").sized_for({"dt_rank": 2}, 500) == {"dt_rank": 2}
