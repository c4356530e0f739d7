"""The protocol's tables: the chosen (lr, weight decay) of every setting with the test accuracy
of that choice (mean, std, 95% CI, n), the leaderboard of MAD scores, and the summary rows that
`ssmbench export --summary` prints (one per model × task setting × length, costs joined)."""

from __future__ import annotations

from ssmbench.report.stats import Choice, Estimate, Score, setting_of
from ssmbench.report.tables import markdown_table, model_order

COST_FIELDS = (
    "train_ms", "train_ms_iqr", "infer_ms", "infer_ms_iqr", "peak_mem_mib", "reserved_mem_mib",
    "nvml_process_mem_mib", "util_pct", "util_kind", "params", "device", "device_name", "threads",
    "batch_size", "alone", "load_avg_1min", "compiled",
)  # fmt: skip
SUMMARY_FIELDS = (
    "model", "task", "seq_len", "lr", "weight_decay", "n", "mean", "std", "ci95_low", "ci95_high",
    "val_mean", "status", *COST_FIELDS,
)  # fmt: skip


def selected_rows(rows: list[dict], choices: list[Choice]) -> list[dict]:
    """The rows of every setting's chosen (lr, wd); a setting with no choice keeps all its rows
    (so that its status words still show)."""
    chosen = {
        (c.model, c.task, c.seq_len): (c.chosen.lr, c.chosen.weight_decay) if c.chosen else None
        for c in choices
    }
    return [
        row
        for row in rows
        if chosen.get(setting_of(row)) in (None, (row["lr"], row["weight_decay"]))
    ]


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def interval_text(test: Estimate | None) -> str:
    """'85.0 ± 2.1 [80.1, 89.9] (n=3)' in %; 'n=1' draws no interval."""
    if test is None:
        return "—"
    if test.std is None:
        return f"{_pct(test.mean)} (n=1)"
    return (
        f"{_pct(test.mean)} ± {_pct(test.std)} [{_pct(test.ci95_low)}, {_pct(test.ci95_high)}] "
        f"(n={test.n})"
    )


def _order(choices: list[Choice]) -> list[Choice]:
    rank = {m: i for i, m in enumerate(model_order([{"model": c.model} for c in choices]))}
    return sorted(choices, key=lambda c: (c.task, c.seq_len, rank[c.model]))


def choice_table(choices: list[Choice]) -> str:
    """A row per (task setting, length, model): chosen lr and wd, validation mean, test ± CI."""
    test = "test acc (%) ± std [95% CI]"
    header = ["Task", "L", "Model", "lr", "wd", "grid", "val acc (%)", test]
    body = []
    for c in _order(choices):
        point = c.chosen
        body.append(
            [
                c.task,
                str(c.seq_len),
                c.title,
                f"{point.lr:g}" if point else "—",
                f"{point.weight_decay:g}" if point else "—",
                str(len(c.points)),
                _pct(point.val.mean) if point and point.val else "—",
                interval_text(point.test) if point else c.status or "—",
            ]
        )
    return markdown_table(header, body, ["<", ">", "<", ">", ">", ">", ">", ">"])


def leaderboard_table(found: list[Score], names: dict[str, str] | None = None) -> str:
    """Models by MAD score (%), with the per-task means it averages."""
    tasks = sorted({name for s in found for name in s.per_task})
    header = ["Rank", "Model", "Score (%)", *tasks, "settings"]
    body = [
        [
            str(i),
            (names or {}).get(s.model) or s.model,
            _pct(s.score),
            *(_pct(s.per_task.get(t)) for t in tasks),
            str(s.settings),
        ]
        for i, s in enumerate(found, 1)
    ]
    return markdown_table(header, body, [">", "<", ">", *(">" for _ in tasks), ">"])


def summary_rows(choices: list[Choice], costs: list[dict]) -> list[dict]:
    """One flat row per setting: the choice, its test statistics and its cost measurement."""
    by_id = {(c["model"], c["task"], c["seq_len"]): c for c in costs}
    rows = []
    for c in _order(choices):
        point, cost = c.chosen, by_id.get((c.model, c.task, c.seq_len), {})
        test = point.test if point else None
        rows.append(
            {
                "model": c.model,
                "task": c.task,
                "seq_len": c.seq_len,
                "lr": point.lr if point else None,
                "weight_decay": point.weight_decay if point else None,
                "n": test.n if test else 0,
                "mean": test.mean if test else None,
                "std": test.std if test else None,
                "ci95_low": test.ci95_low if test else None,
                "ci95_high": test.ci95_high if test else None,
                "val_mean": point.val.mean if point and point.val else None,
                "status": "done" if point else c.status,
                **{key: cost.get(key) for key in COST_FIELDS},
            }
        )
    return rows
