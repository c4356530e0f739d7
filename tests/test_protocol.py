"""The protocol: (lr, wd) chosen on validation, never test; Student-t intervals; MAD's score;
the summary export; and a sweep's costs measured once per shape, with no training alive."""

from __future__ import annotations

import csv
import io
import json
import math
from itertools import pairwise

import pytest

from ssmbench.report import export
from ssmbench.report.protocol import selected_rows
from ssmbench.report.stats import along_axis, choose, difficulty_axes, estimate, scores

T_975_2 = 4.302652729749464  # Student t quantile, 0.975, 2 degrees of freedom (tables)


def cell(model="s6", lr=1e-3, wd=0.0, seed=0, val=0.5, test=0.5, task="copy-M4", L=32, **params):
    return {
        "id": f"{model}/{task}/L{L}/lr{lr:g}/wd{wd:g}/s{seed}",
        "model": model, "task": task, "seq_len": L, "lr": lr, "weight_decay": wd, "seed": seed,
        "status": "done", "val_accuracy": val, "accuracy": test,
        "config": {"task": {"name": task.split("-")[0], **params}},
    }  # fmt: skip


def test_estimate_is_the_student_t_interval_and_n1_has_none():
    values = [0.5, 0.6, 0.7]
    found = estimate(values)
    half = T_975_2 * 0.1 / math.sqrt(3)
    assert (found.n, found.mean, found.std) == (3, pytest.approx(0.6), pytest.approx(0.1))
    assert found.ci95_low == pytest.approx(0.6 - half) and found.ci95_high == pytest.approx(
        0.6 + half
    )
    assert estimate([0.4]) == type(found)(1, 0.4, None, None, None)
    with pytest.raises(ValueError):
        estimate([])


def test_selection_uses_validation_not_test():
    """lr 1e-3 is best on validation, lr 1e-2 on test: 1e-3 is chosen and its test reported."""
    rows = [cell(lr=1e-3, seed=s, val=0.9, test=t) for s, t in enumerate([0.30, 0.40, 0.50])] + [
        cell(lr=1e-2, seed=s, val=0.6, test=0.99) for s in range(3)
    ]
    [choice] = choose(rows)
    assert choice.chosen.lr == 1e-3
    assert choice.chosen.test.mean == pytest.approx(0.40) and choice.chosen.test.n == 3
    assert [r["lr"] for r in selected_rows(rows, [choice])] == [1e-3] * 3
    [summary] = json.loads(export(rows, "json", summary=True))
    assert (summary["lr"], summary["n"]) == (1e-3, 3)
    assert summary["mean"] == pytest.approx(0.40) and summary["ci95_low"] < 0.40


def test_weight_decay_is_chosen_with_lr_and_failed_seeds_do_not_count():
    rows = [
        cell(wd=0.0, val=0.7, test=0.7),
        cell(wd=0.1, val=0.8, test=0.6),
        {**cell(wd=0.1, seed=1, val=None, test=None), "status": "diverged"},
    ]
    [choice] = choose(rows)
    assert (choice.chosen.weight_decay, choice.chosen.test.n) == (0.1, 1)
    failed = [{**r, "status": "failed", "accuracy": None} for r in rows]
    [nothing] = choose(failed)
    assert nothing.chosen is None and nothing.status == "failed"


def test_mad_score_averages_settings_within_a_task_then_tasks():
    rows = [
        cell("a", task="copy-M4", L=32, test=0.2), cell("a", task="copy-M4", L=64, test=0.4),
        cell("a", task="recall-K8", L=32, test=0.9),
        cell("b", task="copy-M4", L=32, test=0.5), cell("b", task="recall-K8", L=32, test=0.5),
    ]  # fmt: skip
    found = {s.model: s for s in scores(choose(rows))}
    assert found["a"].score == pytest.approx((0.3 + 0.9) / 2)
    assert found["a"].per_task == {"copy": pytest.approx(0.3), "recall": pytest.approx(0.9)}
    assert (found["b"].score, found["a"].settings) == (pytest.approx(0.5), 3)
    assert [s.model for s in scores(choose(rows))] == ["a", "b"]


def test_difficulty_axes_are_the_parameters_a_preset_varies():
    rows = [
        cell(task=f"mqar-K{k}", L=L, num_kv_pairs=k, vocab_size=64, test=k / 100 + L / 1000)
        for k in (4, 8)
        for L in (64, 128)
    ]
    choices = choose(rows)
    assert difficulty_axes(choices) == {"mqar": ["seq_len", "num_kv_pairs"]}
    assert along_axis(choices, "mqar", "num_kv_pairs") == {
        "s6": {4: pytest.approx(0.04 + 0.096), 8: pytest.approx(0.08 + 0.096)}
    }


def test_summary_export_has_one_row_per_setting_in_every_format():
    rows = [cell(m, L=L, seed=s) for m in ("s6", "lstm") for L in (32, 64) for s in (0, 1)]
    costs = [
        {"model": m, "task": "copy-M4", "seq_len": L, "status": "done", "train_ms": 1.5,
         "alone": True}
        for m in ("s6", "lstm") for L in (32, 64)
    ]  # fmt: skip
    records = json.loads(export(rows, "json", costs, summary=True))
    assert len(records) == 4 and all(r["train_ms"] == 1.5 and r["alone"] for r in records)
    keys = {"model", "task", "seq_len", "lr", "weight_decay", "n", "mean", "std", "ci95_low",
            "ci95_high", "train_ms", "peak_mem_mib", "util_pct"}  # fmt: skip
    assert keys <= set(records[0])
    assert len(list(csv.DictReader(io.StringIO(export(rows, "csv", costs, summary=True))))) == 4
    assert export(rows, "md", costs, summary=True).count("\n| ") == 4  # the rows under the rule
    full = json.loads(export(rows, "json", costs))
    assert len(full) == 8 and all(r["train_ms"] == 1.5 for r in full)


@pytest.mark.slow
def test_costs_are_measured_once_per_shape_with_no_training_alive(tmp_path):
    """--workers 2: training cells overlap each other, then every cost is measured after the
    last training cell ended, one at a time, once per (model, length)."""
    from ssmbench.experiment.config import load_config
    from ssmbench.experiment.store import FILENAME, Store
    from ssmbench.experiment.sweep import run_sweep

    overrides = {
        "models": ["s4d-real", "lstm"],
        "lengths": [8],
        "lrs": [3e-3, 1e-2],
        "workers": 2,
        "train": {"max_steps": 20},
        "measure": {"repeats": 20},
    }
    config = load_config("smoke", overrides=overrides)
    run_sweep(config, tmp_path)
    with Store(tmp_path / FILENAME, readonly=True) as store:
        rows, costs = store.rows(), store.costs()
    assert len(rows) == 4 and all(r["status"] == "done" for r in rows)
    assert sorted(c["id"] for c in costs) == sorted({c.cost_id for c in config.cells()})
    spans = sorted((r["started_at"], r["ended_at"]) for r in rows)
    assert any(b[0] < a[1] for a, b in pairwise(spans)), "training ran in parallel"
    measured = sorted((c["measured_from"], c["measured_to"]) for c in costs)
    assert max(end for _, end in spans) <= measured[0][0]
    assert all(a[1] <= b[0] for a, b in pairwise(measured)), "one at a time"
    assert all(c["alone"] is True and c["status"] == "done" for c in costs)
