"""Accuracy at other lengths: per task setting, test accuracy against evaluation length.

After training, each cell's best-validation weights are scored on a fixed test set at every
evaluation length (`accuracy_by_length`, `status_by_length`: done or oom). Here a table per task
setting (a row per model, a column per length, mean over finished seeds) and a figure (log-2 x
axis, a line per model).
"""

from __future__ import annotations

from matplotlib.figure import Figure

from ssmbench.experiment.results import Status
from ssmbench.report.tables import display_name, markdown_table, model_order

LENGTH_IMAGE = "length-{key}.png"
Results = dict[str, dict[int, list[float | str]]]  # model -> length -> accuracies or 'oom'


def length_results(rows: list[dict]) -> dict[str, Results]:
    """task setting -> model -> evaluation length -> accuracies of finished seeds ('oom')."""
    found: dict[str, Results] = {}
    for row in rows:
        by_length = row.get("accuracy_by_length") or {}
        status = row.get("status_by_length") or {}
        if row["status"] != Status.DONE or len(by_length) < 2:
            continue
        per_model = found.setdefault(row["task"], {}).setdefault(row["model"], {})
        for length, value in by_length.items():
            oom = status.get(length) == "oom" or value is None
            per_model.setdefault(int(length), []).append("oom" if oom else value)
    return found


def _mean(values: list[float | str]) -> float | None:
    numbers = [v for v in values if not isinstance(v, str)]
    return 100 * sum(numbers) / len(numbers) if numbers else None


def length_table(per_model: Results, rows: list[dict]) -> str:
    """Mean test accuracy (%) per model and evaluation length; 'oom' where a length did not fit.
    `rows` give the models' display names."""

    def text(values: list[float | str]) -> str:
        mean = _mean(values)
        return "—" if not values else "oom" if mean is None else f"{mean:.1f}"

    lengths = sorted({length for by_length in per_model.values() for length in by_length})
    order = model_order([{"model": m} for m in per_model])
    body = [
        [display_name(m, rows), *(text(per_model[m].get(n, [])) for n in lengths)] for m in order
    ]
    header = ["Test accuracy (%)", *(f"L={n}" for n in lengths)]
    return markdown_table(header, body, ["<", *(">" for _ in lengths)])


def length_sections(rows: list[dict]) -> list[str]:
    """The report's sections: a table and a figure per task setting evaluated at other lengths."""
    parts = []
    for key, per_model in sorted(length_results(rows).items()):
        parts += [
            f"## Accuracy at other lengths: {key}",
            "The best-validation weights of each cell on a fixed test set of the task at each "
            "length (the training length included), mean over finished seeds.",
            length_table(per_model, rows),
            f"![Accuracy against evaluation length, {key}](img/{LENGTH_IMAGE.format(key=key)})",
        ]
    return parts


def length_chart(key: str, per_model: Results, style: dict[str, dict], rows: list[dict]) -> Figure:
    """Test accuracy (%) against evaluation length (log-2 x axis), a line per model (named as
    `rows` record)."""
    fig = Figure(figsize=(10.0, 5.0), layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(f"Accuracy at other lengths: {key}")
    for model in model_order([{"model": m} for m in per_model]):
        points = [(n, _mean(v)) for n, v in sorted(per_model[model].items())]
        points = [(n, m) for n, m in points if m is not None]
        ax.plot(
            [n for n, _ in points],
            [m for _, m in points],
            marker="o",
            label=display_name(model, rows),
            **style[model],
        )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("evaluation length (log2)")
    ax.set_ylabel("test accuracy (%, per scored token)")
    ax.set_ylim(0, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig
