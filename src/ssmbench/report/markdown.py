"""The whole report as Markdown: provenance, the protocol's choice and statistics, the
leaderboard, learning-rate sensitivity, difficulty axes, a table and figure per metric (accuracy
at the chosen lr, costs from the measurement phase), learning curves, failures and the method."""

from __future__ import annotations

from ssmbench.report.lengths import length_sections
from ssmbench.report.protocol import choice_table, leaderboard_table, selected_rows
from ssmbench.report.stats import choose, difficulty_axes, scores
from ssmbench.report.tables import (
    CURVES_IMAGE,
    FAILED,
    HOW_MEASURED,
    METRICS,
    PROTOCOL,
    conditions,
    devices,
    failure_table,
    metric_table,
    provenance,
)

LR_IMAGE = "lr_sensitivity.png"


def difficulty_image(task_name: str, axis: str) -> str:
    return f"difficulty_{task_name}_{axis}.png"


def _protocol(rows: list[dict]) -> list[str]:
    choices = choose(rows)
    parts = ["## Protocol: chosen learning rate and test accuracy", PROTOCOL, choice_table(choices)]
    parts += [
        "## Leaderboard",
        "Score: for each task, the mean over its settings of the test accuracy at the chosen "
        "(lr, wd); then the mean over tasks (MAD's score). A model missing settings is scored on "
        "those it has (their count is in the last column).",
        leaderboard_table(scores(choices), {c.model: c.title for c in choices}),
        "## Learning-rate sensitivity",
        "Mean validation accuracy over seeds at each learning rate (best weight decay), a panel "
        "per task setting and length: how narrow each model's window is.",
        f"![Learning-rate sensitivity](img/{LR_IMAGE})",
    ]
    for task_name, axes in difficulty_axes(choices).items():
        for axis in axes:
            parts += [
                f"## {task_name}: accuracy against {axis}",
                "Test accuracy at the chosen (lr, wd), averaged over the task's other settings.",
                f"![{task_name} against {axis}](img/{difficulty_image(task_name, axis)})",
            ]
    return parts


def report_markdown(
    rows: list[dict], curves: dict[str, list[dict]], meta: dict, costs: list[dict] | None = None
) -> str:
    """The whole report: provenance, protocol, a table and figure per metric, failures, method."""
    costs = costs or []
    chosen = selected_rows(rows, choose(rows))
    parts = [
        f"# ssmbench report: {meta.get('preset', 'sweep')}",
        "## Provenance",
        "\n".join(provenance(rows, meta)),
        *_protocol(rows),
    ]
    for spec in METRICS.values():
        source = costs if spec.cost else chosen
        parts += [f"## {spec.title}", metric_table(source, spec.key)]
        if spec.key == "train_ms":
            parts.append(conditions(costs))
        if spec.image:
            parts.append(f"![{spec.label_for(devices(source))}](img/{spec.image})")
    has_curves = any(curves.get(row["id"]) for row in chosen)
    parts += [
        "## Learning curves",
        "Validation accuracy against training step at the chosen (lr, wd), a line per seed, a "
        "panel per task setting and length."
        if has_curves
        else "No learning curves were recorded.",
        f"![Learning curves](img/{CURVES_IMAGE})",
    ]
    parts += length_sections(chosen)
    if any(row["status"] in FAILED for row in [*rows, *costs]):
        parts += ["## Failed, diverged and out-of-memory cells", failure_table([*rows, *costs])]
    parts += ["## How measured", HOW_MEASURED]
    return "\n\n".join(parts) + "\n"
