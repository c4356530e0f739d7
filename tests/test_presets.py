"""Presets shipped as YAML inside the package, `ssmbench presets`, the sweep's grid of task
settings × lengths × lrs × weight decays × seeds, and `ssmbench run --dry-run`."""

from __future__ import annotations

from ssmbench.cli import main
from ssmbench.experiment.config import PRESET_DIR, PRESETS, load_config


def test_every_shipped_preset_validates_and_is_listed(capsys):
    shipped = {
        p.name.removesuffix(".yaml") for p in PRESET_DIR.iterdir() if p.name.endswith(".yaml")
    }
    assert {"quick", "paper", "smoke", "mamba-table1", "suite-cpu"} <= set(PRESETS) == shipped
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in PRESETS:
        config = load_config(name)
        assert config.description and config.estimate, name
        assert f"{name} " in out and f"{len(config.cells())} cells" in out
        assert config.estimate in out


def test_suite_cpu_is_multi_task_with_an_lr_grid_and_seeds():
    config = load_config("suite-cpu")
    lrs, wds = config.grid()
    assert len(config.settings()) >= 2 and len(lrs) >= 2 and len(config.seeds) >= 2
    assert config.device == "cpu"
    assert len(config.cells()) == (
        len(config.models) * len(config.settings()) * len(config.lengths) * len(lrs) * len(wds)
        * len(config.seeds)
    )  # fmt: skip


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
