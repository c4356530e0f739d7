"""Presets shipped as YAML inside the package, `ssmbench presets`, the sweep's grid of task
settings × lengths × lrs × weight decays × seeds, and `ssmbench run --dry-run`."""

from __future__ import annotations

import numpy as np
import pytest

from ssmbench.cli import main
from ssmbench.experiment.config import PRESET_DIR, PRESETS, load_config
from ssmbench.experiment.train import build_model
from ssmbench.tasks import names as task_names


def test_every_shipped_preset_validates_and_is_listed(capsys):
    shipped = {
        p.name.removesuffix(".yaml") for p in PRESET_DIR.iterdir() if p.name.endswith(".yaml")
    }
    assert (
        {"quick", "paper", "smoke", "mamba-table1", "suite-cpu", "zoology-mqar", "mad"}
        <= set(PRESETS)
        == shipped
    )
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in PRESETS:
        config = load_config(name)
        assert config.description and config.estimate, name
        assert f"{name} " in out and f"{len(config.cells())} cells" in out
        assert config.estimate in out


def test_suite_cpu_has_every_task_a_few_models_an_lr_grid_and_seeds():
    config = load_config("suite-cpu")
    lrs, wds = config.grid()
    assert {task.name for task in config.settings()} >= set(task_names())
    assert len(config.models) >= 4 and len(lrs) >= 2 and len(config.seeds) >= 2
    assert config.device == "cpu" and config.workers == 2
    runs = sum(len(lengths) for _, lengths in config.setting_lengths())
    assert len(config.cells()) == (
        len(config.models) * runs * len(lrs) * len(wds) * len(config.seeds)
    )  # fmt: skip


def test_zoology_mqar_is_figure_2s_grid():
    config = load_config("zoology-mqar")
    pairs = {
        (task.params["num_kv_pairs"], tuple(lengths)) for task, lengths in config.setting_lengths()
    }
    assert pairs == {(4, (64,)), (8, (128,)), (16, (256,))}
    assert config.widths() == [64, 128, 256, 512] and config.arch.n_layers == 2
    assert config.grid()[0] == pytest.approx(list(np.logspace(-4, -2, 4)), rel=1e-5)
    assert {t.params["vocab_size"] for t in config.settings()} == {8192}
    assert {t.params["train_examples"] for t in config.settings()} == {100_000}
    batches = {(c.seq_len, c.train.batch_size, c.train.max_steps) for c in config.cells()}
    assert batches == {(64, 512, 12_500), (128, 512, 12_500), (256, 256, 25_000)}  # 64 epochs
    figure_2 = {"transformer-abs", "hyena", "h3", "baseconv", "based", "mamba-s6"}
    assert figure_2 <= set(config.models)
    assert len({c.model_key for c in config.cells()}) == 4 * len(config.models)


def test_zoology_mqar_composes_models_as_figure_2():
    """Figure 2's configs: 4 layers of the mixer alone (attention 2, one head, learned
    positions), BaseConv kernels [3, -1, 3, -1], Based = Hybrid[BaseConv(3), Based]."""
    config = load_config("zoology-mqar")
    kinds = {}
    for cell in config.cells():
        if cell.seq_len == 64 and cell.arch.d_model == 64 and cell.model in MIXERS_OF_FIGURE_2:
            task = cell.task.build(cell.seq_len)
            model = build_model(cell, task)
            kinds[cell.model] = [type(layer.fn).__name__ for layer in model.layers]
    assert kinds == MIXERS_OF_FIGURE_2
    baseconv = next(c for c in config.cells() if c.model == "baseconv")
    convs = [layer.fn.conv for layer in build_model(baseconv, baseconv.task.build(64)).layers]
    assert [getattr(c, "kernel_size", (-1,))[0] for c in convs] == [3, -1, 3, -1]


MIXERS_OF_FIGURE_2 = {
    "transformer-abs": ["CausalSelfAttention"] * 2,
    "hyena": ["Hyena"] * 4,
    "h3": ["H3"] * 4,
    "baseconv": ["BaseConv"] * 4,
    "based": ["BaseConv", "BasedLinearAttention"] * 4,
    "mamba-s6": ["MambaBlock"] * 4,
}


MAD_TASKS = {
    "in-context-recall", "fuzzy-in-context-recall", "noisy-in-context-recall", "selective-copy",
    "compression", "memorization",
}  # fmt: skip


def test_mad_is_its_six_tasks_baselines_and_changes_with_its_grid():
    config = load_config("mad")
    assert {task.name for task in config.settings()} == MAD_TASKS
    assert config.grid() == ([1e-4, 5e-4, 1e-3], [0.0, 0.1])
    assert config.arch.d_model == 128 and config.train.batch_size == 128
    # mad-lab's configs/tasks: the baseline plus 3 vocab sizes, 3 (2 for selective copying)
    # lengths and 4 training-set sizes per task, 3 noise fractions, 3 copy counts, 5
    # memorization vocab sizes
    runs = sum(len(lengths) for _, lengths in config.setting_lengths())
    assert runs == 11 + 11 + 14 + 13 + 11 + 6
    recall = [(t, L) for t, L in config.setting_lengths() if t.name == "in-context-recall"]
    assert (recall[0][0].params["train_examples"], recall[0][1]) == (12_800, [128, 256, 512, 1024])
    steps = {c.task.params["train_examples"]: c.train.max_steps for c in config.cells()}
    assert steps[12_800] == 20_000 and steps[800] == 1_400  # 200 epochs at batch 128
    assert len(config.cells()) == len(config.models) * runs * 6


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_dry_runs(name, tmp_path, capsys, monkeypatch):
    """Cells and an estimate (timing faked: the smoke dry run below times real steps), or for a
    GPU preset on a machine without one, the cells and why there is no estimate."""
    from ssmbench.experiment import estimate

    monkeypatch.setattr(estimate, "measure", lambda *a, **k: {"train_ms": 1.0, "infer_ms": 1.0})
    assert main(["run", "--preset", name, "--dry-run", "--out", str(tmp_path / "never")]) == 0
    printed = capsys.readouterr().out
    config = load_config(name)
    assert f"{len(config.cells())} cells:" in printed
    assert config.cells()[-1].id in printed
    assert "total: at most" in printed or "no estimate: --device cuda" in printed
    assert not (tmp_path / "never").exists()


def test_the_estimate_times_steps_with_the_threads_each_worker_gets(monkeypatch):
    """Two local workers on 8 cores run 4 threads each; the estimate times them so (small
    steps are slower on more threads), then leaves torch's thread count as it was."""
    import torch

    from ssmbench.experiment import estimate

    seen = []

    def timed(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return {"train_ms": 1.0, "infer_ms": 1.0}

    monkeypatch.setattr(estimate, "measure", timed)
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    before = torch.get_num_threads()
    config = load_config("smoke", overrides={"models": ["lstm"], "lengths": [8], "workers": 2})
    printed = estimate.format_estimate(config, estimate.estimate(config))
    assert seen == [4] and torch.get_num_threads() == before
    assert "4 torch thread(s) each" in printed


def test_cells_cover_the_grid_with_distinct_ids_and_shared_cost_ids():
    config = load_config(
        "smoke",
        overrides={
            "models": ["lstm"],
            "lengths": [8],
            "tasks": [{"name": "selective-copy", "n_tokens": 2}, {"name": "copy", "n_tokens": 2}],
            "lrs": [1e-3, 3e-3],
            "weight_decays": [0, 0.1],
            "seeds": [0, 1],
        },
    )
    cells = config.cells()
    assert len(cells) == len({c.id for c in cells}) == 2 * 2 * 2 * 2
    assert {c.cost_id for c in cells} == {
        "lstm/selective-copy-M2-V16/L8",
        "lstm/copy-M2-V16/L8",
    }
    assert "lstm/copy-M2-V16/L8/lr0.003/wd0.1/s1" in {c.id for c in cells}
    assert {(c.train.lr, c.train.weight_decay) for c in cells} == {
        (1e-3, 0.0), (1e-3, 0.1), (3e-3, 0.0), (3e-3, 0.1)
    }  # fmt: skip
    assert load_config("smoke").grid() == ([3e-3], [0.0])  # default: train.lr, train.weight_decay


def test_dry_run_prints_cells_and_an_estimate_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "never"
    argv = ["run", "--preset", "smoke", "--models", "lstm", "--lengths", "8", "--lrs", "1e-3,3e-3"]
    assert main([*argv, "--dry-run", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "2 cells:" in printed and "lstm/selective-copy-M2-V8/L8/lr0.001/wd0/s0" in printed
    assert "ms/train step, 2 cells x 40 steps" in printed and "total: at most" in printed
    assert not out.exists()
