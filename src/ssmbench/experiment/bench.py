"""The `bench` table: every model's cost at every length, measured side by side in one process,
and the ratios the study's claims rest on, next to the study's own figures and our targets."""

from __future__ import annotations

import argparse
import gc
import json
import sys
from collections.abc import Callable

import torch

from ssmbench.experiment.measure import (
    MEASURES,
    check_counts,
    environment,
    measure,
    resolve_device,
)
from ssmbench.layers.s6 import S6
from ssmbench.models import build, n_params, names
from ssmbench.ops.scan import resolve_backend
from ssmbench.tasks import Task
from ssmbench.tasks import build as build_task

# The study's published Results tables (/work/shared/study/results.md: FilippoOlivo/SSM,
# results_description.md; one NVIDIA RTX A4000, batch 64, 16 tokens), by sequence length.
# Training step (forward + backward + optimizer step), stated there as seconds, likely ms.
STUDY_TRAIN_MS = {
    "s4": {256: 169.14, 512: 288.95, 784: 483.29},
    "s4d-real": {256: 4.43, 512: 5.72, 784: 6.49},
    "s4d-inv": {256: 4.61, 512: 5.94, 784: 6.75},
    "s4-lowrank": {256: 5.31, 512: 6.58, 784: 7.38},
    "s6": {256: 16.82, 512: 30.74, 784: 38.54},
    "mamba-s4d-real": {256: 6.37, 512: 8.99, 784: 10.98},
    "mamba-s4d-inv": {256: 6.96, 512: 9.06, 784: 11.31},
    "mamba-s4-lowrank": {256: 7.35, 512: 9.92, 784: 12.14},
    "mamba-s6": {256: 32.6, 512: 60.58, 784: 76.23},
    "gated-mlp": {256: 1.56, 512: 2.03, 784: 2.28},
    "transformer": {256: 5.06, 512: 7.59, 784: 10.68},
    "lstm": {256: 1.24, 512: 1.51, 784: 1.79},
}
# GPU memory used during training, MB.
STUDY_MEMORY_MB = {
    "s4": {256: 715.7, 512: 901.7, 784: 1077.7},
    "s4d-real": {256: 677.7, 512: 827.7, 784: 983.7},
    "s4d-inv": {256: 679.7, 512: 847.7, 784: 1021.7},
    "s4-lowrank": {256: 679.7, 512: 849.7, 784: 1027.7},
    "s6": {256: 2675.7, 512: 4763.7, 784: 5591.7},
    "mamba-s4d-real": {256: 895.7, 512: 1273.7, 784: 1545.7},
    "mamba-s4d-inv": {256: 899.7, 512: 1293.7, 784: 1559.7},
    "mamba-s4-lowrank": {256: 903.7, 512: 1265.7, 784: 1585.7},
    "mamba-s6": {256: 4911.7, 512: 9107.7, 784: 10975.7},
    "gated-mlp": {256: 543.7, 512: 565.7, 784: 593.7},
    "transformer": {256: 655.7, 512: 759.7, 784: 849.7},
    "lstm": {256: 585.7, 512: 673.7, 784: 739.7},
}
STUDY = {"train_ms": STUDY_TRAIN_MS, "peak_mem_mib": STUDY_MEMORY_MB}

# (numerator, denominator, metric, our target: ratio <= target, or None)
RATIOS = [
    ("mamba-s6", "mamba-s4d-real", "train_ms", 3.0),
    ("mamba-s6", "mamba-s4d-real", "peak_mem_mib", 2.0),
    ("s6", "s4d-real", "train_ms", 3.0),
    ("s6", "s4d-real", "peak_mem_mib", None),
    ("s4", "s4-lowrank", "train_ms", 2.0),
]
DISPLAY = {
    "mamba-s6": "Mamba-S6",
    "mamba-s4d-real": "Mamba-S4D-Real",
    "s6": "S6",
    "s4d-real": "S4D-Real",
    "s4": "S4",
    "s4-lowrank": "S4-LowRank",
}
METRIC_NAMES = {"train_ms": "train time", "peak_mem_mib": "peak memory"}
GROWTH_TARGET = {(256, 784): 3.5}  # train time at the long length / at the short, <= target


def _checked_tasks(
    models: list[str],
    lengths: list[int],
    n_tokens: int,
    vocab_size: int,
    batch_size: int,
    warmup: int,
    repeats: int,
) -> list[Task]:
    """The task at each length, once every argument is known good (ValueError otherwise)."""
    if not models or not lengths:
        raise ValueError("bench needs at least one model and one length")
    unknown = [name for name in models if name not in names()]
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(names())}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    check_counts(warmup, repeats)
    return [
        build_task("selective-copy", seq_len=length, n_tokens=n_tokens, vocab_size=vocab_size)
        for length in lengths
    ]


def bench(
    models: list[str],
    lengths: list[int],
    n_tokens: int = 16,
    vocab_size: int = 16,
    batch_size: int = 64,
    d_model: int = 64,
    n_layers: int = 2,
    d_state: int = 16,
    device: str = "auto",
    seed: int = 0,
    warmup: int = 3,
    repeats: int = 20,
    on_row: Callable[[dict], None] | None = None,
) -> list[dict]:
    """One row per (model, length), lengths outermost so that the models compared at one length
    are measured one after another. A model that fails (e.g. out of memory) gives a row with
    status 'oom' or 'failed' and the error text; the others have status 'done'."""
    tasks = _checked_tasks(models, lengths, n_tokens, vocab_size, batch_size, warmup, repeats)
    torch_device = resolve_device(device)
    env = environment(torch_device)
    rows = []
    for task in tasks:
        inputs, labels = task.sample(batch_size, torch.Generator().manual_seed(seed), train=True)
        for name in models:
            row = {
                "model": name,
                "seq_len": task.seq_len,
                "n_tokens": n_tokens,
                "vocab_size": vocab_size,
                "batch_size": batch_size,
                "d_model": d_model,
                "n_layers": n_layers,
                "d_state": d_state,
                "warmup": warmup,
                "repeats": repeats,
                "params": None,
                **dict.fromkeys(MEASURES),
                "scan_backend": None,
                "status": "done",
                "error": None,
                **env,
            }
            try:
                torch.manual_seed(seed)
                model = build(name, vocab_size, d_model, n_layers, d_state)
                row["params"] = n_params(model)
                if any(isinstance(module, S6) for module in model.modules()):
                    row["scan_backend"] = resolve_backend(torch_device)
                row.update(measure(model, inputs, labels, torch_device, warmup, repeats))
            except torch.OutOfMemoryError as error:
                row.update(status="oom", error=f"{type(error).__name__}: {error}")
            except Exception as error:  # one model's failure must not stop the others
                row.update(status="failed", error=f"{type(error).__name__}: {error}")
            model = None  # free this model before the next is built
            gc.collect()
            if torch_device.type == "cuda":
                torch.cuda.empty_cache()
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return rows


def _done(rows: list[dict]) -> dict[tuple[str, int], dict]:
    """Successful rows by (model, seq_len); two for one key is an error."""
    found = {}
    for row in rows:
        if row["status"] != "done":
            continue
        key = (row["model"], row["seq_len"])
        if key in found:
            raise ValueError(
                f"rows hold two results for {key[0]} at seq_len {key[1]}; pass one bench's rows"
            )
        found[key] = row
    return found


def _at_most(value: float | None, target: float | None) -> bool | None:
    return None if value is None or target is None else value <= target


def study_ratios(rows: list[dict]) -> list[dict]:
    """At each length where both models were measured: numerator / denominator of a metric, the
    study's published ratio at that length (None where it has none) and our target."""
    done = _done(rows)
    ratios = []
    for length in sorted({length for _, length in done}):
        for top, bottom, metric, target in RATIOS:
            if (top, length) not in done or (bottom, length) not in done:
                continue
            ours_top, ours_bottom = done[top, length][metric], done[bottom, length][metric]
            ratio = None if ours_top is None or not ours_bottom else ours_top / ours_bottom
            study_top, study_bottom = STUDY[metric][top], STUDY[metric][bottom]
            study = study_top[length] / study_bottom[length] if length in study_top else None
            ratios.append(
                {
                    "seq_len": length,
                    "numerator": top,
                    "denominator": bottom,
                    "metric": metric,
                    "ratio": ratio,
                    "study": study,
                    "target": target,
                    "meets_target": _at_most(ratio, target),
                }
            )
    return ratios


def growth(rows: list[dict]) -> list[dict]:
    """Each model's train_ms at its longest measured length / at its shortest."""
    done = _done(rows)
    found = []
    for name in dict.fromkeys(model for model, _ in done):
        lengths = sorted(length for model, length in done if model == name)
        short, long = lengths[0], lengths[-1]
        if short == long:
            continue
        ratio = done[name, long]["train_ms"] / done[name, short]["train_ms"]
        study = STUDY_TRAIN_MS.get(name, {})
        target = GROWTH_TARGET.get((short, long))
        found.append(
            {
                "model": name,
                "short_len": short,
                "long_len": long,
                "train_ms_short": done[name, short]["train_ms"],
                "train_ms_long": done[name, long]["train_ms"],
                "growth": ratio,
                "study": study[long] / study[short] if short in study and long in study else None,
                "target": target,
                "meets_target": _at_most(ratio, target),
            }
        )
    return found


def _cell(value: object, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return " ".join(str(value).split()).replace("|", "\\|")  # one line, no stray column


def _with_error(row: dict) -> dict:
    """The row with its error's start appended to its status."""
    return (
        row if row["error"] is None else {**row, "status": f"{row['status']}: {row['error'][:80]}"}
    )


def _limit(target: float | None) -> str | None:
    return None if target is None else f"<= {target:g}"


def _table(header: list[str], lines: list[list[object]]) -> str:
    cells = [[_cell(value) for value in line] for line in lines]
    return "\n".join(
        "| " + " | ".join(line) + " |" for line in [header, ["---"] * len(header), *cells]
    )


def format_bench(rows: list[dict], ratios: list[dict], growth: list[dict]) -> str:
    """Markdown: a line saying where it was measured, then the cost, ratio and growth tables."""
    if not rows:
        raise ValueError("format_bench needs at least one row")
    devices = {row["device"] for row in rows}
    if len(devices) > 1:
        raise ValueError(
            f"rows come from several devices ({', '.join(sorted(devices))}); "
            "format each device's rows apart"
        )
    first = rows[0]
    cuda = first["device"] == "cuda"
    backends = sorted({row["scan_backend"] for row in rows if row["scan_backend"] is not None})
    where = (
        f"Measured on {first['device']} ({first['device_name']}), torch {first['torch_version']}, "
        f"threads: {first['threads']}, "
        f"scan backend: {', '.join(backends) or 'none (no S6 model)'}; "
        f"ssmbench {first['ssmbench_version']} ({first['git_commit'] or 'no git commit'}); "
        f"batch {first['batch_size']}, {first['n_tokens']} tokens, median and IQR of "
        f"{first['repeats']} steps after {first['warmup']} warm-up steps."
    )
    cost_columns = {
        "model": "model",
        "seq_len": "seq_len",
        "params": "params",
        "train (ms)": "train_ms",
        "train IQR (ms)": "train_ms_iqr",
        "infer (ms)": "infer_ms",
        "infer IQR (ms)": "infer_ms_iqr",
        ("peak mem (MiB, allocated)" if cuda else "peak mem (MiB, RSS above baseline)"): (
            "peak_mem_mib"
        ),
        **({"reserved (MiB)": "reserved_mem_mib"} if cuda else {}),
        ("util (%, GPU NVML)" if cuda else "util (%, CPU process)"): "util_pct",
        "status": "status",
    }
    costs = [[_with_error(row)[key] for key in cost_columns.values()] for row in rows]
    ratio_lines = [
        [r["seq_len"], f"{DISPLAY[r['numerator']]} / {DISPLAY[r['denominator']]}",
         METRIC_NAMES[r["metric"]], r["ratio"], r["study"], _limit(r["target"]), r["meets_target"]]
        for r in ratios
    ]  # fmt: skip
    growth_lines = [
        [g["model"], f"{g['long_len']} / {g['short_len']}", g["train_ms_short"],
         g["train_ms_long"], g["growth"], g["study"], _limit(g["target"]), g["meets_target"]]
        for g in growth
    ]  # fmt: skip
    ours = f"ours ({first['device']})"
    ratio_header = ["seq_len", "ratio", "metric", ours, "study", "target", "meets"]
    growth_header = ["model", "lengths", "train short (ms)", "train long (ms)", ours, "study",
                     "target", "meets"]  # fmt: skip
    return "\n\n".join(
        [
            where,
            _table(list(cost_columns), costs),
            "Ratios (study: RTX A4000 GPU, its published Results tables; memory there is GPU MB):",
            _table(ratio_header, ratio_lines) if ratio_lines else "(no pair measured)",
            "Growth of the training-step time with length:",
            _table(growth_header, growth_lines) if growth_lines else "(no model at two lengths)",
        ]
    )


def validate_bench_args(args: argparse.Namespace) -> None:
    """Check `ssmbench bench`'s arguments before anything is built (ValueError says the fix)."""
    _checked_tasks(args.models or names(), args.lengths, args.n_tokens, 16, args.batch_size, 0,
                   args.repeats)  # fmt: skip
    resolve_device(args.device)
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")


def run_bench_command(args: argparse.Namespace) -> None:
    """`ssmbench bench`: progress on stderr, then the tables (or the rows as JSON) on stdout."""

    def progress(row: dict) -> None:
        cost = f"train {row['train_ms']:.2f} ms" if row["status"] == "done" else row["error"]
        print(f"{row['model']} at {row['seq_len']}: {row['status']}, {cost}", file=sys.stderr)

    rows = bench(
        args.models or names(),
        args.lengths,
        n_tokens=args.n_tokens,
        batch_size=args.batch_size,
        device=args.device,
        repeats=args.repeats,
        on_row=progress,
    )
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_bench(rows, study_ratios(rows), growth(rows)))
