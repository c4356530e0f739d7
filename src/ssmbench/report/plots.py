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

from ssmbench.report.lengths import LENGTH_IMAGE, length_chart, length_results
from ssmbench.report.markdown import LR_IMAGE, difficulty_image
from ssmbench.report.protocol import selected_rows
from ssmbench.report.stats import Choice, along_axis, choose, difficulty_axes, line_of
from ssmbench.report.tables import (
    CURVES_IMAGE,
    METRICS,
    Metric,
    column_label,
    column_of,
    columns,
    device_label,
    devices,
    display_name,
    model_order,
    summarize,
)

FIGSIZE = (10.0, 5.0)  # inches
DPI = 120
LOG_SPAN = 20.0  # a log y axis when the largest bar is this many times the smallest
AXIS_LABELS = {"state_size": "state per layer (elements; attention: its KV cache at the length)"}


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
    ax.set_xticks(range(len(models)), [display_name(m, rows) for m in models])
    ax.set_xlim(-0.5, len(models) - 0.5)  # room for status words where no bar is
    ax.tick_params(axis="x", labelrotation=30)
    for tick in ax.get_xticklabels():
        tick.set_horizontalalignment("right")
        tick.set_rotation_mode("anchor")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    fig.legend(loc="outside right upper", fontsize=8)
    return _png(fig)


LINESTYLES = {"none": "-", "ssm": "-", "mamba": "--", "h3": ":", "mamba2": "-."}


def _line_styles(rows: list[dict]) -> dict[str, dict]:
    """A colour per mixer (its rows' `mixer`, else the model id) in order of first appearance,
    shared by every block around it; the block (rows' `block`) sets the line style, and a swept
    width (model key `NAME@dW`) the line width, wider for wider models."""
    facts = {r["model"]: (r.get("mixer") or r["model"], r.get("block") or "none") for r in rows}
    mixers = list(dict.fromkeys(mixer for mixer, _ in facts.values()))
    palette = colormaps["tab10" if len(mixers) <= 10 else "tab20"]
    widths = sorted({_width(model) for model in facts})
    return {
        model: {
            "color": palette(mixers.index(mixer)),
            "linestyle": LINESTYLES.get(block, "-"),
            **({"linewidth": 1.0 + 0.8 * widths.index(_width(model))} if len(widths) > 1 else {}),
        }
        for model, (mixer, block) in facts.items()
    }


def _width(model: str) -> int:
    """The swept width of a model key (`mamba-s6@d128` -> 128), 0 for a bare model name."""
    _, _, width = model.partition("@d")
    return int(width) if width.isdigit() else 0


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
    styles = _line_styles(with_curves)
    for ax, col in zip(axes, cols, strict=True):
        for row in with_curves:
            if column_of(row) != col:
                continue
            points = [p for p in curves[row["id"]] if p.get("val_accuracy") is not None]
            points = [p for p in points if math.isfinite(p["val_accuracy"])]
            ax.plot(
                [p["step"] for p in points],
                [100 * p["val_accuracy"] for p in points],
                **{"linewidth": 1.3, **styles[row["model"]]},
            )
        ax.set_title(column_label(col, cols))
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation accuracy (%, per token)")
    axes[0].set_ylim(0, 102)
    handles = [Line2D([], [], **styles[m], label=display_name(m, rows)) for m in models]
    fig.legend(handles=handles, loc="outside right center", fontsize=8)
    return _png(fig)


def _panels(fig: Figure, n: int) -> list[Axes]:
    """n panels sharing a y axis, at most four to a row."""
    ncols = min(n, 4)
    nrows = math.ceil(n / ncols)
    axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False).flatten()
    for ax in axes[n:]:
        ax.set_visible(False)
    return list(axes[:n])


def lr_sensitivity(choices: list[Choice]) -> bytes:
    """Mean validation accuracy (%) against learning rate (log axis), a line per model, best
    weight decay at each lr; a panel per (task setting, length)."""
    fig = Figure(figsize=FIGSIZE, layout="constrained")
    fig.suptitle("Validation accuracy against learning rate (mean over seeds, best weight decay)")
    cols = sorted({(c.task, c.seq_len) for c in choices})
    if not cols:
        _no_data(fig.add_subplot())
        return _png(fig)
    like_rows = [{"model": c.model, "display_name": c.display_name, **c.facts} for c in choices]
    models, styles = model_order(like_rows), _line_styles(like_rows)
    for ax, col in zip(_panels(fig, len(cols)), cols, strict=True):
        for c in choices:
            if (c.task, c.seq_len) != col:
                continue
            best: dict[float, float] = {}
            for p in c.points:
                if p.val is not None:
                    best[p.lr] = max(best.get(p.lr, -1.0), 100 * p.val.mean)
            lrs = sorted(best)
            ax.plot(lrs, [best[lr] for lr in lrs], marker="o", **styles[c.model])
        ax.set_xscale("log")
        ax.set_title(column_label(col, cols), fontsize=9)
        ax.set_xlabel("learning rate")
        ax.grid(alpha=0.3)
        ax.set_ylim(0, 102)
    fig.axes[0].set_ylabel("validation accuracy (%)")
    handles = [
        Line2D([], [], **styles[m], marker="o", label=display_name(m, like_rows)) for m in models
    ]
    fig.legend(handles=handles, loc="outside right center", fontsize=8)
    return _png(fig)


def along(choices: list[Choice], task_name: str, axis: str) -> bytes:
    """Chosen test accuracy (%) against one difficulty axis of a task, a line per model."""
    fig = Figure(figsize=FIGSIZE, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(f"{task_name}: test accuracy at the chosen lr against {axis}")
    lines = along_axis(choices, task_name, axis)
    like_rows = [
        {"model": line_of(c, axis), "display_name": c.display_name, **c.facts} for c in choices
    ]
    styles = _line_styles(like_rows)
    for model in model_order([{"model": m} for m in lines]):
        xs = list(lines[model])
        ax.plot(xs, [100 * lines[model][x] for x in xs], marker="o", **styles[model],
                label=display_name(model, like_rows))  # fmt: skip
    if all(isinstance(x, (int, float)) and x > 0 for v in lines.values() for x in v):
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.set_xlabel(AXIS_LABELS.get(axis, axis))
    ax.set_ylabel("test accuracy (%, per token)")
    ax.set_ylim(0, 102)
    ax.grid(alpha=0.3)
    fig.legend(loc="outside right center", fontsize=8)
    return _png(fig)


def figures(
    rows: list[dict], curves: dict[str, list[dict]], costs: list[dict] | None = None
) -> dict[str, bytes]:
    """Every figure of the report by file name; a metric without data still gets a 'no data' one.
    Accuracy figures show the chosen (lr, wd) of each setting, cost figures the measurements."""
    choices = choose(rows)
    chosen = selected_rows(rows, choices)
    charts = {
        m.image: bar_chart((costs or []) if m.cost else chosen, m)
        for m in METRICS.values()
        if m.image
    }
    charts[CURVES_IMAGE] = learning_curves(chosen, curves)
    charts[LR_IMAGE] = lr_sensitivity(choices)
    for task_name, axes in difficulty_axes(choices).items():
        for axis in axes:
            charts[difficulty_image(task_name, axis)] = along(choices, task_name, axis)
    for key, per_model in length_results(chosen).items():
        style = _line_styles([{"model": model} for model in per_model])
        charts[LENGTH_IMAGE.format(key=key)] = _png(length_chart(key, per_model, style, rows))
    return charts
