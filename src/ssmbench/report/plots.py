"""PNG figures: grouped bars per metric (a group per model, a bar per length) and learning curves.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, no display, no global state).
A bar is the mean over finished seeds, its error bar the sample std when there are several.
"""

from __future__ import annotations

import io
import math

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import ScalarFormatter

from ssmbench.report.tables import (
    CURVES_IMAGE,
    LENGTH_IMAGE,
    METRICS,
    Metric,
    column_label,
    columns,
    device_label,
    devices,
    display_name,
    length_results,
    model_order,
    summarize,
    task_key_of,
)

FIGSIZE = (10.0, 5.0)  # inches
DPI = 120
LOG_SPAN = 20.0  # a log y axis when the largest bar is this many times the smallest


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _no_data(ax: Axes) -> None:
    ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", fontsize=14)
    ax.set_xticks([])
    ax.set_yticks([])


def bar_chart(rows: list[dict], metric: Metric) -> bytes:
    """Grouped bars of one metric; a cell where no seed finished shows its status word instead."""
    label = metric.label_for(devices(rows))
    fig = Figure(figsize=FIGSIZE, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(f"{label} — {device_label(rows)}")
    cells = summarize(rows, metric)
    if not any(cell.values for cell in cells.values()):
        _no_data(ax)
        return _png(fig)

    models, cols = model_order(rows), columns(rows)
    width = 0.8 / len(cols)
    for j, col in enumerate(cols):
        x = np.arange(len(models)) + (j - (len(cols) - 1) / 2) * width  # (n_models,)
        found = [(i, cells.get((m, col))) for i, m in enumerate(models)]
        bars = [(x[i], cell) for i, cell in found if cell is not None and cell.values]
        ax.bar(
            [xi for xi, _ in bars],
            [cell.mean for _, cell in bars],
            width,
            yerr=[cell.std or 0.0 for _, cell in bars] if any(c.std for _, c in bars) else None,
            capsize=2,
            error_kw={"elinewidth": 0.8},
            label=column_label(col, cols),
        )
        for i, cell in found:
            if cell is not None and cell.status:
                ax.text(
                    x[i],
                    0.02,
                    cell.status,
                    transform=ax.get_xaxis_transform(),
                    rotation=90,
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    color="0.3",
                )

    heights = [cell.mean for cell in cells.values() if cell.values and cell.mean > 0]
    if metric.log_ok and heights and max(heights) >= LOG_SPAN * min(heights):
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ScalarFormatter())  # 10, 100 rather than 10^1, 10^2
        label += ", log scale"
    if metric.scale == 100:  # a share in %: the whole scale
        ax.set_ylim(0, 102)
    ax.set_ylabel(label)
    ax.set_xticks(range(len(models)), [display_name(m) for m in models])
    ax.set_xlim(-0.5, len(models) - 0.5)  # room for status words where no bar is
    ax.tick_params(axis="x", labelrotation=30)
    for tick in ax.get_xticklabels():
        tick.set_horizontalalignment("right")
        tick.set_rotation_mode("anchor")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    fig.legend(loc="outside right upper", fontsize=8)
    return _png(fig)


# A tab10 colour per SSM kind, shared with its Mamba block, whose lines are dashed.
TAB10_INDEX = {
    "s4d-real": 0,
    "s4d-inv": 1,
    "s4-lowrank": 2,
    "s6": 3,
    "gated-mlp": 4,
    "transformer": 5,
    "lstm": 6,
    "s4": 7,
}


def _line_style(model: str) -> dict:
    """The same colour for a model in every panel; a Mamba block dashed in its SSM's colour."""
    kind = model.removeprefix("mamba-")
    index = TAB10_INDEX.get(kind, 8 + sum(map(ord, kind)) % 2)
    return {"color": colormaps["tab10"](index), "linestyle": "-" if kind == model else "--"}


def learning_curves(rows: list[dict], curves: dict[str, list[dict]]) -> bytes:
    """Validation accuracy (%) against step: a panel per length, a line per seed."""
    fig = Figure(figsize=FIGSIZE, layout="constrained")
    with_curves = [row for row in rows if curves.get(row["id"])]
    cols = columns(with_curves)
    fig.suptitle(f"Validation accuracy during training — {device_label(rows)}")
    if not cols:
        _no_data(fig.add_subplot())
        return _png(fig)

    axes = fig.subplots(1, len(cols), sharey=True, squeeze=False)[0]
    models = model_order(with_curves)
    for ax, col in zip(axes, cols, strict=True):
        for row in with_curves:
            if (task_key_of(row), row["seq_len"]) != col:
                continue
            points = [p for p in curves[row["id"]] if p.get("val_accuracy") is not None]
            points = [p for p in points if math.isfinite(p["val_accuracy"])]
            ax.plot(
                [p["step"] for p in points],
                [100 * p["val_accuracy"] for p in points],
                **_line_style(row["model"]),
                linewidth=1.3,
            )
        ax.set_title(column_label(col, cols))
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation accuracy (%, per token)")
    axes[0].set_ylim(0, 102)
    handles = [Line2D([], [], **_line_style(m), label=display_name(m)) for m in models]
    fig.legend(handles=handles, loc="outside right center", fontsize=8)
    return _png(fig)


def length_chart(key: str, per_model: dict[str, dict[int, list]], rows: list[dict]) -> bytes:
    """Test accuracy (%) against evaluation length (log2 x axis), a line per model."""
    fig = Figure(figsize=FIGSIZE, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(f"Accuracy at other lengths, {key} — {device_label(rows)}")
    for model in model_order([{"model": m} for m in per_model]):
        points = []
        for length, values in sorted(per_model[model].items()):
            numbers = [v for v in values if not isinstance(v, str)]
            if numbers:
                points.append((length, 100 * sum(numbers) / len(numbers)))
        ax.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            marker="o",
            label=display_name(model),
            **_line_style(model),
        )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("evaluation length (log2)")
    ax.set_ylabel("test accuracy (%, per scored token)")
    ax.set_ylim(0, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _png(fig)


def figures(rows: list[dict], curves: dict[str, list[dict]]) -> dict[str, bytes]:
    """Every figure of the report by file name; a metric without data still gets a 'no data' one."""
    charts = {m.image: bar_chart(rows, m) for m in METRICS.values() if m.image}
    lengths = {
        LENGTH_IMAGE.format(key=key): length_chart(key, per_model, rows)
        for key, per_model in length_results(rows).items()
    }
    return {**charts, CURVES_IMAGE: learning_curves(rows, curves), **lengths}
