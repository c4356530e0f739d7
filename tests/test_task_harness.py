"""Every task through the same harness: config section, CLI, training, readout, other lengths."""

from __future__ import annotations

import json

import pytest
import torch

from ssmbench import tasks
from ssmbench.cli import _write_report, main
from ssmbench.experiment.config import ConfigError, load_config
from ssmbench.experiment.store import FILENAME, Store
from ssmbench.experiment.sweep import run_sweep
from ssmbench.experiment.train import new_state, score_at_lengths, train
from ssmbench.models import build
from ssmbench.models.autoencoder import AutoEncoder, with_readout

CPU = torch.device("cpu")

TINY = {  # (length, parameters): each task small enough to train a few steps in a second
    "selective-copy": (12, {"n_tokens": 2, "vocab_size": 8}),
    "copy": (12, {"n_tokens": 2, "vocab_size": 8}),
    "induction-heads": (16, {}),
    "mqar": (16, {"num_kv_pairs": 2, "vocab_size": 32}),
    "in-context-recall": (16, {"train_examples": 64}),
    "fuzzy-in-context-recall": (32, {"train_examples": 64}),
    "noisy-in-context-recall": (16, {"train_examples": 64}),
    "memorization": (16, {"vocab_size": 32, "train_examples": 32}),
    "compression": (8, {"train_examples": 64}),
    "parity": (16, {"train_lengths": "3-16", "test_lengths": "16-32"}),
    "modular-arithmetic": (16, {"train_lengths": "3-16", "test_lengths": "16-32"}),
    "word-problem": (8, {"group": "S3"}),
    "cumulative-parity": (16, {}),
    "majority": (16, {}),
    "forgetting-mqar": (16, {"num_kv_pairs": 2, "num_updates": 1, "vocab_size": 32}),
    "compositional-mqar": (24, {"num_kv_pairs": 4, "vocab_size": 64}),
    "string-copy": (16, {"vocab_size": 8, "train_lengths": "5-16", "test_lengths": "16-32"}),
    "ngram-lookup": (
        24,
        {
            "vocab_size": 12,
            "n_gram": 2,
            "length_answer": 2,
            "train_lengths": "15-24",
            "test_lengths": "24-48",
        },
    ),
    "flip-flop": (16, {}),
}


def tiny_config(name: str, **more):
    length, params = TINY[name]
    return load_config(
        "smoke",
        overrides={
            "models": ["lstm"],
            "lengths": [length],
            "task": {"name": name, **params},
            "eval_lengths": [2 * length],
            "train": {"max_steps": 4, "eval_every": 2, "val_size": 16, "test_size": 16},
            "measure": {"enabled": False},
            **more,
        },
    )


def test_every_task_has_a_tiny_setting():
    assert set(TINY) == set(tasks.names())


@pytest.mark.parametrize("name", TINY)
def test_every_task_trains_scores_and_reports_through_the_sweep(name, tmp_path):
    config = tiny_config(name)
    run_sweep(config, tmp_path)
    with Store(tmp_path / FILENAME, readonly=True) as store:
        [row] = store.rows()
        report = _write_report(store)
    assert row["status"] == "done", row["error"]
    assert 0 <= row["exact_match"] <= 1 and 0 <= row["accuracy"] <= 1
    length = TINY[name][0]
    assert set(row["accuracy_by_length"]) == {str(length), str(2 * length)}
    assert row["accuracy_by_length"][str(length)] == row["accuracy"]
    assert row["task"] == config.task.key and row["task"].startswith(name)
    text = report.read_text()
    assert f"Accuracy at other lengths: {config.task.key}" in text


def test_task_section_is_validated_by_its_task():
    config = load_config("quick", overrides={"task": {"name": "mqar", "num_kv_pairs": 4}})
    assert config.task.name == "mqar" and config.task.params["num_kv_pairs"] == 4
    assert not hasattr(config.task, "n_tokens"), "the preset's copy parameters were dropped"
    assert config.cells()[0].id.split("/")[1] == "mqar-KV4-V8192-a0.01-rnq1"
    assert config.cells()[0].cost_id.endswith("mqar-KV4-V8192-a0.01-rnq1/L32")
    with pytest.raises(ConfigError, match="mqar: n_tokens: unknown parameter"):
        load_config("smoke", overrides={"task": {"name": "mqar", "n_tokens": 2}})
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        load_config("smoke", overrides={"task": {"name": "nope"}})
    with pytest.raises(ConfigError, match="length 33 does not fit the task"):
        load_config("quick", overrides={"task": {"name": "mqar"}, "eval_lengths": [33]})
    same = load_config("smoke", overrides={"task": {"n_tokens": 3}})
    assert same.task.name == "selective-copy" and same.task.vocab_size == 8  # merged in


def test_cli_task_flags_and_yaml(tmp_path, capsys):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("task:\n  name: induction-heads\n  vocab_size: 9\n")
    config = load_config("smoke", yaml_file)
    assert (config.task.name, config.task.vocab_size) == ("induction-heads", 9)
    code = main(["run", "--preset", "smoke", "--task", "mqar", "--task-param", "colour=3"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "mqar: colour: unknown parameter" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--preset", "smoke", "--task-param", "n_tokens"])
    assert exit_info.value.code == 2 and "expected KEY=VALUE" in capsys.readouterr().err


def test_cli_task_flags_reach_the_config(monkeypatch):
    from ssmbench import cli

    seen = {}
    monkeypatch.setattr(cli, "_plan_run", lambda args: seen.update(cli._overrides(args)) or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        main(
            ["run", "--task", "mqar", "--task-param", "num_kv_pairs=4", "--task-param",
             "power_a=0.5", "--task-param", "random_non_queries=false", "--eval-lengths", "64,128"]
        )  # fmt: skip
    assert seen["task"] == {
        "name": "mqar",
        "num_kv_pairs": 4,
        "power_a": 0.5,
        "random_non_queries": False,
    }
    assert seen["eval_lengths"] == [64, 128]


def test_tasks_command_lists_every_task_with_parameters(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    for name in tasks.names():
        assert f"\n{name} " in f"\n{out}"
    assert "num_kv_pairs" in out and "frac_noise" in out and "8192" in out


def test_autoencoder_decodes_every_position_from_the_last_state():
    torch.manual_seed(0)
    model = AutoEncoder(build("lstm", vocab_size=8, d_model=16, n_layers=1))
    x = torch.randint(0, 8, (2, 10))
    logits = model(x)
    assert logits.shape == (2, 10, 8)
    y = x.clone()
    y[:, 0] = (y[:, 0] + 1) % 8
    assert not torch.allclose(model(y)[:, -1], logits[:, -1]), "the first token reaches the end"
    assert model(x[:, :7]).shape == (2, 7, 8), "any length: fixed sinusoidal positions"
    plain = build("lstm", vocab_size=8)
    assert with_readout(plain, "lm") is plain
    with pytest.raises(ValueError, match="readout"):
        with_readout(plain, "pool")


def test_compression_cells_get_the_autoencoder():
    cell = tiny_config("compression").cells()[0]
    assert isinstance(new_state(cell, CPU).model, AutoEncoder)
    assert not isinstance(new_state(tiny_config("mqar").cells()[0], CPU).model, AutoEncoder)


def test_a_length_out_of_memory_is_recorded_and_the_others_finish(monkeypatch):
    from ssmbench.experiment import train as train_module

    cell = tiny_config("induction-heads", eval_lengths=[32, 64]).cells()[0]
    task = cell.task.build(cell.seq_len)
    model = build("lstm", vocab_size=16, d_model=8, n_layers=1)
    evaluate = train_module.evaluate

    def limited(model, inputs, labels, batch_size):
        assert batch_size * inputs.shape[1] <= cell.train.batch_size * cell.seq_len
        if inputs.shape[1] > 32:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 9 TB")
        return evaluate(model, inputs, labels, batch_size)

    monkeypatch.setattr(train_module, "evaluate", limited)
    test = task.sample(16, torch.Generator().manual_seed(1))
    results = score_at_lengths(model, task, cell, test)
    assert [results[n]["status"] for n in (16, 32, 64)] == ["done", "done", "oom"]
    assert results[64]["accuracy"] is None and 0 <= results[32]["accuracy"] <= 1

    def broken(*args):
        raise RuntimeError("a real bug")

    monkeypatch.setattr(train_module, "evaluate", broken)
    with pytest.raises(RuntimeError, match="a real bug"):
        score_at_lengths(model, task, cell, test)


def test_fixed_training_set_resumes_where_it_stopped():
    cell = tiny_config("memorization").cells()[0]
    state = new_state(cell, CPU)
    for _ in range(3):
        state.data.next()
    saved = state.checkpoint()
    expected = [state.data.next()[0] for _ in range(4)]
    resumed = new_state(cell, CPU)
    resumed.restore(saved)
    assert all(torch.equal(e, resumed.data.next()[0]) for e in expected)


def test_training_length_is_always_evaluated():
    config = tiny_config("induction-heads", eval_lengths=[])
    _, outcome = train(config.cells()[0], CPU)
    assert list(outcome.by_length) == [16]
    assert outcome.accuracy == outcome.by_length[16]["accuracy"]
    assert json.dumps(outcome.by_length)  # storable as it is
