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
    from ssmbench.experiment.train import Diverged
    from ssmbench.models.registry import restored_registry

    sys.path.insert(0, os.path.dirname(__file__))
    with restored_registry():  # the fault models must not leak into other tests
        sys.modules.pop("faulty_models", None)
        import faulty_models  # noqa: F401

        with pytest.raises(Diverged, match="step 1"):
            train(cell("fault-nan", steps=20), CPU)
    sys.modules.pop("faulty_models", None)


@pytest.mark.slow
def test_mamba_s6_learns_selective_copying_and_gated_mlp_cannot():
    """A fixed budget of 700 steps: Mamba-S6 >= 0.9, the token-blind gated MLP <= 0.2."""
    torch.set_num_threads(2)
    results = {}
    for model, steps in (("mamba-s6", 700), ("gated-mlp", 200)):
        config = load_config(
            "quick",
            overrides={  # d_model 64, 2 layers, batch 32, lr 3e-3
                "models": [model],
                "lengths": [32],
                "train": {"max_steps": steps, "val_size": 256, "test_size": 512},
            },
        )
        results[model] = train(config.cells()[0], CPU)[1].accuracy
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
