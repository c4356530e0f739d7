"""measure(): the statistics, what memory and utilization see, that the caller's model is left
alone; bench(): rows and failures; the study's ratios, growth and the Markdown table."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import time

import numpy as np
import pytest
import torch
from torch import nn

import ssmbench.experiment.bench as bench_module
import ssmbench.experiment.measure as measure_module
from ssmbench.cli import _parser, bench_task, run_bench_command, validate_bench_args
from ssmbench.experiment.bench import bench, crossover, growth, study_ratios, task_section
from ssmbench.experiment.measure import (
    MEASURES,
    PeakMemory,
    Utilization,
    environment,
    measure,
    resolve_device,
    summarize,
    time_steps,
)
from ssmbench.ops.scan import resolve_backend
from ssmbench.report.bench import format_bench

CPU = torch.device("cpu")
BIG_MIB = 200


class Tiny(nn.Module):
    """Tokens (B, T) -> logits (B, T, V); optionally touches `alloc_mib` MiB each forward."""

    def __init__(self, vocab_size: int = 16, d_model: int = 16, alloc_mib: int = 0) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.rnn = nn.LSTM(d_model, d_model, batch_first=True)
        self.head = nn.Linear(d_model, vocab_size)
        self.alloc_mib = alloc_mib

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(self.embed(tokens))  # (B, T, D)
        if self.alloc_mib:
            h = h + torch.ones(self.alloc_mib * 2**18).sum() * 0  # alloc_mib MiB of float32
        return self.head(h)  # (B, T, V)


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: two OpenMP threads on a busy shared machine stall each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def batch(seq_len: int = 24, n_tokens: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randint(0, 16, (4, seq_len), generator=generator)
    labels = torch.full((4, seq_len), -100)  # scored at the last n_tokens positions only
    labels[:, -n_tokens:] = torch.randint(0, 16, (4, n_tokens), generator=generator)
    return inputs, labels


def test_summarize_is_median_and_interquartile_range():
    samples = list(np.random.default_rng(0).exponential(5.0, size=21))
    median, iqr = summarize(samples)
    assert median == pytest.approx(np.median(samples))
    assert iqr == pytest.approx(np.percentile(samples, 75) - np.percentile(samples, 25))
    assert summarize([1.0, 2.0, 3.0, 4.0, 100.0]) == (3.0, 2.0)
    with pytest.raises(ValueError, match="at least one sample"):
        summarize([])


def test_time_steps_times_each_step_between_synchronizations():
    calls = []
    samples = time_steps(lambda: calls.append("step"), 5, lambda: calls.append("sync"))
    assert len(samples) == 5 and all(s >= 0 for s in samples)
    assert calls == ["sync", "step", "sync"] * 5


def test_measure_returns_every_measure_and_leaves_the_model_alone():
    model = Tiny()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    result = measure(model, *batch(), CPU, warmup=1, repeats=4)
    assert list(result) == list(MEASURES)
    for key in ("train_ms", "infer_ms"):
        assert result[key] > 0 and result[f"{key}_iqr"] >= 0
    assert result["reserved_mem_mib"] is None
    assert result["util_kind"] == "cpu-process"
    assert 0 < result["util_pct"] <= 150
    assert model.training
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]) and p.grad is None


def test_measure_peak_memory_sees_a_large_allocation_in_the_step():
    inputs, targets = batch()
    small = measure(Tiny(), inputs, targets, CPU, warmup=1, repeats=2)["peak_mem_mib"]
    big = measure(Tiny(alloc_mib=BIG_MIB), inputs, targets, CPU, warmup=1, repeats=2)
    assert big["peak_mem_mib"] >= 0.75 * BIG_MIB
    assert small < 0.25 * BIG_MIB


@pytest.mark.parametrize("clear_refs", [True, False], ids=["VmHWM", "sampled"])
def test_peak_memory_of_a_block(monkeypatch, clear_refs):
    if not clear_refs:
        monkeypatch.setattr(measure_module, "_reset_peak_rss", lambda: False)
    with PeakMemory(CPU) as memory:
        held = torch.ones(BIG_MIB * 2**18)  # BIG_MIB MiB, touched
        time.sleep(0.2)
        del held
    assert 0.75 * BIG_MIB <= memory.peak_mib < 2 * BIG_MIB
    assert memory.reserved_mib is None


def busy_utilization(seconds: float = 0.2) -> Utilization:
    with Utilization(CPU) as busy:  # one Python thread spinning
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass
    return busy


def test_cpu_utilization_is_process_time_over_wall_time_and_threads(monkeypatch):
    with Utilization(CPU) as idle:
        time.sleep(0.2)
    busy = busy_utilization()
    assert idle.kind == busy.kind == "cpu-process"
    assert 0 <= idle.pct < 5
    assert idle.pct < busy.pct <= 105  # 5%: process and wall clocks tick differently
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert busy_utilization().pct <= 25 * 1.05  # one busy thread of four


def test_measure_rejects_bad_counts():
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        measure(Tiny(), *batch(), CPU, repeats=0)
    with pytest.raises(ValueError, match="warmup must be >= 0"):
        measure(Tiny(), *batch(), CPU, warmup=-1)


def test_resolve_device(monkeypatch):
    assert resolve_device("cpu") == CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == CPU
    with pytest.raises(ValueError, match="--device cuda was asked for but"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="device must be 'auto', 'cpu' or 'cuda'"):
        resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_environment_on_cpu():
    env = environment(CPU)
    assert set(env) >= {  # and the kernel packages, CPU and GPU: tests/test_env.py
        "device", "device_name", "torch_version", "threads", "ssmbench_version", "git_commit",
        "python_version", "cuda_version", "hostname",
    }  # fmt: skip
    assert env["device"] == "cpu"
    assert env["threads"] == torch.get_num_threads()
    assert env["torch_version"] == torch.__version__
    assert env["git_commit"] is None or re.fullmatch(r"[0-9a-f]{4,}(-dirty)?", env["git_commit"])


def test_environment_records_the_openmp_wait_policy(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert environment(CPU)["omp_wait_policy"] == "ACTIVE"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    assert environment(CPU)["omp_wait_policy"].startswith("unset")


def test_git_commit_names_the_checkout_of_the_package(tmp_path, monkeypatch):
    package = tmp_path / "src" / "ssmbench"
    (package / "experiment").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    monkeypatch.setattr(measure_module, "__file__", str(package / "experiment" / "measure.py"))
    assert measure_module._git_commit() is None  # not a git checkout

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        command = ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args]
        return subprocess.run(command, cwd=tmp_path, check=True, capture_output=True, text=True)

    git("init", "-q")
    assert measure_module._git_commit() is None  # package not tracked
    git("add", ".")
    git("commit", "-q", "-m", "first")
    commit = git("rev-parse", "--short", "HEAD").stdout.strip()
    assert measure_module._git_commit() == commit
    (package / "__init__.py").write_text("changed = True\n")
    assert measure_module._git_commit() == commit + "-dirty"


def test_bench_measures_each_model_and_records_failures(monkeypatch):
    copy2 = task_section(n_tokens=2)
    rows = bench(["lstm"], [8], copy2, batch_size=2, device="cpu", warmup=0, repeats=1)
    [row] = rows
    assert row["status"] == "done" and row["error"] is None
    assert row["model"] == "lstm" and row["seq_len"] == 8 and row["params"] > 0
    assert row["train_ms"] > 0 and row["device"] == "cpu" and row["scan_backend"] is None
    assert (row["display_name"], row["family"], row["state_size"]) == ("LSTM", "rnn", 2 * 64)

    outcomes = iter(
        [torch.OutOfMemoryError("out of memory, pretend"), RuntimeError("broken, pretend"), None]
    )

    def failing(model, *args, **kwargs):
        outcome = next(outcomes)
        if outcome is not None:
            raise outcome
        return dict.fromkeys(MEASURES, 1.0)

    monkeypatch.setattr(bench_module, "measure", failing)
    seen = []
    rows = bench(["lstm", "gated-mlp", "mamba-s6"], [8], copy2, device="cpu", on_row=seen.append)
    assert seen == rows
    assert [(r["model"], r["status"]) for r in rows] == [
        ("lstm", "oom"), ("gated-mlp", "failed"), ("mamba-s6", "done"),
    ]  # fmt: skip
    assert "out of memory, pretend" in rows[0]["error"] and rows[0]["train_ms"] is None
    assert rows[1]["error"] == "RuntimeError: broken, pretend"
    assert rows[2]["scan_backend"] == resolve_backend(CPU)
    with pytest.raises(ValueError, match="unknown model"):
        bench(["no-such-model"], [8])
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        bench(["lstm"], [8], repeats=0)
    with pytest.raises(ValueError, match="at least one model and one length"):
        bench(["lstm"], [])


def bench_args(**changes) -> argparse.Namespace:
    """`ssmbench bench`'s arguments: the parser's defaults, a small shape, then `changes`."""
    defaults = vars(_parser().parse_args(["bench"]))
    args = dict(models=["lstm"], lengths=[8], n_tokens=2, batch_size=2, device="cpu", repeats=1,
                threads=None, task=None, task_param=None)  # fmt: skip
    return argparse.Namespace(**{**defaults, **args, **changes})


def test_bench_command_checks_its_arguments_then_prints_tables_or_json(capsys):
    with pytest.raises(ValueError, match="unknown model"):
        validate_bench_args(bench_args(models=["no-such-model"]))
    with pytest.raises(ValueError, match="seq_len: Input should be greater than 0"):
        validate_bench_args(bench_args(lengths=[0]))
    with pytest.raises(ValueError, match="--threads must be >= 1"):
        validate_bench_args(bench_args(threads=0))
    validate_bench_args(bench_args())
    run_bench_command(bench_args())
    out, err = capsys.readouterr()
    assert "| lstm | 8 |" in out and "lstm at 8: done, train" in err
    run_bench_command(bench_args(json=True))
    [row] = json.loads(capsys.readouterr().out)
    assert row["model"] == "lstm" and row["status"] == "done"


def test_bench_times_any_registered_task_named_as_run_names_it(monkeypatch, capsys):
    shapes = []

    def recording(model, inputs, labels, *args, **kwargs):
        shapes.append((tuple(inputs.shape), int((labels != -100).sum())))
        return measure(model, inputs, labels, *args, **kwargs)

    monkeypatch.setattr(bench_module, "measure", recording)
    mqar = task_section("mqar", num_kv_pairs=2, vocab_size=32)
    [row] = bench(["lstm"], [16], mqar, batch_size=3, device="cpu", warmup=0, repeats=1)
    assert row["status"] == "done", row["error"]
    assert (row["task"], row["task_key"], row["vocab_size"]) == ("mqar", mqar.key, 32)
    assert row["n_tokens"] is None and shapes[0][0] == (3, 16)
    # the CLI's --task/--task-param read as `run` reads them; --n-tokens is selective copying's
    args = bench_args(task="mqar", task_param=[("num_kv_pairs", 2), ("vocab_size", 32)],
                      n_tokens=None, lengths=[16], json=True)  # fmt: skip
    validate_bench_args(args)
    run_bench_command(args)
    [row] = json.loads(capsys.readouterr().out)
    assert row["task_key"] == mqar.key and row["status"] == "done"
    assert task_section(n_tokens=2).key == "selective-copy-M2-V16"
    assert bench_task(bench_args(n_tokens=None)).key == "selective-copy-M16-V16"  # the default
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        validate_bench_args(bench_args(task="nope"))
    with pytest.raises(ValueError, match="mqar"):
        validate_bench_args(bench_args(task="mqar", task_param=[("bogus", 1)], n_tokens=None))
    with pytest.raises(ValueError, match="n_tokens"):
        validate_bench_args(bench_args(task="mqar"))  # --n-tokens belongs to copying tasks


def row(model: str, seq_len: int, train_ms: float, peak_mem_mib: float, **extra) -> dict:
    return {
        "model": model, "seq_len": seq_len, "train_ms": train_ms, "peak_mem_mib": peak_mem_mib,
        "status": "done", **extra,
    }  # fmt: skip


def test_study_ratios_divide_and_skip_missing_models():
    rows = [
        row("mamba-s6", 256, 30.0, 50.0),
        row("mamba-s4d-real", 256, 10.0, 20.0),
        row("s6", 256, 8.0, 9.0),  # no s4d-real: skipped
        row("s4", 256, 1.0, 1.0, status="failed"),  # failed rows don't count
        row("s4-lowrank", 256, 1.0, 1.0),
        row("mamba-s6", 100, 6.0, 4.0),
        row("mamba-s4d-real", 100, 4.0, 4.0),
    ]
    ratios = study_ratios(rows)
    summary = [(r["seq_len"], r["numerator"], r["metric"], r["ratio"]) for r in ratios]
    assert summary == [
        (100, "mamba-s6", "train_ms", 1.5),
        (100, "mamba-s6", "peak_mem_mib", 1.0),
        (256, "mamba-s6", "train_ms", 3.0),
        (256, "mamba-s6", "peak_mem_mib", 2.5),
    ]
    assert [r["study"] for r in ratios[:2]] == [None, None]  # the study has no length 100
    assert ratios[2]["study"] == pytest.approx(32.6 / 6.37)
    assert ratios[3]["study"] == pytest.approx(4911.7 / 895.7)
    assert [(r["target"], r["meets_target"]) for r in ratios[2:]] == [(3.0, True), (2.0, False)]
    with pytest.raises(ValueError, match="two results for mamba-s6 at seq_len 256"):
        study_ratios([*rows, row("mamba-s6", 256, 1.0, 1.0)])


def test_study_numbers_give_the_published_ratios():
    def published(top, bottom, metric):
        return [round(bench_module.STUDY[metric][top][n] / bench_module.STUDY[metric][bottom][n], 1)
                for n in (256, 512, 784)]  # fmt: skip

    assert published("mamba-s6", "mamba-s4d-real", "train_ms") == [5.1, 6.7, 6.9]
    assert published("mamba-s6", "mamba-s4d-real", "peak_mem_mib") == [5.5, 7.2, 7.1]
    assert published("s6", "s4d-real", "train_ms") == [3.8, 5.4, 5.9]
    assert published("s6", "s4d-real", "peak_mem_mib") == [3.9, 5.8, 5.7]
    assert published("s4", "s4-lowrank", "train_ms") == [31.9, 43.9, 65.5]


def test_growth_is_longest_over_shortest():
    rows = [
        row("mamba-s6", 256, 10.0, 1.0),
        row("mamba-s6", 512, 20.0, 1.0),
        row("mamba-s6", 784, 40.0, 1.0),
        row("lstm", 256, 5.0, 1.0),  # one length only: skipped
        row("s6", 64, 2.0, 1.0),
        row("s6", 128, 3.0, 1.0),
    ]
    found = {g["model"]: g for g in growth(rows)}
    assert set(found) == {"mamba-s6", "s6"}
    mamba = found["mamba-s6"]
    assert (mamba["short_len"], mamba["long_len"], mamba["growth"]) == (256, 784, 4.0)
    assert mamba["study"] == pytest.approx(76.23 / 32.6)
    assert (mamba["target"], mamba["meets_target"]) == (3.5, False)
    assert found["s6"]["growth"] == 1.5 and found["s6"]["target"] is None


def full_row(model: str, seq_len: int, device: str, train_ms: float) -> dict:
    return {
        "model": model, "seq_len": seq_len, "task_key": "selective-copy-M16-V16", "n_tokens": 16,
        "batch_size": 64, "warmup": 3,
        "repeats": 20, "params": 1000, "train_ms": train_ms, "train_ms_iqr": 0.5, "infer_ms": 1.0,
        "infer_ms_iqr": 0.1, "peak_mem_mib": 12.5, "reserved_mem_mib": None, "util_pct": 40.0,
        "util_kind": "cpu-process", "scan_backend": None, "status": "done", "error": None,
        "device": device, "device_name": "Some Chip", "torch_version": "2.x", "threads": 2,
        "ssmbench_version": "0.1.0", "git_commit": None,
    }  # fmt: skip


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_format_bench_names_units_and_never_calls_cpu_figures_gpu(device):
    rows = [full_row("s6", 256, device, 6.0), full_row("s4d-real", 256, device, 2.0)]
    rows += [full_row("s6", 784, device, 12.0), full_row("s4d-real", 784, device, 3.0)]
    failed = {**full_row("lstm", 256, device, 0.0), "train_ms": None, "status": "oom"}
    rows.append({**failed, "error": "OutOfMemoryError: tried | to\nallocate"})
    text = format_bench(rows, study_ratios(rows), growth(rows))
    header, _, *lines = text.split("\n\n")[1].split("\n")
    assert lines[-1].startswith("| lstm | 256 |") and "oom: OutOfMemoryError: tried" in lines[-1]
    assert all(len(re.split(r"(?<!\\)\|", line)) == header.count("|") + 1 for line in lines)
    for unit in ("train (ms)", "infer (ms)", "(MiB", "(%,", "S6 / S4D Real", "3.00", "2.00"):
        assert unit in text
    assert "Some Chip" in text and "threads: 2" in text and "scan backend" in text
    gpu_words = ("allocated", "GPU NVML", "reserved (MiB)")
    cpu_words = ("RSS above baseline", "CPU process")
    shown, hidden = (gpu_words, cpu_words) if device == "cuda" else (cpu_words, gpu_words)
    assert all(word in text for word in shown)
    assert not any(word in text for word in hidden)
    with pytest.raises(ValueError, match="several devices"):
        format_bench([*rows, full_row("lstm", 256, "other", 1.0)], [], [])


def test_measured_training_step_is_the_cells_own(monkeypatch):
    """measure() times the trainer's train_step with the cell's optimizer, weight decay,
    clipping and warm-up, not a fixed Adam."""
    import ssmbench.experiment.measure as measure_module
    from ssmbench.experiment.config import TrainConfig

    hp = TrainConfig(optimizer="adamw", lr=2e-3, weight_decay=0.1, grad_clip=0.5, warmup_steps=7)
    seen: list = []
    real_step, real_optimizer = measure_module.train_step, measure_module.make_optimizer

    def spy_step(model, optimizer, x, y, given, step):
        seen.append((type(optimizer).__name__, given, step))
        return real_step(model, optimizer, x, y, given, step)

    monkeypatch.setattr(measure_module, "train_step", spy_step)
    monkeypatch.setattr(measure_module, "make_optimizer", real_optimizer)
    measure(Tiny(), *batch(), CPU, warmup=1, repeats=2, hp=hp)
    assert seen and all(name == "AdamW" and given is hp for name, given, _ in seen)
    assert [step for *_, step in seen][-3:] == [0, 1, 2]  # warm-up counts from the first step


def test_the_crossover_is_the_shortest_length_from_which_a_model_stays_faster():
    def rows(model, times):
        return [{"model": model, "seq_len": n, "train_ms": t, "status": "done"}
                for n, t in zip((64, 256, 1024, 4096), times, strict=True)]  # fmt: skip

    measured = (
        rows("transformer", [1.0, 4.0, 16.0, 64.0])
        + rows("late", [2.0, 5.0, 8.0, 16.0])  # faster from 1024 on
        + rows("dips", [0.5, 5.0, 8.0, 16.0])  # faster at 64, slower at 256: from 1024
        + rows("never", [2.0, 8.0, 32.0, 65.0])
        + rows("always", [0.5, 1.0, 2.0, 4.0])
    )
    measured.append({"model": "late", "seq_len": 8192, "train_ms": 1.0, "status": "done"})
    assert crossover(measured) == {"late": 1024, "dips": 1024, "never": None, "always": 64}
    decode = [{"model": m, "prompt": p, "ms_per_token": t, "status": "done"}
              for m, p, t in [("transformer", 128, 1.0), ("mamba", 128, 2.0),
                              ("transformer", 1024, 4.0), ("mamba", 1024, 2.0)]]  # fmt: skip
    assert crossover(decode, "ms_per_token", "prompt") == {"mamba": 1024}
