"""Logging sinks: a sweep's TensorBoard and W&B runs, read back with each tool's own reader, hold
what the store holds; a sink that cannot import, open or write warns once and loses no result."""

import errno
import json
import sys
from pathlib import Path

import pytest

from ssmbench.cli import main
from ssmbench.experiment import sinks
from ssmbench.experiment.cell import run_job
from ssmbench.experiment.config import load_config
from ssmbench.experiment.results import Status
from ssmbench.experiment.store import FILENAME, Store
from ssmbench.experiment.train import lr_at

MODELS, LENGTHS = "lstm", "8,12"  # two cells and two cost measurements
NO_TENSORBOARD = "TensorBoard logging needs ssmbench[tensorboard]"


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> Path:
    """One smoke sweep through the CLI, logged to both sinks, W&B offline."""
    out = tmp_path_factory.mktemp("logged") / "sweep"
    argv = ["run", "--preset", "smoke", "--models", MODELS, "--lengths", LENGTHS,
            "--log", "tensorboard", "--log", "wandb", "--out", str(out)]  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WANDB_MODE", "offline")
        assert main(argv) == 0
    return out


def stored(out: Path) -> tuple[list[dict], dict[str, list[dict]], dict[str, dict]]:
    with Store(out / FILENAME, readonly=True) as store:
        return store.rows(), store.curves(), {c["id"]: c for c in store.costs()}


@pytest.fixture
def tensorboard():
    return pytest.importorskip(
        "tensorboard", reason="TensorBoard logging needs ssmbench[tensorboard]"
    )


@pytest.fixture
def wandb():
    return pytest.importorskip("wandb", reason="W&B logging needs ssmbench[wandb]")


@pytest.mark.slow
def test_tensorboard_has_a_run_per_cell_with_the_stored_curve_results_and_costs(
    tensorboard, logged
):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    rows, curves, costs = stored(logged)
    assert sorted(p.name for p in (logged / "tb").iterdir()) == sorted(
        sinks.safe_name(r["id"]) for r in rows
    )
    for row in rows:
        events = EventAccumulator(str(logged / "tb" / sinks.safe_name(row["id"])))
        events.Reload()
        scalars = {tag: [(e.step, e.value) for e in events.Scalars(tag)]
                   for tag in events.Tags()["scalars"]}  # fmt: skip
        curve = curves[row["id"]]
        assert scalars["train/loss"] == [(p["step"], pytest.approx(p["train_loss"])) for p in curve]
        assert scalars["val/accuracy"] == [
            (p["step"], pytest.approx(p["val_accuracy"])) for p in curve
        ]
        hp = load_config("smoke").train
        assert [v for _, v in scalars["train/lr"]] == [
            pytest.approx(lr_at(row["lr"], hp, p["step"] - 1)) for p in curve
        ]
        assert scalars["test/accuracy"][-1][1] == pytest.approx(row["accuracy"])
        assert scalars["val/best_accuracy"][-1][1] == pytest.approx(row["val_accuracy"])
        cost = costs[row["id"].rsplit("/", 3)[0]]
        assert scalars["cost/train_ms"][-1][1] == pytest.approx(cost["train_ms"])
        assert scalars["cost/peak_mem_mib"][-1][1] == pytest.approx(cost["peak_mem_mib"])
        content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
        assert hparams["model"].string_value == row["model"]
        assert hparams["seq_len"].number_value == row["seq_len"]
        assert hparams["train.lr"].number_value == pytest.approx(row["lr"])


def wandb_runs(out: Path) -> dict[str, dict]:
    """Every offline W&B run under OUT/wandb, read from its .wandb file (LevelDB-style log of
    protobuf records, 32 KiB blocks of chunks with 7-byte headers): its run record's name,
    group, job type and config, history rows and summary."""
    from wandb.proto import wandb_internal_pb2 as pb

    runs = {}
    for path in sorted(out.glob("wandb/offline-run-*/run-*.wandb")):
        data, records = path.read_bytes(), []
        assert data[:4] == b":W&B"
        pos, part = 7, b""
        while pos + 7 <= len(data):
            if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
                pos += 32768 - pos % 32768
                continue
            length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
            part, pos = part + data[pos + 7 : pos + 7 + length], pos + 7 + length
            if kind in (1, 4):  # a whole record, or the last chunk of one
                records.append(pb.Record.FromString(part))
                part = b""
        runs[path.parent.name] = _wandb_run(records)
    return runs


def _wandb_run(records: list) -> dict:
    def items(entries) -> dict:
        return {e.key or "/".join(e.nested_key): json.loads(e.value_json) for e in entries}

    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    summary: dict = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            summary.update(items(r.summary.update))
    history = [items(r.history.item) for r in records if r.WhichOneof("record_type") == "history"]
    return {"id": run.run_id, "name": run.display_name, "group": run.run_group,
            "job_type": run.job_type, "config": items(run.config.update), "history": history,
            "summary": summary}  # fmt: skip


@pytest.mark.slow
def test_wandb_offline_leaves_a_run_per_cell_with_the_stored_curve_and_results(wandb, logged):
    rows, curves, costs = stored(logged)
    runs = list(wandb_runs(logged).values())
    trained = {r["name"]: r for r in runs if r["job_type"] == "train"}
    measured = {r["name"]: r for r in runs if r["job_type"] == "cost"}
    assert sorted(trained) == sorted(r["id"] for r in rows)
    assert sorted(measured) == sorted(costs)
    assert len({r["group"] for r in runs}) == 1 and runs[0]["group"].startswith("sweep-")
    for row in rows:
        run = trained[row["id"]]
        assert run["config"]["train"]["lr"] == row["lr"] and run["config"]["model"] == row["model"]
        points = [(h["_step"], h["train/loss"], h["val/accuracy"]) for h in run["history"]]
        assert points == [
            (p["step"], pytest.approx(p["train_loss"]), pytest.approx(p["val_accuracy"]))
            for p in curves[row["id"]]
        ]
        assert run["summary"]["test/accuracy"] == pytest.approx(row["accuracy"])
        assert run["summary"]["status"] == "done"
    for cost_id, run in measured.items():
        assert run["summary"]["cost/train_ms"] == pytest.approx(costs[cost_id]["train_ms"])
        assert run["summary"]["cost/infer_ms"] == pytest.approx(costs[cost_id]["infer_ms"])


def test_usable_drops_a_sink_that_does_not_import_with_one_warning(monkeypatch):
    monkeypatch.setattr(sinks.TensorBoardSink, "module", "json")  # always imports
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb now raises ImportError
    config = load_config("smoke", overrides={"log": ["tensorboard", "wandb"]})
    kept, warnings = sinks.usable(config)
    assert kept.log == ["tensorboard"]
    assert len(warnings) == 1 and "--log wandb is off" in warnings[0]
    assert 'pip install "ssmbench[wandb]"' in warnings[0]
    assert kept.fingerprint() == config.fingerprint()  # a logger is no part of the results


def _fail_to_import(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)


def _fail_to_open(monkeypatch, tmp_path) -> None:
    (tmp_path / "tb").write_text("a file where the run folders go")


def _fail_to_write(monkeypatch, tmp_path) -> None:
    def full(self, scalars, step):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sinks.TensorBoardSink, "point", full)


@pytest.mark.parametrize("fault", [_fail_to_import, _fail_to_open, _fail_to_write])
def test_a_failing_sink_warns_once_and_the_result_is_kept(fault, monkeypatch, tmp_path):
    if fault is not _fail_to_import:
        pytest.importorskip("tensorboard", reason=NO_TENSORBOARD)
    cell = load_config("smoke", overrides={"models": ["lstm"], "lengths": [8]}).cells()[0]
    plain = run_job("train", cell, tmp_path / "plain")
    fault(monkeypatch, tmp_path)
    points: list[dict] = []
    log = sinks.LogSpec(sinks=("tensorboard",), sweep="s", runs={}, wandb_mode=None)
    result = run_job("train", cell, tmp_path, points.append, log)
    warnings = [p["warning"] for p in points if "warning" in p]
    assert len(warnings) == 1 and warnings[0].startswith("tensorboard logging off for this job")
    assert [p["step"] for p in points if "step" in p] == [10, 20, 30, 40]  # progress goes on
    assert result.status == Status.DONE
    assert result.metrics["accuracy"] == plain.metrics["accuracy"]
    assert result.curve == [{**p, "elapsed_s": q["elapsed_s"]}
                            for p, q in zip(plain.curve, result.curve, strict=True)]  # fmt: skip


def test_safe_name_is_one_file_name_and_long_ids_stay_distinct():
    assert sinks.safe_name("mamba-s6@d128/mqar-KV8/L64/lr0.001/wd0/s1") == (
        "mamba-s6@d128_mqar-KV8_L64_lr0.001_wd0_s1"
    )
    long_a, long_b = "m/" + "x" * 300 + "a", "m/" + "x" * 300 + "b"
    names = {sinks.safe_name(long_a), sinks.safe_name(long_b)}
    assert len(names) == 2 and all(len(n) <= 200 and "/" not in n for n in names)


def test_a_resumed_cell_replaces_the_points_its_interrupted_attempt_logged(tensorboard, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cell = load_config("smoke", overrides={"models": ["lstm"], "lengths": [8]}).cells()[0]
    log = sinks.LogSpec(sinks=("tensorboard",), sweep="s", runs={}, wandb_mode=None)

    def stop_at_40(point: dict) -> None:  # after logging 30, before the step-40 checkpoint
        if point.get("step") == 40:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_job("train", cell, tmp_path, stop_at_40, log)
    result = run_job("train", cell, tmp_path, None, log)  # resumes from the step-20 checkpoint
    events = EventAccumulator(str(tmp_path / "tb" / sinks.safe_name(cell.id)))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [
        (p["step"], pytest.approx(p["train_loss"])) for p in result.curve
    ]  # steps 10 to 40, once each: step 30 of the first attempt is purged
