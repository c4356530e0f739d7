"""Flat exports of result rows: JSON (config nested), CSV (config as a JSON string), Markdown.

`export` gives one row per grid point (training cell), with the cost measurement of its model and
input shape joined in; `export(..., summary=True)` one row per model × task setting × length:
the chosen (lr, wd), the test statistics of that choice and the cost.
"""

from __future__ import annotations

import csv
import io
import json
import math

from ssmbench.report.protocol import COST_FIELDS, SUMMARY_FIELDS, selected_rows, summary_rows
from ssmbench.report.stats import choose
from ssmbench.report.tables import METRICS, markdown_table, metric_table, model_order

FIELDS = (
    "id", "model", "task", "seq_len", "n_tokens", "lr", "weight_decay", "seed", "status",
    "accuracy", "val_accuracy", "exact_match", "steps", "best_step", "train_s", "train_ms",
    "train_ms_iqr", "infer_ms", "infer_ms_iqr", "peak_mem_mib", "reserved_mem_mib", "util_pct",
    "util_kind", "device", "device_name", "torch_version", "threads", "ssmbench_version",
    "git_commit", "scan_backend", "error",
    "task_name", "task_params", "accuracy_by_length", "exact_match_by_length", "status_by_length",
)  # fmt: skip
NESTED = ("task_params", "accuracy_by_length", "exact_match_by_length", "status_by_length")
FORMATS = ("csv", "json", "md")


def _fields(rows: list[dict]) -> list[str]:
    """The known flat fields in their order, then any others (sorted), then the config."""
    extra = sorted({key for row in rows for key in row} - set(FIELDS) - {"config"})
    return [*FIELDS, *extra, "config"]


def _ordered(rows: list[dict]) -> list[dict]:
    """Rows in display order: model (registry order), task, length, lr, wd, seed."""
    rank = {model: i for i, model in enumerate(model_order(rows))}
    return sorted(
        rows,
        key=lambda r: (
            rank[r["model"]], r["task"], r["seq_len"], r["lr"], r["weight_decay"], r["seed"]
        ),
    )  # fmt: skip


def _with_task(row: dict) -> dict:
    """The row plus its task's name and parameters (`task` is the task key), from its config."""
    section = dict((row.get("config") or {}).get("task") or {})
    return {**row, "task_name": section.pop("name", None), "task_params": section}


def _finite(value: object) -> object:
    """NaN and infinities become None: JSON has no spelling for them."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def with_costs(rows: list[dict], costs: list[dict]) -> list[dict]:
    """Each row with the cost fields of its (model, task, length) measurement, where measured."""
    by_key = {(c["model"], c["task"], c["seq_len"]): c for c in costs if c["status"] == "done"}
    joined = []
    for row in rows:
        cost = by_key.get((row["model"], row["task"], row["seq_len"]), {})
        joined.append({**row, **{k: cost[k] for k in COST_FIELDS if k in cost}})
    return joined


def _write(records: list[dict], fields: list[str], fmt: str) -> str:
    records = [{key: _finite(record.get(key)) for key in fields} for record in records]
    if fmt == "json":
        return json.dumps(records, indent=2, allow_nan=False) + "\n"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for record in records:
        nested = {
            key: json.dumps(record[key], sort_keys=True)
            for key in ("config", *NESTED)
            if key in record
        }
        writer.writerow({**record, **nested})
    return buffer.getvalue()


def _summary_md(summary: list[dict]) -> str:
    def cell(value: object) -> str:
        if value is None:
            return "—"
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    body = [[cell(row[key]) for key in SUMMARY_FIELDS] for row in summary]
    return markdown_table(list(SUMMARY_FIELDS), body, ["<"] * len(SUMMARY_FIELDS)) + "\n"


def export(
    rows: list[dict], fmt: str, costs: list[dict] | None = None, summary: bool = False
) -> str:
    """The rows as 'csv', 'json' or 'md' text: every grid point, or the summary per setting."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    costs = costs or []
    if summary:
        found = summary_rows(choose(rows), costs)
        return _summary_md(found) if fmt == "md" else _write(found, list(SUMMARY_FIELDS), fmt)
    if fmt == "md":
        chosen = selected_rows(rows, choose(rows))
        tables = (metric_table(costs if m.cost else chosen, m.key) for m in METRICS.values())
        return "\n\n".join(tables) + "\n"
    joined = [_with_task(row) for row in with_costs(rows, costs)]
    return _write(_ordered(joined), _fields(joined), fmt)
