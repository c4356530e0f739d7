"""Hostile use: two writers on one folder, damaged stores and checkpoints, markup in messages.

Every case asserts the exit code, one line on stderr, and that the store and every finished
result are byte-for-byte unchanged."""

import hashlib
import os
import sys
import threading
from pathlib import Path

import pytest

from ssmbench.cli import main
from ssmbench.experiment.config import load_config
from ssmbench.experiment.lock import LOCKFILE, folder_lock
from ssmbench.experiment.results import CellResult, Status
from ssmbench.experiment.store import FILENAME, Store

SMOKE = ["run", "--preset", "smoke", "--models", "lstm", "--lengths", "8"]


def snapshot(folder: Path) -> dict[str, str]:
    """Hash of every file but the lock file (which only ever holds a PID)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != LOCKFILE
    }


def one_line(capsys, code_expected: int, code: int) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == code_expected, captured.err
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture
def finished(tmp_path):
    """A folder whose store holds one finished (done) cell of the smoke lstm config."""
    out = tmp_path / "finished"
    out.mkdir()
    config = load_config("smoke", overrides={"models": ["lstm"], "lengths": [8]})
    cell = config.cells()[0]
    with Store(out / FILENAME) as store:
        store.set_meta(fingerprint=config.fingerprint(), preset="smoke", config=config.model_dump())
        store.mark_running(cell.id, cell.model_dump())
        store.finish(
            cell.id,
            CellResult(
                Status.DONE,
                metrics={"accuracy": 0.75, "steps": 40},
                curve=[{"step": 10, "train_loss": 1.0, "val_accuracy": 0.5, "elapsed_s": 0.1}],
            ),
        )
    return out


def test_a_second_run_on_a_held_folder_exits_2_naming_the_holder(finished, capsys):
    before = snapshot(finished)
    with folder_lock(finished):
        line = one_line(capsys, 2, main([*SMOKE, "--out", str(finished)]))
    assert f"PID {os.getpid()}" in line and "--wait" in line
    assert snapshot(finished) == before


def test_wait_blocks_until_the_holder_ends(tmp_path):
    entered = threading.Event()

    def second() -> None:
        with folder_lock(tmp_path, wait=True):
            entered.set()

    with folder_lock(tmp_path):
        waiter = threading.Thread(target=second)
        waiter.start()
        assert not entered.wait(0.5), "entered while the folder was held"
    waiter.join(timeout=30)
    assert entered.is_set()


def test_the_lock_is_released_when_its_holder_dies(tmp_path):
    import subprocess

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from ssmbench.experiment.lock import folder_lock\n"
            "with folder_lock(sys.argv[1]):\n print('held', flush=True); time.sleep(600)\n",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    from ssmbench.experiment.config import ConfigError

    with pytest.raises(ConfigError, match=f"PID {holder.pid}"), folder_lock(tmp_path):
        pass
    holder.kill()
    holder.wait()
    with folder_lock(tmp_path):  # the kernel dropped the dead holder's lock
        pass


def test_a_finished_result_is_never_reset_by_a_restart(finished):
    before = snapshot(finished)
    config = load_config("smoke", overrides={"models": ["lstm"], "lengths": [8]})
    cell = config.cells()[0]
    with Store(finished / FILENAME) as store:
        row = store.rows()[0]
        store.mark_running(cell.id, cell.model_dump())  # a second run starting the same cell
        store.finish(cell.id, CellResult(Status.FAILED, error="killed"))
        assert store.rows() == [row] and store.status(cell.id) == Status.DONE
    with Store(finished / FILENAME) as store:
        store.clear()  # what --force does
        store.mark_running(cell.id, cell.model_dump())
        assert store.status(cell.id) == Status.RUNNING
    assert snapshot(finished) != before


@pytest.mark.slow
def test_two_runs_started_together_one_runs_the_other_exits_2(tmp_path):
    import subprocess

    command = ["ssmbench", "run", "--preset", "smoke", "--out", str(tmp_path / "out")]
    runs = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(r.pid, r.wait(timeout=600), r.stderr.read()) for r in runs]
    assert sorted(code for _, code, _ in results) == [0, 2], results
    (winner, _, _), (_, _, refused) = sorted(results, key=lambda r: r[1])
    assert refused.count("\n") == 1 and f"PID {winner}" in refused
    with Store(tmp_path / "out" / FILENAME, readonly=True) as store:
        assert {r["status"] for r in store.rows()} == {"done"}
        assert all(r["attempts"] == 1 for r in store.rows())
