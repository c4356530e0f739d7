"""Report tables, figures and exports on synthetic result rows (2 models x 2 lengths x 2 seeds)."""

from __future__ import annotations

import csv
import io
import json
import statistics

import pytest

from ssmbench.report import export, write_report
from ssmbench.report.markdown import report_markdown
from ssmbench.report.tables import metric_table

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGURES = [
    "accuracy", "train_time", "inference_time", "memory", "utilization", "learning_curves",
    "lr_sensitivity", "difficulty_selective-copy_seq_len",
]  # fmt: skip
CONFIG = {
    "train": {
        "max_steps": 4000,
        "batch_size": 64,
        "lr": 3e-4,
        "patience": 7,
        "eval_every": 250,
        "target_accuracy": 0.98,
    }
}


def make_row(model: str, seq_len: int, seed: int, status: str = "done", n_tokens: int = 16) -> dict:
    """A CPU cell whose metrics are distinct per (model, length, seed); none when not done."""
    done = status == "done"
    k = (1 if model == "s6" else 2) * seq_len / 256 + 0.1 * seed

    def value(x: float) -> float | None:
        return x if done else None

    return {
        "id": f"{model}-{seq_len}-{n_tokens}-{seed}",
        "model": model,
        "display_name": {"s6": "S6", "lstm": "LSTM"}.get(model),  # None: an old row
        "family": {"s6": "selective-ssm", "lstm": "rnn"}.get(model),
        "mixer": model,
        "block": "ssm" if model == "s6" else "none",
        "state_size": 1024 if model == "s6" else 128,
        "task": f"selective-copy-M{n_tokens}-V16",
        "seq_len": seq_len,
        "n_tokens": n_tokens,
        "lr": 3e-4,
        "weight_decay": 0.0,
        "seed": seed,
        "status": status,
        "accuracy": value(0.4 + 0.1 * k),
        "val_accuracy": value(0.45 + 0.1 * k),
        "exact_match": value(0.05 * k),
        "steps": value(1000 + 10 * seed),
        "best_step": value(900),
        "train_s": 60.0,
        "train_ms": value(10 * k),
        "train_ms_iqr": value(0.5),
        "infer_ms": value(k),
        "infer_ms_iqr": value(0.1),
        "peak_mem_mib": value(100 * k),
        "reserved_mem_mib": None,
        "util_pct": value(95 + k),
        "util_kind": "cpu-process",
        "device": "cpu",
        "device_name": "Test CPU 9000",
        "torch_version": "2.13.0",
        "threads": 2,
        "ssmbench_version": "0.1.0",
        "git_commit": "deadbeef",
        "scan_backend": "sequential",
        "conv_backend": "torch" if model == "s6" else None,
        "error": None if done else "Traceback ...\nRuntimeError: out of memory (test)",
        "config": {
            **CONFIG,
            "model": {"name": model},
            "seed": seed,
            "task": {"name": "selective-copy", "n_tokens": n_tokens, "vocab_size": 16},
        },
    }


@pytest.fixture
def rows() -> list[dict]:
    """s6 and lstm at L=256, 512 with seeds 0, 1; lstm at L=512 ran out of memory on both seeds."""
    return [
        make_row(model, seq_len, seed, "oom" if (model, seq_len) == ("lstm", 512) else "done")
        for model in ("lstm", "s6")
        for seq_len in (512, 256)
        for seed in (0, 1)
    ]


@pytest.fixture
def costs(rows: list[dict]) -> list[dict]:
    """One cost measurement per (model, length): seed 0's figures."""
    return [{**row, "alone": True, "batch_size": 64} for row in rows if row["seed"] == 0]


@pytest.fixture
def curves(rows: list[dict]) -> dict[str, list[dict]]:
    return {
        row["id"]: [
            {"step": s, "train_loss": 2.0 / (1 + s), "val_accuracy": s / 400, "elapsed_s": s / 10}
            for s in range(0, 400, 50)
        ]
        for row in rows
    }


META = {"preset": "unit-test", "config": {}, "created_at": "2025-01-02T03:04:05+00:00"}


def parse_table(markdown: str) -> dict[str, dict[str, str]]:
    """{row label: {column header: cell}} of the first Markdown table in the text."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    split = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    header, body = split[0], split[2:]
    return {cells[0]: dict(zip(header[1:], cells[1:], strict=True)) for cells in body}


def test_table_places_mean_and_std_in_model_row_and_length_column(rows: list[dict]) -> None:
    table = parse_table(metric_table(rows, "accuracy"))
    assert list(table) == ["LSTM", "S6"]  # the rows' model order, their display names
    assert list(table["S6"]) == ["L=256", "L=512"]  # lengths sorted
    for model, name in (("s6", "S6"), ("lstm", "LSTM")):
        values = [100 * r["accuracy"] for r in rows if (r["model"], r["seq_len"]) == (model, 256)]
        mean, std = statistics.mean(values), statistics.stdev(values)
        assert table[name]["L=256"] == f"{mean:.1f} ± {std:.1f}"
    times = [r["train_ms"] for r in rows if (r["model"], r["seq_len"]) == ("s6", 512)]
    cell = parse_table(metric_table(rows, "train_ms"))["S6"]["L=512"]
    assert cell == f"{statistics.mean(times):.2f} ± {statistics.stdev(times):.2f}"


def test_status_word_when_no_seed_finished_and_n_when_some_did(rows: list[dict]) -> None:
    assert parse_table(metric_table(rows, "accuracy"))["LSTM"]["L=512"] == "oom"
    rows[0]["status"] = "diverged"  # lstm, L=512, seed 0: now 'diverged' and 'oom'
    assert parse_table(metric_table(rows, "accuracy"))["LSTM"]["L=512"] == "diverged/oom"
    one_seed = [r for r in rows if not (r["model"] == "s6" and r["seq_len"] == 256 and r["seed"])]
    s6 = next(r for r in one_seed if (r["model"], r["seq_len"]) == ("s6", 256))
    cell = parse_table(metric_table(one_seed, "steps"))["S6"]["L=256"]
    assert cell == f"{s6['steps']} (n=1)"


def test_missing_cells_unknown_models_and_token_counts() -> None:
    rows = [make_row("s6", 256, 0), make_row("my-model", 512, 0, n_tokens=32)]
    table = parse_table(metric_table(rows, "infer_ms"))
    assert list(table) == ["S6", "my-model"]  # a row without a display name shows its id
    assert table["S6"] == {
        "selective-copy-M16-V16, L=256": f"{rows[0]['infer_ms']:.2f}",
        "selective-copy-M32-V16, L=512": "—",
    }


def test_headers_carry_units_and_cpu_figures_are_not_called_gpu(rows: list[dict]) -> None:
    headers = {
        metric: metric_table(rows, metric).splitlines()[0]
        for metric in (
            "accuracy",
            "exact_match",
            "train_ms",
            "infer_ms",
            "peak_mem_mib",
            "util_pct",
        )
    }
    assert "%" in headers["accuracy"] and "per-token" in headers["accuracy"]
    assert "%" in headers["exact_match"]
    assert "(ms)" in headers["train_ms"] and "(ms)" in headers["infer_ms"]
    assert "RSS above baseline (MiB)" in headers["peak_mem_mib"]
    assert "CPU process" in headers["util_pct"] and "%" in headers["util_pct"]
    assert not any("GPU" in header for header in headers.values())
    gpu_rows = [{**row, "device": "cuda"} for row in rows]
    assert "GPU" in metric_table(gpu_rows, "peak_mem_mib").splitlines()[0]
    assert "GPU" in metric_table(gpu_rows, "util_pct").splitlines()[0]


def test_report_has_provenance_every_table_figure_and_failures(
    rows: list[dict], curves: dict[str, list[dict]], costs: list[dict]
) -> None:
    report = report_markdown(rows, curves, META, costs)
    for text in (
        "unit-test",
        "cpu: Test CPU 9000",
        "2.13.0",
        "0.1.0 (git deadbeef)",
        "threads 2",
        "sequential",
        "scan backend sequential; causal conv torch; torch.compile off",  # only those called
        "Seeds: 0, 1",
        "max steps 4000",
        "batch 64",
        "lr 0.0003",
        "patience 7",
        "eval every 250",
        "target accuracy 0.98",
        "2025-01-02T03:04:05",
        "Training steps run",
        "Exact match (%)",
        "RuntimeError: out of memory (test)",
        "median",
        "IQR",
        "alone",
        "95% CI",
        "Leaderboard",
    ):
        assert text in report, text
    for name in FIGURES:
        assert f"](img/{name}.png)" in report
    assert "GPU" not in report.split("## How measured")[0]  # CPU figures are named as such


def test_write_report_writes_markdown_and_every_png(
    rows: list[dict], curves: dict[str, list[dict]], costs: list[dict], tmp_path
) -> None:
    path = write_report(rows, curves, META, tmp_path / "out", costs)
    assert path == tmp_path / "out" / "report.md"
    assert path.read_text() == report_markdown(rows, curves, META, costs)
    for name in FIGURES:
        png = (tmp_path / "out" / "img" / f"{name}.png").read_bytes()
        assert png.startswith(PNG_SIGNATURE) and len(png) > 1000
    leftovers = [p.name for p in (tmp_path / "out").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_figures_without_data_are_still_written(tmp_path) -> None:
    rows = [make_row("s6", 256, 0, status="failed")]
    write_report(rows, {}, META, tmp_path)
    for name in FIGURES[:-1]:  # no difficulty axis varies: no figure of one
        assert (tmp_path / "img" / f"{name}.png").read_bytes().startswith(PNG_SIGNATURE)


def test_export_json_round_trips(rows: list[dict]) -> None:
    records = json.loads(export(rows, "json"))
    assert len(records) == len(rows)
    by_id = {record["id"]: record for record in records}
    task_fields = {
        "task_name",
        "task_params",
        *(f"{m}_by_length" for m in ("accuracy", "exact_match", "status")),
    }
    for row in rows:
        record = by_id[row["id"]]
        assert {k: v for k, v in record.items() if k not in task_fields} == row  # every field
        assert record["task_name"] == "selective-copy" and "vocab_size" in record["task_params"]


def test_export_gains_task_parameters_and_accuracy_by_length(rows: list[dict]) -> None:
    row = {
        **rows[0],
        "task": "mqar-KV4-V64-a0.01-rnq1",
        "config": {**rows[0]["config"], "task": {"name": "mqar", "num_kv_pairs": 4}},
        "accuracy_by_length": {"256": 0.5, "1024": None},
        "status_by_length": {"256": "done", "1024": "oom"},
    }
    [record] = json.loads(export([row], "json"))
    assert (record["task_name"], record["task_params"]) == ("mqar", {"num_kv_pairs": 4})
    assert record["accuracy_by_length"] == {"256": 0.5, "1024": None}
    [line] = list(csv.DictReader(io.StringIO(export([row], "csv"))))
    assert json.loads(line["status_by_length"]) == {"256": "done", "1024": "oom"}
    assert line["task"] == "mqar-KV4-V64-a0.01-rnq1"


def test_export_csv_has_one_row_per_cell(rows: list[dict]) -> None:
    records = list(csv.DictReader(io.StringIO(export(rows, "csv"))))
    assert len(records) == len(rows)
    by_id = {record["id"]: record for record in records}
    for row in rows:
        record = by_id[row["id"]]
        assert (record["model"], int(record["seq_len"]), record["status"]) == (
            row["model"],
            row["seq_len"],
            row["status"],
        )
        assert record["accuracy"] == ("" if row["accuracy"] is None else str(row["accuracy"]))
        assert json.loads(record["config"]) == row["config"]


def test_export_md_holds_every_metric_table(rows: list[dict], costs: list[dict]) -> None:
    text = export(rows, "md", costs)
    assert metric_table(rows, "accuracy") in text and metric_table(costs, "util_pct") in text


def test_bad_format_and_metric_raise(rows: list[dict]) -> None:
    with pytest.raises(ValueError, match="format"):
        export(rows, "xlsx")
    with pytest.raises(ValueError, match="metric"):
        metric_table(rows, "speed")


def test_a_crash_while_writing_keeps_the_previous_report(
    rows: list[dict], curves: dict[str, list[dict]], tmp_path, monkeypatch
) -> None:
    path = write_report(rows, curves, META, tmp_path)
    before = path.read_text()

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full (test)")

    monkeypatch.setattr("ssmbench.files.os.replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_report(rows[:2], curves, {"preset": "other"}, tmp_path)
    assert path.read_text() == before
    assert [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")] == []


def test_length_table_names_models_as_their_rows_do() -> None:
    from ssmbench.report.lengths import length_sections

    rows = [make_row(model, 64, 0) for model in ("s6", "lstm")]
    for row, value in zip(rows, (0.9, 0.3), strict=True):
        row["accuracy_by_length"] = {"64": value, "256": value / 2}
        row["status_by_length"] = {"64": "done", "256": "done"}
    table = length_sections(rows)[2].splitlines()
    assert [line.split("|")[1].strip() for line in table[2:]] == ["S6", "LSTM"]
    assert [cell.strip() for cell in table[2].split("|")[2:4]] == ["90.0", "45.0"]
