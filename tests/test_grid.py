"""Grids beyond models × tasks × lengths: task entries with their own lengths and training budget
(zoology pairs L with the number of key-value pairs; MAD varies one axis per setting), and a
width sweep (`d_models`) whose width is part of every id, the store's model key and the report's
grouping."""

from __future__ import annotations

import json

import pytest

from ssmbench.cli import main
from ssmbench.experiment.cell import run_cell
from ssmbench.experiment.config import ConfigError, SweepConfig, load_config
from ssmbench.experiment.store import Store
from ssmbench.report.stats import along_axis, choose, difficulty_axes
from ssmbench.report.tables import metric_table

MQAR = {"name": "mqar", "vocab_size": 32}


def grid(**overrides) -> SweepConfig:
    """The smoke preset on lstm, with `overrides` on top."""
    return load_config("smoke", overrides={"models": ["lstm"], **overrides})


def test_task_entries_pair_their_own_lengths_and_others_take_the_sweeps():
    config = grid(
        lengths=[24],
        tasks=[
            {**MQAR, "num_kv_pairs": 2, "lengths": [16]},
            {**MQAR, "num_kv_pairs": 4, "lengths": [32, 48]},
            {"name": "copy", "n_tokens": 2},  # no lengths of its own: the sweep's
        ],
    )
    assert {(c.task.key, c.seq_len) for c in config.cells()} == {
        ("mqar-KV2-V32-a0.01-rnq1", 16),
        ("mqar-KV4-V32-a0.01-rnq1", 32),
        ("mqar-KV4-V32-a0.01-rnq1", 48),
        ("copy-M2-V16", 24),
    }
    assert len(config.cells()) == 4 and config.all_lengths() == [16, 24, 32, 48]
    assert "lstm/mqar-KV4-V32-a0.01-rnq1/L48/lr0.003/wd0/s0" in {c.id for c in config.cells()}


def test_when_every_entry_has_lengths_the_sweep_needs_none():
    config = grid(lengths=None, tasks=[{**MQAR, "num_kv_pairs": 2, "lengths": [16]}])
    assert [c.seq_len for c in config.cells()] == [16]


def test_a_task_entry_may_set_its_own_training_budget_but_not_the_grid():
    config = grid(
        lengths=None,
        lrs=[1e-3, 3e-3],
        tasks=[
            {**MQAR, "num_kv_pairs": 2, "lengths": [16], "train": {"max_steps": 7}},
            {**MQAR, "num_kv_pairs": 4, "lengths": [32]},
        ],
    )
    budget = {
        (c.seq_len, c.train.lr): (c.train.max_steps, c.train.batch_size) for c in config.cells()
    }
    assert budget == {
        (16, 1e-3): (7, 8),
        (16, 3e-3): (7, 8),
        (32, 1e-3): (40, 8),
        (32, 3e-3): (40, 8),
    }
    with pytest.raises(ConfigError, match=r"train\.lr: a task entry cannot set it"):
        grid(lengths=None, tasks=[{**MQAR, "num_kv_pairs": 2, "lengths": [16], "train": {"lr": 1}}])


def test_width_sweep_puts_the_width_in_ids_cost_ids_and_each_cells_arch():
    config = grid(lengths=[8], d_models=[8, 16], lrs=[1e-3, 3e-3])
    cells = config.cells()
    assert len(cells) == len({c.id for c in cells}) == 4
    assert {c.cost_id for c in cells} == {
        "lstm@d8/selective-copy-M2-V8/L8",
        "lstm@d16/selective-copy-M2-V8/L8",
    }
    assert {c.id: c.arch.d_model for c in cells}[
        "lstm@d16/selective-copy-M2-V8/L8/lr0.001/wd0/s0"
    ] == 16
    assert all(c.model == "lstm" for c in cells)  # the registry name stays what is built
    unswept = grid(lengths=[8]).cells()
    assert [c.id for c in unswept] == ["lstm/selective-copy-M2-V8/L8/lr0.003/wd0/s0"]


def test_fingerprint_marks_a_swept_width_and_own_budgets_and_lets_the_grid_grow():
    plain = grid(lengths=[8])
    assert json.loads(plain.fingerprint())["arch"]["d_model"] == 16  # as before d_models existed
    assert "train_per_task" not in json.loads(plain.fingerprint())
    swept = grid(lengths=[8], d_models=[8])
    assert swept.fingerprint() != plain.fingerprint()
    assert grid(lengths=[8], d_models=[8, 16]).fingerprint() == swept.fingerprint()  # may grow
    entry = {**MQAR, "num_kv_pairs": 2, "lengths": [16]}
    own = grid(lengths=None, tasks=[{**entry, "train": {"max_steps": 7}}])
    assert own.fingerprint() != grid(lengths=None, tasks=[entry]).fingerprint()


def test_the_config_round_trips_through_its_dump_written_flat():
    config = grid(
        lengths=None,
        d_models=[8, 16],
        tasks=[{**MQAR, "num_kv_pairs": 2, "lengths": [16], "train": {"max_steps": 7}}],
    )
    dumped = config.model_dump()
    assert dumped["tasks"][0]["lengths"] == [16] and dumped["tasks"][0]["num_kv_pairs"] == 2
    assert dumped["tasks"][0]["train"] == {"max_steps": 7}
    assert SweepConfig.model_validate(dumped).cells() == config.cells()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lengths": None}, "no lengths: give lengths"),
        (
            {"lengths": [16], "tasks": [{**MQAR, "num_kv_pairs": 2, "lengths": [16]}]},
            "lengths (--lengths) unused: every task entry has its own lengths",
        ),
        (
            {"lengths": [16], "tasks": [{**MQAR, "num_kv_pairs": 2}, {**MQAR, "num_kv_pairs": 2}]},
            "mqar-KV2-V32-a0.01-rnq1 at L=16 is listed twice",
        ),
        ({"tasks": [{**MQAR, "num_kv_pairs": 2, "lengths": []}]}, "tasks.0.lengths"),
        ({"tasks": [{**MQAR, "num_kv_pairs": 2, "lengths": [0]}]}, "tasks.0.lengths.0"),
        ({"tasks": [{**MQAR, "lengths": [16], "train": {"max_stepz": 3}}]}, "unknown key"),
        ({"lengths": None, "tasks": [{**MQAR, "num_kv_pairs": 9, "lengths": [16]}]}, "fit"),
        ({"tasks": [{**MQAR, "kv_pairs": 2, "lengths": [16]}]}, "tasks.0: mqar: kv_pairs: unknown"),
        ({"d_models": [0]}, "d_models.0"),
        ({"d_models": []}, "d_models"),
    ],
)
def test_bad_grids_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError) as raised:
        grid(**overrides)
    text = str(raised.value)
    assert message in text and "\n" not in text and text.startswith("command line: ")


def test_cli_refuses_lengths_that_every_task_entry_overrides(tmp_path, capsys):
    code = main(["run", "--preset", "zoology-mqar", "--lengths", "64", "--dry-run",
                 "--out", str(tmp_path / "never")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "every task entry has its own lengths" in err


def test_cli_d_models_sweeps_the_width(tmp_path, capsys, monkeypatch):
    from ssmbench.experiment import estimate

    monkeypatch.setattr(estimate, "measure", lambda *a, **k: {"train_ms": 1.0, "infer_ms": 1.0})
    argv = ["run", "--preset", "smoke", "--models", "lstm", "--lengths", "8", "--d-models", "8,16"]
    assert main([*argv, "--dry-run", "--out", str(tmp_path / "never")]) == 0
    printed = capsys.readouterr().out
    assert "2 cells:" in printed and "lstm@d16/selective-copy-M2-V8/L8/lr0.003/wd0/s0" in printed


def row(model, d_model, lr, val, test, task="mqar-KV4", kv=4):
    return {
        "id": f"{model}/{task}/L64/lr{lr:g}/wd0/s0", "model": model, "task": task, "seq_len": 64,
        "lr": lr, "weight_decay": 0.0, "seed": 0, "status": "done", "val_accuracy": val,
        "accuracy": test, "display_name": "Mamba (S6)",
        "config": {"model": "mamba-s6", "arch": {"d_model": d_model},
                   "task": {"name": "mqar", "num_kv_pairs": kv}},
    }  # fmt: skip


def test_lr_is_chosen_per_width_and_accuracy_is_plotted_against_d_model():
    rows = [
        row("mamba-s6@d64", 64, 1e-3, val=0.9, test=0.5),
        row("mamba-s6@d64", 64, 1e-2, val=0.1, test=0.9),
        row("mamba-s6@d128", 128, 1e-3, val=0.2, test=0.1),
        row("mamba-s6@d128", 128, 1e-2, val=0.8, test=0.7),
    ]
    choices = {c.model: c for c in choose(rows)}
    assert choices["mamba-s6@d64"].chosen.lr == 1e-3 and choices["mamba-s6@d128"].chosen.lr == 1e-2
    assert choices["mamba-s6@d128"].title == "Mamba (S6) @d128"
    assert difficulty_axes(list(choices.values())) == {"mqar": ["d_model"]}
    assert along_axis(list(choices.values()), "mqar", "d_model") == {
        "mamba-s6": {64: 0.5, 128: 0.7}
    }
    assert "Mamba (S6) @d64" in metric_table(rows, "accuracy")


def test_width_swept_models_are_plotted_against_their_state_size():
    rows = [
        {**row(f"{model}@d{d}", d, 1e-3, val=0.5, test=acc), "state_size": state,
         "config": {"model": model, "arch": {"d_model": d}, "task": {"name": "mqar"}}}
        for model, d, state, acc in [
            ("deltanet", 32, 400, 0.6), ("deltanet", 64, 1600, 0.9),
            ("gla", 64, 512, 0.1), ("gla", 128, 2048, 0.3),
        ]
    ]  # fmt: skip
    choices = choose(rows)
    assert difficulty_axes(choices) == {"mqar": ["d_model", "state_size"]}
    assert along_axis(choices, "mqar", "state_size") == {
        "deltanet": {400: 0.6, 1600: 0.9},
        "gla": {512: 0.1, 2048: 0.3},
    }
    unknown = [{**r, "state_size": None} for r in rows]  # rows from before state sizes were kept
    assert difficulty_axes(choose(unknown)) == {"mqar": ["d_model"]}


def test_a_width_swept_cell_trains_and_is_stored_under_its_model_key(tmp_path):
    config = grid(
        lengths=None,
        d_models=[8],
        tasks=[{**MQAR, "num_kv_pairs": 2, "lengths": [16], "train": {"max_steps": 4}}],
        train={"eval_every": 2, "val_size": 16, "test_size": 16},
    )
    [cell] = config.cells()
    result = run_cell(cell, tmp_path)
    assert result.status == "done" and result.metrics["steps"] == 4
    with Store(tmp_path / "results.sqlite") as store:
        store.mark_running(cell)
        store.finish(cell.id, result)
        [stored] = store.rows()
    assert (stored["model"], stored["config"]["arch"]["d_model"]) == ("lstm@d8", 8)
    [choice] = choose([stored])
    assert (choice.model, choice.base_model, choice.d_model) == ("lstm@d8", "lstm", 8)
