"""Markdown tables in the study's layout (a row per model, a column per task setting and
length), the protocol's tables (chosen lr, mean ± 95% CI, leaderboard) and the whole report.

A study-layout cell summarizes the rows of one (model, task, L) that finished (status 'done'):
for accuracy, the seeds at the chosen (lr, weight decay); for costs, the one measurement. It shows
their value x_1, or with n >= 2 the mean and the sample standard deviation
    s = sqrt(sum_i (x_i - mean)^2 / (n - 1)).
A cell where nothing finished shows its status word ('oom', 'diverged', 'failed', ...).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

from ssmbench.experiment.results import FAILURES, Status
from ssmbench.models.kernels import KERNEL_LABELS

FAILED = tuple(sorted(s.value for s in FAILURES))
CURVES_IMAGE = "learning_curves.png"

Column = tuple[str, int]  # (task setting's key, seq_len)


@dataclass(frozen=True)
class Metric:
    key: str  # field of a result row
    title: str  # section heading
    label: str  # quantity and unit; on a GPU, or on any device when cpu_label is None
    cpu_label: str | None = None  # the same measured on a CPU, where it means something else
    scale: float = 1.0  # display value = scale * row value (100 for a fraction shown in %)
    decimals: int = 2
    image: str | None = None  # its bar chart under img/
    log_ok: bool = False  # may span decades (times, memory): plotted on a log axis when it does
    cost: bool = False  # measured once per (model, input shape), not per training cell

    def label_for(self, devices: set[str]) -> str:
        """The label for rows measured on `devices`; both labels when CPU and GPU rows mix."""
        if self.cpu_label is None or "cpu" not in devices:
            return self.label
        if devices == {"cpu"}:
            return self.cpu_label
        return f"{self.label} on cuda; {self.cpu_label} on cpu"


METRICS = {
    metric.key: metric
    for metric in (
        Metric(
            "accuracy",
            "Accuracy",
            "Accuracy (%, per-token test accuracy)",
            scale=100,
            decimals=1,
            image="accuracy.png",
        ),
        Metric("exact_match", "Exact match", "Exact match (%)", scale=100, decimals=1),
        Metric("steps", "Training steps run", "Training steps run", decimals=0),
        Metric(
            "train_ms",
            "Training time",
            "Training step time (ms)",
            image="train_time.png",
            log_ok=True,
            cost=True,
        ),
        Metric(
            "infer_ms",
            "Inference time",
            "Inference step time (ms)",
            image="inference_time.png",
            log_ok=True,
            cost=True,
        ),
        Metric(
            "peak_mem_mib",
            "Memory",
            "Peak GPU memory (MiB)",
            cpu_label="Peak RSS above baseline (MiB)",
            decimals=1,
            image="memory.png",
            log_ok=True,
            cost=True,
        ),
        Metric(
            "util_pct",
            "Utilization",
            "GPU utilization (%)",
            cpu_label="CPU process utilization (%, 100 = every torch thread busy)",
            decimals=1,
            image="utilization.png",
            cost=True,
        ),
    )
}


@dataclass(frozen=True)
class Cell:
    """The finished seeds of one (model, column): their display values, or why there are none."""

    values: list[float]
    status: str  # the status words of its seeds when none finished, else ''

    @property
    def mean(self) -> float:
        return statistics.mean(self.values)

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) >= 2 else None


def get_metric(key: str) -> Metric:
    if key not in METRICS:
        raise ValueError(f"unknown metric {key!r}; choose one of: {', '.join(METRICS)}")
    return METRICS[key]


def display_name(model: str, rows: Iterable[dict] = ()) -> str:
    """The display name its rows record (the registry's, saved with each result), else the id;
    a model key's swept width follows the name ('Mamba (S6) @d128' for mamba-s6@d128)."""
    names = (r.get("display_name") for r in rows if r["model"] == model)
    name = next((name for name in names if name), None)
    if name is None:
        return model
    return f"{name} @{model.split('@', 1)[1]}" if "@" in model else name


def model_order(rows: list[dict]) -> list[str]:
    """The models present, in the order the rows first name them (the sweep's model order)."""
    return list(dict.fromkeys(row["model"] for row in rows))


def column_of(row: dict) -> Column:
    return row["task"], row["seq_len"]


def columns(rows: list[dict]) -> list[Column]:
    return sorted({column_of(row) for row in rows})


def column_label(column: Column, all_columns: list[Column]) -> str:
    """'L=256', or 'selective-copy-M16-V16, L=256' when several task settings appear."""
    task, seq_len = column
    if len({t for t, _ in all_columns}) > 1:
        return f"{task}, L={seq_len}"
    return f"L={seq_len}"


def devices(rows: list[dict]) -> set[str]:
    return {row["device"] for row in rows if row.get("device")}


def device_label(rows: list[dict]) -> str:
    """E.g. 'cpu: AMD EPYC 7B13'; several joined by '; '."""
    found = {(row["device"], row.get("device_name")) for row in rows if row.get("device")}
    return "; ".join(f"{d}: {name}" if name else d for d, name in sorted(found)) or "unknown device"


def summarize(rows: list[dict], metric: Metric) -> dict[tuple[str, Column], Cell]:
    groups: dict[tuple[str, Column], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["model"], column_of(row)), []).append(row)
    cells = {}
    for key, group in groups.items():
        done = [row for row in group if row["status"] == Status.DONE]
        values = [row[metric.key] for row in done if row.get(metric.key) is not None]
        values = [metric.scale * v for v in values if math.isfinite(v)]
        status = "" if done else "/".join(sorted({row["status"] for row in group}))
        cells[key] = Cell(values, status)
    return cells


def markdown_table(header: list[str], body: list[list[str]], align: list[str]) -> str:
    """Columns padded to equal width; align is '<' or '>' per column."""
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = (f"{c:{a}{w}}" for c, a, w in zip(cells, align, widths, strict=True))
        return "| " + " | ".join(padded) + " |"

    dashes = [
        "-" * (w + 1) + ":" if a == ">" else "-" * (w + 2)
        for a, w in zip(align, widths, strict=True)
    ]
    rule = "|" + "|".join(dashes) + "|"
    return "\n".join([line(header), rule, *(line(cells) for cells in body)])


def metric_table(rows: list[dict], metric: str) -> str:
    """A Markdown table of one metric (a row per model, a column per length) and its footnote."""
    spec = get_metric(metric)
    cells = summarize(rows, spec)
    cols = columns(rows)
    seed_counts = Counter(len(cell.values) for cell in cells.values() if cell.values)
    n_usual = seed_counts.most_common(1)[0][0] if seed_counts else 0

    def text(cell: Cell | None) -> str:
        if cell is None:
            return "—"
        if not cell.values:
            return cell.status or "—"
        d = spec.decimals
        shown = (
            f"{cell.mean:.{d}f}" if cell.std is None else f"{cell.mean:.{d}f} ± {cell.std:.{d}f}"
        )
        return shown if len(cell.values) == n_usual else f"{shown} (n={len(cell.values)})"

    header = [spec.label_for(devices(rows)), *(column_label(c, cols) for c in cols)]
    body = [
        [display_name(m, rows), *(text(cells.get((m, c))) for c in cols)] for m in model_order(rows)
    ]
    table = markdown_table(header, body, ["<", *(">" for _ in cols)])
    footnote = (
        f"n={n_usual} finished seeds per cell (mean ± sample std when n ≥ 2); (n=k) marks a "
        "cell where k seeds finished, a status word one where none did, "
        "— one not run or not measured."
    )
    return f"{table}\n\n{footnote}"


BUDGET = (  # (label, key of the cell config's `train` section)
    ("max steps", "max_steps"),
    ("batch", "batch_size"),
    ("optimizer", "optimizer"),
    ("lr", "lr"),
    ("weight decay", "weight_decay"),
    ("warm-up steps", "warmup_steps"),
    ("grad clip", "grad_clip"),
    ("patience", "patience"),
    ("eval every", "eval_every"),
    ("target accuracy", "target_accuracy"),
)


def _distinct(values: object) -> str:
    found = sorted({"none" if v is None else str(v) for v in values})
    return ", ".join(found) or "not recorded"


def provenance(rows: list[dict], meta: dict) -> list[str]:
    created = meta.get("created_at")
    if isinstance(created, (int, float)):
        created = datetime.fromtimestamp(created, tz=timezone.utc).isoformat(timespec="seconds")
    seeds = sorted({row["seed"] for row in rows})
    statuses = Counter(row["status"] for row in rows)
    counts = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items())) or "none"
    budget = "; ".join(
        f"{name} {_distinct((row.get('config') or {}).get('train', {}).get(key) for row in rows)}"
        for name, key in BUDGET
    )
    builds = _distinct(
        f"{row['ssmbench_version']} (git {row.get('git_commit') or 'unknown'})"
        for row in rows
        if row.get("ssmbench_version")
    )
    train_minutes = sum(row.get("train_s") or 0.0 for row in rows) / 60

    kernels = "; ".join(  # the families some model of these rows calls
        f"{label} {_distinct(row[field] for row in rows if row.get(field))}"
        for field, label in KERNEL_LABELS.items()
        if any(row.get(field) for row in rows)
    )
    return [
        f"- Preset: {meta.get('preset', 'not recorded')}",
        f"- Device: {device_label(rows)}",
        f"- torch {_distinct(r.get('torch_version') for r in rows)}; ssmbench {builds}; "
        f"threads {_distinct(r.get('threads') for r in rows)}; "
        f"{kernels or 'no kernel family recorded'}; "
        f"torch.compile {_distinct('on' if r.get('compiled') else 'off' for r in rows)}",
        f"- Seeds: {', '.join(map(str, seeds)) or 'none'}",
        f"- Step budget: {budget}",
        f"- Cells: {len(rows)} ({counts}); training wall time {train_minutes:.1f} min in all",
        f"- Created: {created or 'not recorded'}",
    ]


def _error_line(error: str | None) -> str:
    """The last line of an error (a traceback ends with the exception), fit for a table cell."""
    lines = [line.strip() for line in (error or "").splitlines() if line.strip()]
    if not lines:
        return "—"
    last = lines[-1].replace("|", "\\|")
    return last if len(last) <= 160 else last[:159] + "…"


def failure_table(rows: list[dict]) -> str:
    """Failed training cells and cost measurements (those have no lr, wd or seed)."""
    failed = [row for row in rows if row["status"] in FAILED]
    order = {m: i for i, m in enumerate(model_order(rows))}
    failed.sort(key=lambda r: (order[r["model"]], r["task"], r["seq_len"], r.get("lr") or 0))

    def shown(row: dict, key: str) -> str:
        return "cost" if row.get(key) is None else f"{row[key]:g}"

    body = [
        [
            display_name(r["model"], rows),
            r["task"],
            str(r["seq_len"]),
            shown(r, "lr"),
            shown(r, "weight_decay"),
            shown(r, "seed"),
            r["status"],
            _error_line(r.get("error")),
        ]
        for r in failed
    ]
    header = ["Model", "Task", "L", "lr", "wd", "Seed", "Status", "Error (last line)"]
    return markdown_table(header, body, ["<", "<", ">", ">", ">", ">", "<", "<"])


PROTOCOL = (
    "Every model is trained at every learning rate × weight decay of the grid, from every seed. "
    "For each model, task setting and length, the (lr, wd) with the best mean validation "
    "accuracy over the finished seeds (each seed's best validation accuracy during training) is "
    "chosen; the test set is never used to choose. The table gives the test accuracy of that "
    "choice: its mean over seeds, the sample standard deviation, and a 95% confidence interval "
    "for the mean, mean ± t(0.975, n−1)·s/√n (Student t), which says how far the mean over these "
    "seeds may be from the mean over all seeds; with n=1 there is no interval. Every grid point "
    "is in the store and in `ssmbench export`."
)

HOW_MEASURED = (
    "Each cell trains one model on one task setting (sequence length L) from one seed until the "
    "step budget, the target accuracy or early stopping on validation accuracy ends it. "
    "Accuracy is the per-token accuracy on the held-out test set of the best-validation weights; "
    "exact match is the share of test sequences with every token right (scored positions "
    "only: a task marks the others -100; the held-out sets share no example with training). "
    "Accuracy at other lengths scores the same weights on a fixed test set of the task at each "
    "evaluation length. Costs depend on the "
    "model and input shape only, so each (model, task setting, L) is measured once, after all "
    "training, one measurement at a time with no training process of the sweep alive (other "
    "programs on the machine are not controlled: the 1-minute load average at the start of each "
    "measurement is in the exports). A step time is the "
    "median of at least 20 timed steps after at least 3 warm-up steps, on one fixed batch "
    "(training step: forward, backward, gradient clipping and the update of the cell's own "
    "optimizer, weight decay and warm-up schedule; inference step: forward under "
    "torch.inference_mode); the interquartile range (IQR) of "
    "the timed steps is in the exports (train_ms_iqr, infer_ms_iqr). On cuda, memory is the "
    "peak GPU memory allocated by PyTorch tensors during the training steps, model, gradients "
    "and optimizer state included (torch.cuda.max_memory_allocated; what the caching allocator "
    "reserved is in the exports as reserved_mem_mib, and the process's device memory as NVML "
    "reports it, CUDA context included, as nvml_process_mem_mib), and utilization is the GPU "
    "busy percentage reported by NVML while the steps run. On cpu, memory is the peak resident "
    "set size (RSS) of the process during the training steps above its level just before them, "
    "and utilization is the process's CPU time over wall time times torch's thread count "
    "(100% = every torch thread busy); neither is a GPU figure."
)


def conditions(costs: list[dict]) -> str:
    """Under what conditions the cost figures were taken."""
    if not costs:
        return "No cost was measured."
    alone = _distinct("alone" if c.get("alone") else "alongside training" for c in costs)
    return (
        f"Measured on {device_label(costs)}; threads {_distinct(c.get('threads') for c in costs)}; "
        f"batch {_distinct(c.get('batch_size') for c in costs)}; {alone} (one measurement at a "
        f"time, after training); 1-minute load average at start "
        f"{_distinct(c.get('load_avg_1min') for c in costs)}."
    )
