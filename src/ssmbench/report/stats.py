"""The protocol's statistics: choose each setting's (lr, weight decay) on validation accuracy,
report the test accuracy of that choice over seeds with a 95% confidence interval, and score
models across tasks as MAD does.

For n finished seeds with test accuracies x_1..x_n at the chosen grid point:
    mean = (1/n) Σ x_i,   s = sqrt(Σ (x_i - mean)² / (n - 1)),
    95% CI = mean ± t_{0.975, n-1} · s / sqrt(n)      (Student t, scipy.stats.t)
With n = 1 there is no s and no interval. The choice, for one (model, task setting, length), is
the (lr, wd) whose mean *validation* accuracy (the best validation accuracy of each seed) over
finished seeds is highest; ties go to the earlier point in (lr, wd) order. The test set is never
looked at to choose. MAD's score of a model: the mean over tasks of the mean over that task's
settings of the chosen test accuracy.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from scipy import stats as scipy_stats

from ssmbench.report.tables import display_name

Setting = tuple[str, str, int]  # (model, task key, seq_len)


@dataclass(frozen=True)
class Estimate:
    """Mean, sample std and 95% Student-t interval of n values (std and interval None at n=1)."""

    n: int
    mean: float
    std: float | None
    ci95_low: float | None
    ci95_high: float | None


def estimate(values: list[float]) -> Estimate:
    if not values:
        raise ValueError("estimate needs at least one value")
    n, mean = len(values), statistics.fmean(values)
    if n == 1:
        return Estimate(1, mean, None, None, None)
    std = statistics.stdev(values)
    if std == 0:
        return Estimate(n, mean, 0.0, mean, mean)
    low, high = scipy_stats.t.interval(0.95, n - 1, loc=mean, scale=std / math.sqrt(n))
    return Estimate(n, mean, std, float(low), float(high))


@dataclass(frozen=True)
class GridPoint:
    """One (lr, wd) of a setting: validation and test accuracy over its finished seeds."""

    lr: float
    weight_decay: float
    val: Estimate | None  # None when no seed finished
    test: Estimate | None
    statuses: tuple[str, ...]  # every seed's status


@dataclass(frozen=True)
class Choice:
    """The chosen grid point of one (model, task setting, length) and the grid it came from."""

    model: str
    task: str  # the task setting's key
    task_name: str
    task_params: dict[str, Any]  # the setting's parameters (a difficulty axis may vary them)
    seq_len: int
    chosen: GridPoint | None  # None when no point has a finished seed
    points: list[GridPoint] = field(default_factory=list)
    display_name: str = ""  # the registry's, as its rows recorded it ('' for old rows)
    facts: dict[str, Any] = field(default_factory=dict)  # its rows' mixer, block and state size
    base_model: str = ""  # the registry name (model is the model key, e.g. mamba-s6@d128)
    d_model: int | None = None  # the width its rows were trained at

    @property
    def title(self) -> str:
        """Its display name, the model key's swept width included ('Mamba (S6) @d128')."""
        return display_name(self.model, [{"model": self.model, "display_name": self.display_name}])

    @property
    def status(self) -> str:
        """'' when a point was chosen, else the status words of its seeds."""
        return "" if self.chosen else "/".join(sorted({s for p in self.points for s in p.statuses}))


def setting_of(row: dict) -> Setting:
    return row["model"], row["task"], row["seq_len"]


def _finite(rows: list[dict], key: str) -> list[float]:
    values = [row.get(key) for row in rows if row["status"] == "done"]
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def _point(lr: float, wd: float, rows: list[dict]) -> GridPoint:
    val, test = _finite(rows, "val_accuracy"), _finite(rows, "accuracy")
    return GridPoint(
        lr,
        wd,
        estimate(val) if val else None,
        estimate(test) if test else None,
        tuple(row["status"] for row in rows),
    )


def choose(rows: list[dict]) -> list[Choice]:
    """Every setting's choice, in the order settings first appear in `rows`."""
    groups: dict[Setting, dict[tuple[float, float], list[dict]]] = {}
    for row in rows:
        grid = groups.setdefault(setting_of(row), {})
        grid.setdefault((row["lr"], row["weight_decay"]), []).append(row)
    choices = []
    for (model, task, seq_len), grid in groups.items():
        points = [_point(lr, wd, grid[lr, wd]) for lr, wd in sorted(grid)]
        scored = [p for p in points if p.val is not None and p.test is not None]
        chosen = max(scored, key=lambda p: p.val.mean) if scored else None  # type: ignore[union-attr]
        params = dict((next(iter(grid.values()))[0].get("config") or {}).get("task", {}))
        name = str(params.pop("name", task))
        first = next(iter(grid.values()))[0]
        facts = {key: first.get(key) for key in ("mixer", "block", "state_size")}
        title = first.get("display_name") or ""
        config = first.get("config") or {}
        base, width = config.get("model", model), (config.get("arch") or {}).get("d_model")
        choices.append(
            Choice(model, task, name, params, seq_len, chosen, points, title, facts, base, width)
        )
    return choices


@dataclass(frozen=True)
class Score:
    """A model's MAD score and the per-task means it averages (fractions, not %)."""

    model: str
    score: float
    per_task: dict[str, float]
    settings: int  # how many settings had a chosen point


def scores(choices: list[Choice]) -> list[Score]:
    """Per model: mean over tasks of (mean over the task's settings of the chosen test mean);
    best first."""
    by_model: dict[str, dict[str, list[float]]] = {}
    for c in choices:
        if c.chosen is not None and c.chosen.test is not None:
            tasks = by_model.setdefault(c.model, {})
            tasks.setdefault(c.task_name, []).append(c.chosen.test.mean)
    found = [
        Score(
            model,
            statistics.fmean(statistics.fmean(v) for v in tasks.values()),
            {name: statistics.fmean(v) for name, v in tasks.items()},
            sum(len(v) for v in tasks.values()),
        )
        for model, tasks in by_model.items()
    ]
    return sorted(found, key=lambda s: -s.score)


WIDTH_AXES = ("d_model", "state_size")  # axes along which a model's widths make one line


def difficulty_axes(choices: list[Choice]) -> dict[str, list[str]]:
    """Per task name, the axes (seq_len, d_model and task parameters) that take several values;
    where widths are swept and every row knows its state size, also state_size (the Based
    paper's recall against state size: models compared at equal state, not equal width)."""
    axes: dict[str, list[str]] = {}
    for name in dict.fromkeys(c.task_name for c in choices):
        mine = [c for c in choices if c.task_name == name]
        keys = ["seq_len", "d_model", *sorted({k for c in mine for k in c.task_params})]
        axes[name] = [k for k in keys if len({_axis_value(c, k) for c in mine}) > 1]
        if "d_model" in axes[name] and all(c.facts.get("state_size") for c in mine):
            axes[name].insert(axes[name].index("d_model") + 1, "state_size")
    return axes


def _axis_value(choice: Choice, axis: str) -> Any:
    if axis in ("seq_len", "d_model"):
        return getattr(choice, axis)
    if axis == "state_size":
        return choice.facts.get("state_size")
    return choice.task_params.get(axis)


def line_of(choice: Choice, axis: str) -> str:
    """The line a choice belongs to on a plot along `axis`: its model key, or along d_model and
    state_size the registry model (its widths are the points of one line)."""
    return (choice.base_model or choice.model) if axis in WIDTH_AXES else choice.model


def along_axis(choices: list[Choice], task_name: str, axis: str) -> dict[str, dict[Any, float]]:
    """{line: {axis value: chosen test accuracy, averaged over the task's other settings}}, a
    line per model key (per registry model along d_model)."""
    found: dict[str, dict[Any, list[float]]] = {}
    for c in choices:
        if c.task_name == task_name and c.chosen is not None and c.chosen.test is not None:
            found.setdefault(line_of(c, axis), {}).setdefault(_axis_value(c, axis), []).append(
                c.chosen.test.mean
            )
    return {
        model: {x: statistics.fmean(v) for x, v in sorted(values.items())}
        for model, values in found.items()
    }
