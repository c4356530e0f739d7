"""Markdown of `ssmbench bench`: where it was measured, the cost table, the study's ratios and
the growth of the training-step time with length."""

from __future__ import annotations

from ssmbench.experiment.bench import METRIC_NAMES
from ssmbench.experiment.flops import MATMUL_N
from ssmbench.experiment.profile import GROUPS
from ssmbench.models.kernels import KERNEL_LABELS


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


def _where(rows: list[dict]) -> str:
    """The sentence on where and how rows were measured: device, versions, every kernel
    family's backend that ran (where a model calls it), shape and repeats."""
    first = rows[0]

    def ran(field: str, none: str = "none") -> str:
        return ", ".join(sorted({r[field] for r in rows if r.get(field)})) or none

    kernels = {
        label: ran(field, "none (no S6 model)" if field == "scan_backend" else "none")
        for field, label in KERNEL_LABELS.items()
    }
    return (
        f"Measured on {first['device']} ({first['device_name']}), torch {first['torch_version']}, "
        f"threads: {first['threads']} (OpenMP wait policy {first.get('omp_wait_policy', '?')}), "
        + ", ".join(f"{name}: {value}" for name, value in kernels.items())
        + f"; ssmbench {first['ssmbench_version']} ({first['git_commit'] or 'no git commit'}); "
        f"batch {first['batch_size']}, task {first['task_key']}, median and IQR of "
        f"{first['repeats']} steps after {first['warmup']} warm-up steps. "
        f"Peak: a float32 {MATMUL_N}x{MATMUL_N} matmul on the same threads, "
        f"{_cell(first.get('peak_gflops'), 1)} GFLOP/s; FLOPs per training step count matmuls, "
        "convolutions, FFTs and the selective scan (not elementwise work), see docs/results."
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
    where = _where(rows)
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
            *format_profiles(rows),
        ]
    )


def format_profiles(rows: list[dict]) -> list[str]:
    """Where each profiled training step's time goes: ms per step (forward + backward) and % of
    the profiled step, per module group, and the ops with the most self time."""
    profiled = [row for row in rows if row.get("profile")]
    if not profiled:
        return []
    groups = [g for g in GROUPS if any(g in row["profile"]["groups"] for row in profiled)]
    lines, ops = [], []
    for row in profiled:
        found, wall = row["profile"]["groups"], row["profile"]["wall_ms"]
        split = {g: found.get(g, {"forward": 0.0, "backward": 0.0}) for g in groups}
        totals = [t["forward"] + t["backward"] for t in split.values()]
        cells = [f"{ms:.2f} ({100 * ms / wall:.0f}%)" for ms in totals]
        lines.append([row["model"], row["seq_len"], wall, *cells])
        top = ", ".join(f"{name} {ms:.2f}" for name, ms in row["profile"]["top_ops"][:5])
        ops.append([row["model"], row["seq_len"], top])
    return [
        "Where a training step's time goes (torch.profiler over 3 steps after the timed ones, host "
        "time in ms per step and % of the profiled step, each group's forward and backward; the "
        "profiler slows the step, so compare shares, not the total with the train column):",
        _table(["model", "seq_len", "profiled step (ms)", *groups], lines),
        "The ops with the most self time (ms per step):",
        _table(["model", "seq_len", "top ops"], ops),
    ]


def format_decode(rows: list[dict]) -> str:
    """Markdown: where it was measured, then a row per (prompt, batch, model)."""
    if not rows:
        raise ValueError("format_decode needs at least one row")
    first = rows[0]
    where = (
        f"Recurrent decoding on {first['device']} ({first['device_name']}), torch "
        f"{first['torch_version']}, threads: {first['threads']}; d_model 64, 2 layers; the prompt "
        f"fed step by step, then {first['new_tokens']} tokens generated greedily. State: the "
        "recurrent state after the prompt (attention: its KV cache); peak memory: "
        + ("allocated during the generation." if first["device"] == "cuda"
           else "RSS above the baseline during the generation (CPU).")
    )  # fmt: skip
    header = ["prompt", "batch", "model", "prefill (s)", "tokens/s", "ms/token", "state (KiB)",
              "peak mem (MiB)", "status"]  # fmt: skip
    lines = [
        [r["prompt"], r["batch_size"], r["model"], r.get("prefill_s"), r.get("tokens_per_s"),
         r.get("ms_per_token"), r.get("state_kib"), r.get("peak_mem_mib"),
         r["status"] if r["status"] == "done" else f"{r['status']}: {r['error']}"]
        for r in rows
    ]  # fmt: skip
    return "\n\n".join([where, _table(header, lines)])
