import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ssmbench.cli import main
from ssmbench.experiment.config import load_config
from ssmbench.experiment.store import FILENAME, Store

PNGS = ["accuracy", "train_time", "inference_time", "memory", "utilization", "learning_curves",
        "lr_sensitivity"]  # fmt: skip


def test_smoke_end_to_end(tmp_path):
    """The console script on the smoke preset: store rows, report.md and all six plots."""
    out = tmp_path / "smoke"
    run = subprocess.run(
        ["ssmbench", "run", "--preset", "smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert f"report: {out / 'report.md'}" in run.stdout
    with Store(out / FILENAME, readonly=True) as store:
        rows, curves, costs = store.rows(), store.curves(), store.costs()
    config = load_config("smoke")
    assert sorted(r["id"] for r in rows) == sorted(c.id for c in config.cells())
    for row in rows:
        assert row["status"] == "done", row["error"]
        assert 0 <= row["accuracy"] <= 1 and row["steps"] == config.train.max_steps
        assert 0 <= row["val_accuracy"] <= 1 and row["lr"] == config.train.lr
        assert row["device"] == "cpu" and row["torch_version"] and row["config"]["seed"] == 0
        assert [p["step"] for p in curves[row["id"]]] == [10, 20, 30, 40]
    assert sorted(c["id"] for c in costs) == sorted({c.cost_id for c in config.cells()})
    for cost in costs:
        assert cost["status"] == "done" and cost["alone"] is True, cost["error"]
        assert cost["train_ms"] > 0 and cost["infer_ms"] > 0 and cost["peak_mem_mib"] >= 0
        assert cost["batch_size"] == config.train.batch_size and cost["threads"] >= 1
    report = (out / "report.md").read_text()
    assert "Mamba S6" in report and "(ms)" in report and "MiB" in report
    for name in PNGS:
        assert (out / "img" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((out / "checkpoints").iterdir()), "finished cells leave no checkpoint"

    exported = json.loads(
        subprocess.run(
            ["ssmbench", "export", str(out), "--format", "json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert {
        "model",
        "task",
        "seq_len",
        "n_tokens",
        "lr",
        "weight_decay",
        "val_accuracy",
        "seed",
        "status",
        "accuracy",
        "exact_match",
        "train_ms",
        "infer_ms",
        "peak_mem_mib",
        "util_pct",
        "device",
        "steps",
    } <= set(exported[0])
    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0 and (out / "report.md").exists()

    again = subprocess.run(
        ["ssmbench", "run", "--preset", "smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0 and "done —" not in again.stderr, "finished cells are skipped"


@pytest.fixture
def existing(tmp_path):
    """An output folder holding the store of another config."""
    out = tmp_path / "existing"
    out.mkdir()
    with Store(out / FILENAME) as store:
        store.set_meta(fingerprint=load_config("quick").fingerprint())
    return out


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def yaml_file(tmp_path: Path, text: str | bytes) -> str:
    path = tmp_path / "config.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


ALIAS_BOMB = "".join(  # 413 bytes that stand for 9^9 values
    [f"a0: &a0 [{','.join('x' * 9)}]\n"]
    + [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9)]
    + ["description: *a8\n"]
)


BAD = {
    "unknown model": (["--models", "mamba-s7"], "unknown model mamba-s7"),
    "unknown preset": (["--preset", "huge"], "unknown preset 'huge'"),
    "zero length": (["--lengths", "0"], "lengths.0"),
    "negative length": (["--lengths", "64,-5"], "lengths.1"),
    "fractional length": (["--lengths", "1.5"], "comma-separated integers"),
    "word length": (["--lengths", "long"], "comma-separated integers"),
    "negative seed": (["--seeds", "-1"], "seeds"),
    "zero lr in sweep": (["--lrs", "0,1e-3"], "lrs.0"),
    "word lr in sweep": (["--lrs", "fast"], "comma-separated numbers"),
    "negative weight decay": (["--weight-decays", "-0.1"], "weight_decays.0"),
    "zero steps": (["--steps", "0"], "train.max_steps"),
    "vocab below 3": ("task:\n  vocab_size: 2\n", "task: selective-copy: vocab_size"),
    "zero lr": ("train:\n  lr: 0\n", "train.lr"),
    "negative lr": ("train:\n  lr: -1.0e-3\n", "train.lr"),
    "zero tokens": ("task:\n  n_tokens: 0\n", "task: selective-copy: n_tokens"),
    "unknown yaml key": ("train:\n  learning_rate: 0.1\n", "train.learning_rate: unknown key"),
    "malformed yaml": ("train: [lr: 0.1\n", "not valid YAML"),
    "yaml not a mapping": ("- 1\n- 2\n", "must hold a mapping"),
    "empty config": ("", "config.yaml is empty"),
    "only comments": ("# nothing yet\n", "config.yaml is empty"),
    "/dev/null config": (["--config", "/dev/null"], "config file /dev/null is empty"),
    "key given twice": (
        "seeds: [0]\ntrain:\n  lr: 0.1\nseeds: [1]\n",
        "key 'seeds' is given twice, at lines 1 and 4",
    ),
    "nested key given twice": ("train:\n  lr: 0.1\n  lr: 0.2\n", "'lr' is given twice"),
    "5,000 levels deep": ("x: " + "[" * 5000 + "]" * 5000 + "\n", "nested more than 50 levels"),
    "not utf-8": (b"seeds: [0]\ndescription: caf\xe9\n", "not UTF-8 text (byte 0xe9 at line 2)"),
    "alias bomb": (ALIAS_BOMB, "expand to more than 100,000 values"),
    "alias of itself": ("a: &a [1, *a]\n", "refers to itself"),
    "missing config file": (["--config", "/nonexistent/ssmbench.yaml"], "cannot read config"),
    "unknown option": (["--learning-rate", "3"], "unrecognized arguments"),
    "cuda without cuda": (["--device", "cuda"], "--device cuda"),
    "unreachable ray": (
        ["--executor", "ray", "--ray-address", "127.0.0.1:1"],
        "cannot reach a Ray cluster",
    ),
    "bad ray address": (["--executor", "ray", "--ray-address", "nowhere"], "HOST:PORT"),
    "missing plugin": (["--plugins", "no_such_module_xyz"], "cannot import plugin"),
    "unknown scan": (["--scan", "fast"], "invalid choice"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    case, existing, tmp_path, capsys, monkeypatch
):
    args, expected = BAD[case]
    if isinstance(args, str | bytes):
        args = ["--config", yaml_file(tmp_path, args)]
    fresh = tmp_path / "fresh"
    monkeypatch.chdir(tmp_path)
    before = snapshot(existing)
    for out in (fresh, existing):
        with pytest.raises(SystemExit) as exit_info:
            sys.exit(main(["run", *args, "--out", str(out)]))
        assert exit_info.value.code == 2
        err = capsys.readouterr()
        assert err.out == ""
        lines = err.err.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], lines
        assert lines[0].startswith("ssmbench: error:")
    assert not fresh.exists(), "nothing written"
    assert snapshot(existing) == before, "existing store untouched"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["existing", *(["config.yaml"] if "config.yaml" in str(args) else [])]
    )


@pytest.mark.parametrize(
    ("out", "expected"),
    [
        ("/proc/ssmbench-out", "not writable"),
        ("afile/sub", "is not a folder"),
        ("afile", "is a file"),
    ],
)
def test_unusable_output_folder(out, expected, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    assert main(["run", "--preset", "smoke", "--out", out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_other_config_folder_is_refused_then_forced(existing, capsys):
    assert main(["run", "--preset", "smoke", "--out", str(existing)]) == 2
    assert "different config" in capsys.readouterr().err
    (existing / "checkpoints").mkdir()
    garbage = existing / "checkpoints" / "lstm_selective-copy-M2-V8_L8_s0.pt"
    garbage.write_bytes(b"garbage")  # --force drops it
    assert (
        main(
            [
                "run",
                "--preset",
                "smoke",
                "--models",
                "lstm",
                "--lengths",
                "8",
                "--out",
                str(existing),
                "--force",
            ]
        )
        == 0
    )
    with Store(existing / FILENAME, readonly=True) as store:
        assert [r["id"] for r in store.rows()] == ["lstm/selective-copy-M2-V8/L8/lr0.003/wd0/s0"]
    assert not list((existing / "checkpoints").iterdir())


def test_report_and_export_need_a_store(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert main(["export", str(tmp_path / "none")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all("no results in" in line for line in lines)


def test_console_script_error_is_one_line_without_traceback(tmp_path):
    run = subprocess.run(
        ["ssmbench", "run", "--models", "foo", "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr


def test_models_lists_every_model_with_family_parameters_and_state(capsys):
    from ssmbench.models import MODELS, build, n_params

    assert main(["models"]) == 0
    header, *lines = capsys.readouterr().out.strip().splitlines()
    assert header.split()[:6] == ["model", "family", "parameters", "per", "layer", "state"]
    listed = {line.split()[0]: line.split()[1:5] for line in lines}
    assert list(listed) == list(MODELS)
    for name, (family, params, layer, state) in listed.items():
        assert family == MODELS[name].family
        model = build(name, vocab_size=16)
        assert int(params.replace(",", "")) == n_params(model)
        per_layer = n_params(model) - n_params(build(name, vocab_size=16, n_layers=1))
        norms = 2 * 64 * len(MODELS[name].make_layers(64, 16))  # a LayerNorm per sublayer
        assert int(layer.replace(",", "")) == per_layer - norms
        assert int(state.replace(",", "")) == MODELS[name].state(64, 16, 1024)
    assert listed["baseconv"][2] == f"{4_416 + 5_312:,}"  # zoology's BaseConv layers k=3, k=-1
