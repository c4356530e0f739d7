"""Flat exports of result rows: JSON (config nested), CSV (config as a JSON string), Markdown."""

from __future__ import annotations

import csv
import io
import json
import math

from ssmbench.report.tables import METRICS, metric_table, model_order, task_key_of

FIELDS = (
    "id", "model", "seq_len", "n_tokens", "seed", "status", "accuracy", "exact_match", "steps",
    "best_step", "train_s", "train_ms", "train_ms_iqr", "infer_ms", "infer_ms_iqr", "peak_mem_mib",
    "reserved_mem_mib", "util_pct", "util_kind", "device", "device_name", "torch_version",
    "threads", "ssmbench_version", "git_commit", "scan_backend", "error",
    "task", "task_key", "task_params", "accuracy_by_length", "exact_match_by_length",
    "status_by_length",
)  # fmt: skip
NESTED = ("task_params", "accuracy_by_length", "exact_match_by_length", "status_by_length")
FORMATS = ("csv", "json", "md")


def _fields(rows: list[dict]) -> list[str]:
    """The known flat fields in their order, then any others (sorted), then the config."""
    extra = sorted({key for row in rows for key in row} - set(FIELDS) - {"config"})
    return [*FIELDS, *extra, "config"]


def _with_task(row: dict) -> dict:
    """The row plus its task's name, key and parameters (from the config saved with it)."""
    section = dict(row.get("config", {}).get("task", {}))
    name = section.pop("name", "selective-copy")
    return {**row, "task": name, "task_key": task_key_of(row), "task_params": section}


def _ordered(rows: list[dict]) -> list[dict]:
    """Rows in display order: model (registry order), task, length, seed."""
    rank = {model: i for i, model in enumerate(model_order(rows))}
    return sorted(rows, key=lambda r: (rank[r["model"]], r["task_key"], r["seq_len"], r["seed"]))


def _finite(value: object) -> object:
    """NaN and infinities become None: JSON has no spelling for them."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def export(rows: list[dict], fmt: str) -> str:
    """The rows as 'csv', 'json' or 'md' (the metric tables) text."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if fmt == "md":
        return "\n\n".join(metric_table(rows, key) for key in METRICS) + "\n"
    rows = [_with_task(row) for row in rows]
    fields = _fields(rows)
    records = [{key: _finite(row.get(key)) for key in fields} for row in _ordered(rows)]
    if fmt == "json":
        return json.dumps(records, indent=2, allow_nan=False) + "\n"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for record in records:
        nested = {key: json.dumps(record[key], sort_keys=True) for key in ("config", *NESTED)}
        writer.writerow({**record, **nested})
    return buffer.getvalue()
