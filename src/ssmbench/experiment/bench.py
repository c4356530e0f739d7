"""The `bench` rows: every model's cost at every length, measured side by side in one process,
and the ratios the study's claims rest on, next to the study's own figures and our targets.
(Their Markdown is `ssmbench.report.bench`; the command's glue is in `ssmbench.cli`.)"""

from __future__ import annotations

import gc
import itertools
from collections.abc import Callable

import torch

from ssmbench.experiment.flops import (
    PEAK_FIGURES,
    distance_from_peak,
    matmul_peak_gflops,
    train_step_flops,
)
from ssmbench.experiment.measure import (
    MEASURES,
    check_counts,
    environment,
    measure,
    resolve_device,
)
from ssmbench.experiment.profile import profile_training
from ssmbench.experiment.task_config import DEFAULT_TASK, TaskSection, parse_task
from ssmbench.experiment.train import as_compile_failure
from ssmbench.models import build, get, n_params, names
from ssmbench.models.autoencoder import with_readout
from ssmbench.models.kernels import KERNEL_FIELDS, recorded_backends
from ssmbench.tasks import Task

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
COMPILE_MODES = {"off": (False,), "on": (True,), "both": (False, True)}
METRIC_NAMES = {"train_ms": "train time", "peak_mem_mib": "peak memory"}
GROWTH_TARGET = {(256, 784): 3.5}  # train time at the long length / at the short, <= target


def checked_tasks(
    models: list[str],
    lengths: list[int],
    task: TaskSection,
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
    return [task.build(length) for length in lengths]


def task_section(name: str = DEFAULT_TASK, **params: object) -> TaskSection:
    """The task timed by bench, validated as `ssmbench run` validates its task section."""
    return parse_task({"name": name, **params})


def bench(
    models: list[str],
    lengths: list[int],
    task: TaskSection | None = None,
    batch_size: int = 64,
    d_model: int = 64,
    n_layers: int = 2,
    d_state: int = 16,
    device: str = "auto",
    seed: int = 0,
    warmup: int = 3,
    repeats: int = 20,
    on_row: Callable[[dict], None] | None = None,
    compile_modes: tuple[bool, ...] = (False,),
    profile: bool = False,
) -> list[dict]:
    """One row per (model, length, compiled or not), lengths outermost so that the models
    compared at one length are measured one after another. A model that fails (e.g. out of
    memory) gives a row with status 'oom' or 'failed' and the error text; the others have status
    'done'. Each row also says how far the step runs from the peak (experiment/flops.py), the
    peak being a float32 matmul timed once at the start on the same device and threads. With
    `profile`, each eager row also has `profile`: where its training step's time goes
    (experiment/profile.py), taken after the timed steps."""
    section = task or task_section()
    tasks = checked_tasks(models, lengths, section, batch_size, warmup, repeats)
    torch_device = resolve_device(device)
    env = environment(torch_device)
    peak = matmul_peak_gflops(torch_device)
    arch = {"d_model": d_model, "n_layers": n_layers, "d_state": d_state}
    rows = []
    for task in tasks:
        inputs, labels = task.sample(batch_size, torch.Generator().manual_seed(seed), train=True)
        for name, compiled in itertools.product(models, compile_modes):
            row = {
                "model": name,
                "seq_len": task.seq_len,
                "task": section.name,
                "task_key": section.key,
                "n_tokens": section.params.get("n_tokens"),
                "vocab_size": task.vocab_size,
                "batch_size": batch_size,
                **arch,
                "warmup": warmup,
                "repeats": repeats,
                "compiled": compiled,
                "params": None,
                **dict.fromkeys(MEASURES),
                **dict.fromkeys(PEAK_FIGURES),
                **dict.fromkeys(field for field, _ in KERNEL_FIELDS.values()),
                "status": "done",
                "error": None,
                **env,
            }
            how = (seed, warmup, repeats, compiled, task.seq_len, profile and not compiled)
            row.update(_measure_model(name, task, arch, inputs, labels, torch_device, how, peak))
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return rows


def _measure_model(name, task, arch, inputs, targets, device, how, peak) -> dict:
    """A row's measured fields, or its status and error when the model fails (e.g. oom); how is
    (seed, warmup, repeats, compiled, seq_len, profiled)."""
    seed, warmup, repeats, compiled, seq_len, profiled = how
    found: dict = {}
    try:
        torch.manual_seed(seed)
        options = get(name).sized_for(arch, task.input_len)
        model = with_readout(build(name, task.vocab_size, **options), task.readout).to(device)
        found["params"] = n_params(model)
        found.update(get(name).describe(arch["d_model"], arch["d_state"], seq_len))
        found.update(recorded_backends(model, device))
        inputs, targets = inputs.to(device), targets.to(device)
        found.update(measure(model, inputs, targets, device, warmup, repeats, compile=compiled))
        flops = train_step_flops(model, inputs, targets)
        found.update(distance_from_peak(flops, found["train_ms"], inputs.numel(), peak))
        if profiled:
            found["profile"] = profile_training(model, inputs, targets)
    except torch.OutOfMemoryError as error:
        found.update(status="oom", error=f"{type(error).__name__}: {error}")
    except Exception as error:  # one model's failure must not stop the others
        failure = as_compile_failure(error)  # torch.compile's failure, in one line
        found.update(status="failed", error=str(failure or f"{type(error).__name__}: {error}"))
    model = None  # free this model before the next is built
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return found


def _done(rows: list[dict]) -> dict[tuple[str, int], dict]:
    """Successful rows by (model, seq_len); two for one key is an error."""
    found = {}
    for row in rows:
        if row["status"] != "done" or row.get("compiled"):  # ratios compare eager steps
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
                    "label": f"{get(top).title} / {get(bottom).title}",
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


def crossover(
    rows: list[dict], metric: str = "train_ms", length: str = "seq_len",
    reference: str = "transformer",
) -> dict[str, int | None]:  # fmt: skip
    """Per model, the shortest measured `length` from which it is faster than `reference` (a
    lower `metric` at that length and at every longer one both measured), or None when it is not
    faster at the longest. Rows: bench's (train_ms by seq_len) or one batch size's decode rows
    (ms_per_token by prompt)."""
    measured = [r for r in rows if r["status"] == "done" and r.get(metric) is not None]
    times = {(r["model"], r[length]): r[metric] for r in measured if not r.get("compiled")}
    found: dict[str, int | None] = {}
    for model in dict.fromkeys(name for name, _ in times):
        if model == reference:
            continue
        both = sorted(n for name, n in times if name == model and (reference, n) in times)
        found[model] = None
        for n in reversed(both):  # from the longest down, while it stays faster
            if times[model, n] >= times[reference, n]:
                break
            found[model] = n
    return found
