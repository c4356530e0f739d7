import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ssmbench.experiment.config import load_config
from ssmbench.experiment.train import EarlyStopping, train

CPU = torch.device("cpu")


def feed(stopper: EarlyStopping, stream: list[tuple[int, float]]) -> tuple[int, str] | None:
    for step, accuracy in stream:
        stopper.update(step, accuracy)
        reason = stopper.stop_reason(step)
        if reason:
            return step, reason
    return None


def test_early_stopping_waits_patience_steps_after_the_best():
    stream = [
        (100, 0.2),
        (200, 0.5),
        (300, 0.4),
        (400, 0.5),
        (500, 0.45),
        (600, 0.49),
        (700, 0.51),
        (800, 0.3),
    ]
    stopper = EarlyStopping(patience=450)
    assert feed(stopper, stream) is None  # 0.51 at 700 restarted the count
    assert (stopper.best, stopper.best_step) == (0.51, 700)
    stopper = EarlyStopping(patience=300)
    stopped = feed(stopper, stream)
    assert stopped is not None and stopped[0] == 500  # best 0.5 at 200, no gain by 500
    assert "300 steps" in stopped[1]


def test_equal_accuracy_is_no_improvement():
    stopper = EarlyStopping(patience=200)
    assert feed(stopper, [(100, 0.5), (200, 0.5), (300, 0.5)]) == (
        300,
        "no validation gain for 200 steps",
    )


def test_target_accuracy_stops_at_once():
    stopper = EarlyStopping(patience=None, target=0.9)
    assert feed(stopper, [(100, 0.5), (200, 0.89), (300, 0.95), (400, 1.0)])[0] == 300
    assert feed(EarlyStopping(patience=None), [(i, 0.1) for i in range(10_000)]) is None


def cell(model="s4d-real", steps=60, **train):
    config = load_config(
        "smoke",
        overrides={
            "models": [model],
            "lengths": [16],
            "train": {"max_steps": steps, "eval_every": 10, "checkpoint_every": 10, **train},
        },
    )
    return config.cells()[0]


def test_best_weights_are_scored_and_curve_recorded():
    _, out = train(cell(steps=50), CPU)
    assert out.steps == 50 and [p["step"] for p in out.curve] == [10, 20, 30, 40, 50]
    assert out.best_val_accuracy == max(p["val_accuracy"] for p in out.curve)
    assert out.best_step in [p["step"] for p in out.curve]
    assert 0 <= out.exact_match <= out.accuracy <= 1


def test_patience_and_time_budget_end_training():
    _, out = train(cell(steps=10_000, patience=20), CPU)
    assert out.steps < 10_000 and "no validation gain" in out.stop_reason
    _, out = train(cell(steps=10_000, time_budget_s=1.0, patience=None), CPU)
    assert out.steps < 10_000 and "time budget" in out.stop_reason


RESUMABLE = """
import sys, torch
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_train import cell
from ssmbench.experiment.train import train
train(cell("mamba-s6", steps=160), torch.device("cpu"), Path(sys.argv[1]))
"""


def test_killed_run_resumes_to_the_same_result(tmp_path):
    checkpoint = tmp_path / "cell.pt"
    script = RESUMABLE.format(tests=os.path.dirname(__file__))
    worker = subprocess.Popen([sys.executable, "-c", script, str(checkpoint)])
    deadline = time.time() + 120
    while time.time() < deadline:
        if checkpoint.exists() and torch.load(checkpoint, weights_only=True)["step"] >= 40:
            break
        assert worker.poll() is None, "worker ended before it could be killed"
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    killed_at = torch.load(checkpoint, weights_only=True)["step"]
    assert 40 <= killed_at < 160

    _, resumed = train(cell("mamba-s6", steps=160), CPU, checkpoint)
    _, straight = train(cell("mamba-s6", steps=160), CPU)
    assert resumed.steps == straight.steps == 160
    assert (resumed.accuracy, resumed.exact_match) == (straight.accuracy, straight.exact_match)
    strip = [{k: v for k, v in p.items() if k != "elapsed_s"} for p in straight.curve]
    assert [{k: v for k, v in p.items() if k != "elapsed_s"} for p in resumed.curve] == strip


def test_diverging_loss_is_reported():
    import faulty_models  # noqa: F401  registers the fault models (conftest unregisters them)

    from ssmbench.experiment.train import Diverged

    with pytest.raises(Diverged, match="step 1"):
        train(cell("fault-nan", steps=20), CPU)


@pytest.mark.slow
def test_mamba_s6_learns_selective_copying_and_gated_mlp_cannot():
    """Within 700 steps Mamba-S6 >= 0.9 (it stops at 97% validation accuracy, usually well
    before), the token-blind gated MLP <= 0.2 after 200."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    results = {}
    try:
        for model, steps in (("mamba-s6", 700), ("gated-mlp", 200)):
            budget = {"max_steps": steps, "val_size": 256, "test_size": 512,
                      "target_accuracy": 0.97}  # fmt: skip
            config = load_config(
                "quick",
                overrides={"models": [model], "lengths": [32], "train": budget},
            )  # d_model 64, 2 layers, batch 32, lr 3e-3
            results[model] = train(config.cells()[0], CPU)[1].accuracy
    finally:
        torch.set_num_threads(threads)  # nothing leaks into the next test
    assert results["mamba-s6"] >= 0.9, results
    assert results["gated-mlp"] <= 0.2, results


def test_checkpoint_save_is_atomic_with_a_unique_temporary_name(tmp_path, monkeypatch):
    from ssmbench.experiment.train import Checkpoint, new_state

    path = tmp_path / "cell.pt"
    state = new_state(cell(steps=10), CPU)
    state.checkpoint().save(path)
    import tempfile

    seen = []
    real_mkstemp = tempfile.mkstemp

    def mkstemp(**kwargs):
        fd, name = real_mkstemp(**kwargs)
        seen.append(Path(name))
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    state.checkpoint().save(path)
    state.checkpoint().save(path)
    assert len(seen) == 2 and seen[0] != seen[1] and all(p.parent == tmp_path for p in seen)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cell.pt"]  # no temporary left
    loaded = Checkpoint.load(path, state.cell.id, CPU)
    assert loaded.step == 0 and loaded.cell == state.cell.id

    def fail(obj, f):
        f.write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", fail)
    with pytest.raises(OSError):
        state.checkpoint().save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cell.pt"]
    assert Checkpoint.load(path, state.cell.id, CPU).step == 0  # the old one is intact


def _other_cell_checkpoint(path):
    from ssmbench.experiment.train import new_state

    new_state(cell(steps=10).model_copy(update={"seed": 1}), CPU).checkpoint().save(path)


def _other_model_checkpoint(path):
    from ssmbench.experiment.train import new_state

    state = new_state(cell("lstm", steps=10), CPU)
    state.cell = cell(steps=10)  # claims to be this cell, but holds an LSTM's weights
    state.checkpoint().save(path)


BAD_CHECKPOINTS = {
    "empty": lambda p: p.write_bytes(b""),
    "random bytes": lambda p: p.write_bytes(os.urandom(4096)),
    "truncated": lambda p: (_other_cell_checkpoint(p), p.write_bytes(p.read_bytes()[:300])),
    "not a checkpoint": lambda p: torch.save({"weights": torch.zeros(3)}, p),
    "another cell's": _other_cell_checkpoint,
    "another model's shapes": _other_model_checkpoint,
}


@pytest.mark.parametrize("damage", list(BAD_CHECKPOINTS))
def test_unusable_checkpoint_is_set_aside_and_the_cell_restarts(tmp_path, damage, capsys):
    checkpoint = tmp_path / "cell.pt"
    BAD_CHECKPOINTS[damage](checkpoint)
    bad = checkpoint.read_bytes()
    warnings = []
    _, healed = train(cell(steps=20), CPU, checkpoint, lambda p: warnings.append(p))
    _, straight = train(cell(steps=20), CPU)
    assert healed.steps == 20 and healed.accuracy == straight.accuracy
    assert [p["step"] for p in healed.curve] == [10, 20]
    lines = [p["warning"] for p in warnings if "warning" in p]
    assert len(lines) == 1 and "cell.pt.corrupt" in lines[0] and "\n" not in lines[0]
    assert (tmp_path / "cell.pt.corrupt").read_bytes() == bad
    assert checkpoint.exists()  # the restarted run saved its own

    checkpoint.write_bytes(b"garbage")  # without a progress channel: one line on stderr
    train(cell(steps=10), CPU, checkpoint)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: checkpoint") and "restarts" in err


class FakeCompiler:
    """A torch.compile backend that runs the traced graph as is, after `delay_s` on its first
    compilation only (a stand-in for inductor's code generation, at no cost)."""

    def __init__(self, delay_s: float = 0.0, error: Exception | None = None) -> None:
        self.delay_s, self.error, self.graphs = delay_s, error, 0

    def __call__(self, graph: torch.fx.GraphModule, example_inputs: list) -> object:
        if self.error is not None:
            raise self.error
        if self.graphs == 0:
            time.sleep(self.delay_s)
        self.graphs += 1
        return graph.forward


def compile_cell(compile: bool = True, model: str = "gated-mlp"):
    config = load_config(
        "smoke",
        overrides={
            "models": [model],
            "lengths": [16],
            "compile": compile,
            "arch": {"d_model": 8, "n_layers": 1},
            "train": {"max_steps": 4, "eval_every": 2, "val_size": 8, "test_size": 8},
            "measure": {"warmup": 3, "repeats": 20},
        },
    )
    return config.cells()[0]


def test_compile_runs_the_model_compiled_and_times_compilation_apart(tmp_path):
    from ssmbench.experiment.cell import measure_cell, run_cell
    from ssmbench.experiment.results import Status

    compiler = FakeCompiler(delay_s=0.5)
    result = run_cell(compile_cell(), tmp_path, compile_backend=compiler)
    assert result.status == Status.DONE, result.error
    assert compiler.graphs >= 1  # the trainer compiled the model with the backend it was given
    assert result.metrics["compiled"] is True and result.metrics["compile_s"] >= 0.5
    assert result.metrics["train_s"] >= result.metrics["compile_s"]  # train_s includes it
    cost = measure_cell(compile_cell(), compile_backend=FakeCompiler(delay_s=0.5))
    assert cost.status == Status.DONE, cost.error
    assert cost.metrics["compiled"] is True and cost.metrics["compile_s"] >= 0.5
    assert cost.metrics["train_ms"] < 500  # the step times exclude the compilation

    eager = FakeCompiler()
    result = run_cell(compile_cell(compile=False), tmp_path, compile_backend=eager)
    assert result.status == Status.DONE and eager.graphs == 0
    assert result.metrics["compiled"] is False and result.metrics["compile_s"] is None
    cost = measure_cell(compile_cell(compile=False), compile_backend=eager)
    assert cost.metrics["compiled"] is False and cost.metrics["compile_s"] is None
    assert eager.graphs == 0


def test_a_compile_failure_fails_the_cell_with_one_line_saying_so(tmp_path):
    from ssmbench.experiment.cell import measure_cell, run_cell
    from ssmbench.experiment.results import Status

    broken = FakeCompiler(error=RuntimeError("inductor unavailable, pretend"))
    for result in (
        run_cell(compile_cell(), tmp_path, compile_backend=broken),
        measure_cell(compile_cell(), compile_backend=broken),
    ):
        assert result.status == Status.FAILED
        assert "\n" not in result.error, result.error
        assert result.error.startswith("torch.compile failed (BackendCompilerFailed")
        assert "inductor unavailable, pretend" in result.error
        assert result.error.endswith("run without --compile")


def test_compile_is_a_config_field_and_a_run_flag():
    from ssmbench.cli import _overrides, _parser

    assert load_config("smoke").compile is False
    args = _parser().parse_args(["run", "--preset", "smoke", "--compile"])
    assert load_config("smoke", overrides=_overrides(args)).compile is True
    args = _parser().parse_args(["run", "--preset", "smoke"])
    assert "compile" not in _overrides(args)  # the preset's (off) stays


@pytest.mark.slow
def test_compile_with_inductor_trains_the_smallest_model(tmp_path):
    """The real backend, where this machine can run it (a C compiler for inductor on CPU)."""
    from ssmbench.experiment.cell import run_cell
    from ssmbench.experiment.results import Status

    result = run_cell(compile_cell(), tmp_path)
    assert result.status == Status.DONE, result.error
    assert result.metrics["compile_s"] > 0


def test_compile_leaves_the_fused_cpp_scan_eager_and_a_compiler_crash_is_one_line(tmp_path):
    from ssmbench.experiment.cell import run_cell
    from ssmbench.experiment.results import Status
    from ssmbench.experiment.train import as_compile_failure

    compiler = FakeCompiler()
    result = run_cell(compile_cell(model="mamba-s6"), tmp_path, compile_backend=compiler)
    assert result.status == Status.DONE, result.error  # dynamo does not trace into the ctypes call
    assert compiler.graphs >= 2 and result.metrics["scan_backend"] == "cpp"  # a graph break

    def dynamo_internal() -> None:  # an error raised inside dynamo's own code
        exec(compile("raise AssertionError('no offset\\nmore')", "/x/torch/_dynamo/b.py", "exec"))

    with pytest.raises(AssertionError) as info:
        dynamo_internal()
    failure = as_compile_failure(info.value)
    assert failure is not None and str(failure).startswith("torch.compile failed (AssertionError")
    assert as_compile_failure(ValueError("the model's own error")) is None


def test_dry_run_estimate_compiles_when_asked_and_counts_the_compile_time(monkeypatch):
    from ssmbench.experiment import estimate

    asked = []

    def fake_measure(*args, compile=False, **kwargs):
        asked.append(compile)
        return {"train_ms": 1.0, "infer_ms": 1.0, "compile_s": 30.0 if compile else None}

    monkeypatch.setattr(estimate, "measure", fake_measure)
    overrides = {"models": ["lstm"], "lengths": [8]}
    [eager] = estimate.estimate(load_config("smoke", overrides=overrides))
    [compiled] = estimate.estimate(load_config("smoke", overrides={**overrides, "compile": True}))
    assert asked == [False, True]
    assert compiled.seconds_per_cell == pytest.approx(eager.seconds_per_cell + 30.0)
