"""The SLURM executor, run through submitit's local executor: the flags reach sbatch; a job killed
midway leaves its cell to the next run, a retry or a requeue, and every cell finishes once."""

import signal
import stat
import sys
from pathlib import Path

import psutil
import pytest
import torch

submitit = pytest.importorskip("submitit", reason="the SLURM executor needs ssmbench[slurm]")

from ssmbench.cli import _parser, _plan_run, main  # noqa: E402
from ssmbench.experiment import sweep  # noqa: E402
from ssmbench.experiment.cell import checkpoint_path  # noqa: E402
from ssmbench.experiment.config import load_config  # noqa: E402
from ssmbench.experiment.executors import slurm  # noqa: E402
from ssmbench.experiment.executors.slurm import SlurmExecutor  # noqa: E402
from ssmbench.experiment.store import FILENAME, Store  # noqa: E402
from ssmbench.experiment.train import Checkpoint  # noqa: E402

STEPS = 300  # about a second of training: far longer than the driver's polls, here 50 ms


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch) -> None:
    """The driver reads the jobs' events every 50 ms: it sees step 20 while the job trains."""
    monkeypatch.setattr(slurm, "POLL_S", 0.05)


def config(**overrides):
    train = {"max_steps": STEPS, "eval_every": 10, "checkpoint_every": 10}
    return load_config("smoke", overrides={"models": ["lstm"], "lengths": [8, 12],
                                           "measure": {"enabled": False}, "train": train,
                                           **overrides})  # fmt: skip


class Signalling(SlurmExecutor):
    """submitit's local executor; the job of `target` gets `signum` once it reports a step 10
    past the first it reported in this start (that first step's checkpoint is saved by then, so
    each start leaves a newer checkpoint). Records the progress steps of each of its starts."""

    def __init__(self, target: str, signum: int | None, **kwargs) -> None:
        super().__init__(cluster="local", **kwargs)
        self.target, self.signum = target, signum
        self.attempts: list[list[int]] = []  # the target's steps, per start
        self.signalled = None

    def run(self, cells, out_dir, emit, kind="train") -> None:
        def watch(event: str, name: str, payload) -> None:
            if name == self.target and event == "start":
                self.attempts.append([])
            if name == self.target and event == "progress" and "step" in payload:
                self.attempts[-1].append(payload["step"])
                first = self.attempts[-1][0]
                if (
                    self.signum is not None
                    and self.signalled is None
                    and payload["step"] >= first + 10
                ):
                    self.signalled = self.running[name].job
                    for task in psutil.Process(int(self.signalled.job_id)).children():
                        task.send_signal(self.signum)  # the job's task, under its controller
            emit(event, name, payload)

        super().run(cells, out_dir, watch, kind)


def rows(out: Path) -> tuple[dict[str, dict], dict[str, list[int]]]:
    with Store(out / FILENAME, readonly=True) as store:
        curves = {cid: [p["step"] for p in curve] for cid, curve in store.curves().items()}
        return {r["id"]: r for r in store.rows()}, curves


EVERY_EVAL = list(range(10, STEPS + 1, 10))


def saved_step(out: Path, cell_id: str) -> int:
    return Checkpoint.load(checkpoint_path(out, cell_id), cell_id, torch.device("cpu")).step


@pytest.mark.slow
def test_a_killed_job_leaves_its_cell_to_the_rerun_or_a_retry_and_every_cell_finishes_once(
    tmp_path,
):
    """Killed with no retries: its cell fails and the next run resumes it from its checkpoint;
    killed again there with one retry: it is sent again, resumes, and finishes."""
    swept = config()
    target, other = (c.id for c in swept.cells())
    sweep.run_sweep(swept, tmp_path, executor=Signalling(target, signal.SIGKILL))
    first, _ = rows(tmp_path)
    assert first[target]["status"] == "failed"
    assert "ended without a result" in first[target]["error"]
    assert first[other]["status"] == "done"
    saved = saved_step(tmp_path, target)

    rerun = Signalling(target, signal.SIGKILL, retries=1)
    sweep.run_sweep(swept, tmp_path, executor=rerun)
    second, curves = rows(tmp_path)
    assert saved >= 10 and len(rerun.attempts) == 2  # killed once more, then sent again
    assert rerun.attempts[0][0] == saved + 10  # resumed from the first run's checkpoint
    assert rerun.attempts[1][0] > rerun.attempts[0][0]  # and the retry from the rerun's
    assert {cid: (r["status"], r["attempts"]) for cid, r in second.items()} == {
        target: ("done", 3),
        other: ("done", 1),
    }
    assert second[other]["ended_at"] == first[other]["ended_at"]  # its result is untouched
    assert curves == {target: EVERY_EVAL, other: EVERY_EVAL}


@pytest.mark.slow
def test_a_preempted_job_is_requeued_and_resumes_from_its_checkpoint(tmp_path):
    swept = config(lengths=[8])
    (target,) = (c.id for c in swept.cells())
    preempter = Signalling(target, signal.SIGUSR2)  # what SLURM sends before preemption
    sweep.run_sweep(swept, tmp_path, executor=preempter)
    done, curves = rows(tmp_path)
    assert {cid: r["status"] for cid, r in done.items()} == {target: "done"}
    assert len(preempter.attempts) == 2 and done[target]["attempts"] == 2  # requeued once
    assert "Requeued job" in preempter.signalled.stdout()
    steps = sum(preempter.attempts, [])
    assert steps == sorted(set(steps)) and preempter.attempts[1][0] > 10  # on from its checkpoint
    assert steps[-1] == STEPS and curves[target] == EVERY_EVAL


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch) -> Path:
    """sbatch and srun on PATH: sbatch keeps the script it is given and says it queued it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = tmp_path / "sbatch-script.sh"
    sbatch = f'cp "$1" {script}; echo "Submitted batch job 42"'
    for name, body in {"srun": "exit 0", "sbatch": sbatch}.items():
        tool = bin_dir / name
        tool.write_text(f"#!/bin/sh\n{body}\n")
        tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path('/bin')}:{Path('/usr/bin')}")
    return script


def test_the_cli_flags_reach_the_sbatch_script(fake_slurm, tmp_path):
    args = _parser().parse_args([
        "run", "--preset", "smoke", "--executor", "slurm", "--slurm-partition", "gpu",
        "--slurm-gpus", "1", "--slurm-time", "30", "--slurm-extra=--account=abc,--exclude=n1,n2",
        "--slurm-extra", "qos=high", "--slurm-extra=--exclusive", "--out", str(tmp_path / "o"),
    ])  # fmt: skip
    swept, _ = _plan_run(args)  # finds the (fake) cluster
    executor = sweep.make_executor(swept)
    assert isinstance(executor, SlurmExecutor) and executor.max_in_flight is None
    assert sweep.make_executor(swept, alone=True).max_in_flight == 1  # costs: one at a time
    executor.submitit_executor(tmp_path / "jobs", swept.cells()).submit(len, "x")
    lines = set(fake_slurm.read_text().splitlines())
    expected = {"--partition=gpu", "--gpus-per-node=1", "--time=30", "--account=abc",
                "--exclude=n1,n2", "--qos=high", "--exclusive", "--signal=USR2@90"}  # fmt: skip
    assert {f"#SBATCH {flag}" for flag in expected} <= lines


def test_gpus_default_to_one_for_cuda_cells_and_none_otherwise(fake_slurm, tmp_path):
    for device, gpus in (("cuda", 1), ("cpu", 0)):
        swept = load_config("smoke", overrides={"executor": "slurm", "device": device})
        sweep.make_executor(swept).submitit_executor(tmp_path / device, swept.cells()).submit(
            len, "x"
        )
        assert f"#SBATCH --gpus-per-node={gpus}" in fake_slurm.read_text().splitlines()


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "needs SLURM's sbatch and srun on PATH"),
        (["--slurm-extra", "account abc"], "is not an sbatch flag"),
    ],
)
def test_bad_slurm_input_is_one_line_and_exit_2(extra, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no SLURM here
    argv = ["run", "--preset", "smoke", "--executor", "slurm", "--out", str(tmp_path / "o"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_without_submitit_the_slurm_executor_says_which_extra_it_needs(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit now fails
    monkeypatch.delitem(sys.modules, "ssmbench.experiment.executors.slurm")
    argv = ["run", "--preset", "smoke", "--executor", "slurm", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    assert 'needs submitit: pip install "ssmbench[slurm]"' in capsys.readouterr().err
