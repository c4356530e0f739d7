"""Markdown of `ssmbench bench`: where it was measured, the cost table, the study's ratios and
the growth of the training-step time with length."""

from __future__ import annotations

from ssmbench.experiment.bench import METRIC_NAMES
from ssmbench.experiment.flops import MATMUL_N


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


def _any_compiled(rows: list[dict]) -> bool:
    return any(row.get("compiled") for row in rows)


def _derived(row: dict) -> dict:
    """The row with FLOPs in GFLOP and the fraction of peak in %, for the table (None in rows
    from before these were measured)."""
    flops, fraction = row.get("train_flops"), row.get("peak_fraction")
    return {
        "tokens_per_s": None,
        "compile_s": None,
        **row,
        "train_gflop": None if flops is None else flops / 1e9,
        "peak_pct": None if fraction is None else 100 * fraction,
    }


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
    others = {  # the causal-conv1d and SSD kernels that ran, where a model calls them
        kind: ", ".join(sorted({r[f"{kind}_backend"] for r in rows if r.get(f"{kind}_backend")}))
        for kind in ("conv", "ssd")
    }
    where = (
        f"Measured on {first['device']} ({first['device_name']}), torch {first['torch_version']}, "
        f"threads: {first['threads']}, "
        f"scan backend: {', '.join(backends) or 'none (no S6 model)'}, "
        f"causal conv: {others['conv'] or 'none'}, SSD: {others['ssd'] or 'none'}; "
        f"ssmbench {first['ssmbench_version']} ({first['git_commit'] or 'no git commit'}); "
        f"batch {first['batch_size']}, task {first['task_key']}, median and IQR of "
        f"{first['repeats']} steps after {first['warmup']} warm-up steps. "
        f"Peak: a float32 {MATMUL_N}x{MATMUL_N} matmul on the same threads, "
        f"{_cell(first.get('peak_gflops'), 1)} GFLOP/s; FLOPs per training step count matmuls, "
        "convolutions, FFTs and the selective scan (not elementwise work), see docs/results."
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
        "tokens/s": "tokens_per_s",
        "GFLOP/step": "train_gflop",
        "% of peak": "peak_pct",
        **({"compiled": "compiled", "compile (s)": "compile_s"} if _any_compiled(rows) else {}),
        "status": "status",
    }
    costs = [[_derived(_with_error(row))[key] for key in cost_columns.values()] for row in rows]
    ratio_lines = [
        [r["seq_len"], r["label"],
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
