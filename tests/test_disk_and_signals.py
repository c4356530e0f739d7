"""A full disk, links where ssmbench keeps its files, and SIGTERM from a scheduler (issue 22).

A full disk (injected where the write happens, or real through RLIMIT_FSIZE) ends a run with one
line naming the file and the free space, exit 1, the store consistent and no cell recorded as
failed; the rerun after space is freed finishes every cell exactly once. A link or a special
file where ssmbench writes its own is refused with one line, exit 2, and nothing outside the
folder changes. SIGTERM stops a run as SIGINT does: exit 130, lock released, resumable.
"""

import dataclasses
import errno
import hashlib
import os
import resource
import signal
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest
import torch

import ssmbench.experiment.sweep as sweep
from ssmbench.cli import main
from ssmbench.experiment.cell import checkpoint_path, job_id, run_job
from ssmbench.experiment.config import load_config
from ssmbench.experiment.lock import LOCKFILE, folder_lock
from ssmbench.experiment.results import CellResult
from ssmbench.experiment.store import FILENAME, Store
from ssmbench.experiment.train import Checkpoint
from ssmbench.files import ForeignFile, atomic_write

MODELS, LENGTHS = "lstm", "8,12"  # two cells of 40 steps, checkpoints at 20 and 40
EVALS = [10, 20, 30, 40]


@pytest.fixture
def no_costs(tmp_path) -> Path:
    path = tmp_path / "no-costs.yaml"
    path.write_text("measure: {enabled: false}\n")  # training is what these tests are about
    return path


def run_args(out: Path, config: Path, *extra: str) -> list[str]:
    return ["run", "--preset", "smoke", "--config", str(config), "--models", MODELS,
            "--lengths", LENGTHS, "--out", str(out), *extra]  # fmt: skip


def cells_of(out: Path) -> dict[str, dict]:
    with Store(out / FILENAME, readonly=True) as store:
        rows = {r["id"]: r for r in store.rows()}
        curves = store.curves()
    return {cell_id: {**row, "evals": [p["step"] for p in curves.get(cell_id, [])]}
            for cell_id, row in rows.items()}  # fmt: skip


def one_error_line(capsys, code: int, expected_code: int) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("ssmbench: error:")]
    assert code == expected_code, err
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


class InProcess:
    """The local executor's events, each job run in this process: injected faults reach it."""

    def run(self, cells, out_dir, emit, kind="train") -> None:
        for cell in cells:
            name = job_id(kind, cell)
            emit("start", name, None)
            progress = lambda p, name=name: emit("progress", name, p)  # noqa: E731
            emit("result", name, run_job(kind, cell, out_dir, progress))


@pytest.fixture
def in_process(monkeypatch):
    monkeypatch.setattr(sweep, "make_executor", lambda config, alone=False: InProcess())


def fill_disk_at(monkeypatch, where: str, after: int = 0) -> None:
    """fsync of a file whose path holds `where` fails as on a full disk, from its `after + 1`-th
    call on (atomic_write syncs every file it writes before renaming it into place)."""
    real, synced = os.fsync, []

    def fsync(fd: int) -> None:
        if where in os.readlink(f"/proc/self/fd/{fd}"):
            synced.append(fd)
            if len(synced) > after:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def fill_store(monkeypatch) -> None:
    """The store cannot grow from the first result on (SQLite's max_page_count), and the result
    is larger than the space left in its pages: SQLite's own 'database or disk is full'."""
    real = Store.finish

    def finish(self: Store, cell_id: str, result: CellResult) -> None:
        pages = self.db.execute("PRAGMA page_count").fetchone()[0]
        self.db.execute(f"PRAGMA max_page_count = {pages}")
        large = {**(result.metrics or {}), "padding": "x" * 65_536}
        real(self, cell_id, dataclasses.replace(result, metrics=large))

    monkeypatch.setattr(Store, "finish", finish)


FULL_DISKS = {  # where the disk fills: injection, the file named, its reason
    "checkpoint": (lambda mp: fill_disk_at(mp, "/checkpoints/", after=1), "checkpoints/lstm_",
                   "No space left on device"),
    "store": (fill_store, FILENAME, "database or disk is full"),
    "report": (lambda mp: fill_disk_at(mp, "/.report.md."), "report.md", "No space left"),
}  # fmt: skip


@pytest.mark.parametrize("where", list(FULL_DISKS))
def test_a_full_disk_ends_with_one_line_and_the_rerun_finishes_every_cell_once(
    where, tmp_path, no_costs, in_process, capsys, monkeypatch
):
    fill, named, reason = FULL_DISKS[where]
    out = tmp_path / "out"
    fill(monkeypatch)
    line = one_error_line(capsys, main(run_args(out, no_costs)), 1)
    assert f"cannot write {out}" in line and named in line and reason in line, line
    assert line.endswith(" free)"), line
    with sqlite3.connect(out / FILENAME) as db:
        assert db.execute("PRAGMA quick_check").fetchone() == ("ok",)
    before = cells_of(out)
    assert all(r["status"] in ("done", "running") and r["error"] is None for r in before.values())
    assert not list(out.rglob("*.tmp")), "no half-written file left"
    if where == "checkpoint":  # the checkpoint of step 20 survived the failed one of step 40
        cell_id = next(iter(before))
        saved = Checkpoint.load(checkpoint_path(out, cell_id), cell_id, torch.device("cpu"))
        assert saved.step == 20

    monkeypatch.undo()  # space is freed
    monkeypatch.setattr(sweep, "make_executor", lambda config, alone=False: InProcess())
    assert main(run_args(out, no_costs)) == 0
    after = cells_of(out)
    assert len(after) == 2 and all(r["status"] == "done" for r in after.values())
    assert all(r["evals"] == EVALS for r in after.values()), "one curve point per eval"
    for cell_id, row in after.items():  # a cell the disk stopped started twice, the others once
        stopped = before.get(cell_id, {}).get("status") == "running"
        assert row["attempts"] == (2 if stopped else 1), (cell_id, row)
    assert (out / "report.md").exists()


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))  # a checkpoint is ~70 kB


@pytest.mark.slow
def test_a_real_write_refused_by_the_kernel_through_the_local_executor(tmp_path, no_costs):
    """RLIMIT_FSIZE makes the kernel refuse a worker's checkpoint (EFBIG; Python ignores
    SIGXFSZ): one line, exit 1; once lifted, the rerun finishes every cell once."""
    out, command = tmp_path / "out", ["ssmbench", *run_args(tmp_path / "out", no_costs)]
    starved = subprocess.run(command, capture_output=True, text=True, timeout=300,
                             preexec_fn=_limit_file_size)  # fmt: skip
    errors = [line for line in starved.stderr.splitlines() if "error" in line]
    assert starved.returncode == 1 and "Traceback" not in starved.stderr, starved.stderr
    assert len(errors) == 1 and f"cannot write {out}/checkpoints/" in errors[0], errors
    assert "File too large" in errors[0] and errors[0].endswith(" free)")
    assert {r["status"] for r in cells_of(out).values()} <= {"running"}

    subprocess.run(command, check=True, capture_output=True, timeout=300)
    rows = cells_of(out).values()
    assert len(rows) == 2 and all(r["status"] == "done" and r["evals"] == EVALS for r in rows)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


FOREIGN = {  # what stands where ssmbench keeps its own file, and what the message calls it
    "lock file a link": (LOCKFILE, lambda p, victim: p.symlink_to(victim), "a symbolic link"),
    "lock file a folder": (LOCKFILE, lambda p, victim: p.mkdir(), "a folder"),
    "store a link": (FILENAME, lambda p, victim: p.symlink_to(victim), "a symbolic link"),
    "journal a link": (FILENAME + "-journal", lambda p, v: p.symlink_to(v), "a symbolic link"),
    "report a link": ("report.md", lambda p, victim: p.symlink_to(victim), "a symbolic link"),
    "report a pipe": ("report.md", lambda p, victim: os.mkfifo(p), "a named pipe"),
    "checkpoints a link": ("checkpoints", lambda p, v: p.symlink_to(v.parent), "a symbolic link"),
    "figures a link": ("img", lambda p, victim: p.symlink_to(victim.parent), "a symbolic link"),
    "checkpoint a link": (
        "checkpoints/lstm_selective-copy-M2-V8_L8_lr0.003_wd0_s0.pt",
        lambda p, victim: (p.parent.mkdir(), p.symlink_to(victim)),
        "a symbolic link",
    ),
}


@pytest.mark.parametrize("case", list(FOREIGN))
def test_a_link_or_special_file_where_ssmbench_writes_is_refused(case, tmp_path, capsys):
    name, plant, kind = FOREIGN[case]
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "precious"
    victim.write_text("not ssmbench's\n")
    out = tmp_path / "out"
    out.mkdir()
    plant(out / name, victim)
    before = (digest(victim), victim.stat().st_mtime_ns, sorted(os.listdir(outside)))
    argv = ["run", "--preset", "smoke", "--models", "lstm", "--lengths", "8", "--out", str(out)]
    line = one_error_line(capsys, main(argv), 2)
    assert f"{out / name} is {kind}" in line and "move it away" in line, line
    assert (digest(victim), victim.stat().st_mtime_ns, sorted(os.listdir(outside))) == before
    assert not (out / FILENAME).exists() or name == FILENAME, "nothing written"


def test_report_refuses_a_link_in_place_of_its_report(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    with Store(out / FILENAME) as store:
        store.set_meta(preset="smoke", config=load_config("smoke").model_dump())
    victim = tmp_path / "precious"
    victim.write_text("x")
    (out / "report.md").symlink_to(victim)
    line = one_error_line(capsys, main(["report", str(out)]), 2)
    assert "is a symbolic link" in line and "--to" in line
    assert victim.read_text() == "x" and not (out / "img").exists()


def test_atomic_write_never_replaces_a_link_or_writes_through_it(tmp_path):
    victim = tmp_path / "precious"
    victim.write_text("x")
    (tmp_path / "link").symlink_to(victim)
    with pytest.raises(ForeignFile, match="is a symbolic link"):
        atomic_write(tmp_path / "link", lambda f: f.write(b"y"))
    assert victim.read_text() == "x" and (tmp_path / "link").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "precious"]


class TerminatedAtStart:
    """Sends this process SIGTERM when its first job starts, as `timeout` or `kill` would."""

    def run(self, cells, out_dir, emit, kind="train") -> None:
        assert signal.getsignal(signal.SIGTERM) is signal.default_int_handler, "not handled"
        emit("start", job_id(kind, cells[0]), None)
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)  # handled as the call returns
        raise AssertionError("SIGTERM did not interrupt the sweep")


def test_sigterm_to_the_driver_interrupts_like_ctrl_c(tmp_path, no_costs, capsys, monkeypatch):
    monkeypatch.setattr(sweep, "make_executor", lambda config, alone=False: TerminatedAtStart())
    handler = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "out"
    assert main(run_args(out, no_costs)) == 130
    assert "interrupted: rerun the same command to resume" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is handler, "the handler is restored"
    with folder_lock(out):  # released
        pass
    assert {r["status"] for r in cells_of(out).values()} == {"running"}


@pytest.mark.slow
def test_sigterm_to_every_process_checkpoints_stops_and_resumes(tmp_path, no_costs):
    """As SLURM or Kubernetes preempt: SIGTERM to the driver and its workers at once."""
    out = tmp_path / "out"
    command = ["ssmbench", *run_args(out, no_costs, "--steps", "200", "--workers", "2",
                                     "--log-every", "0")]  # fmt: skip
    run = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True)
    seen = []
    for line in run.stderr:  # a progress line: the workers are in their training loops
        seen.append(line)
        if "step 10/200" in line:
            os.killpg(run.pid, signal.SIGTERM)
            break
    err = "".join(seen) + run.stderr.read()
    assert run.wait(timeout=120) == 130, err
    assert "interrupted: rerun the same command to resume" in err
    assert "leaked" not in err and "Traceback" not in err, err
    interrupted = cells_of(out)
    assert {r["status"] for r in interrupted.values()} == {"running"}
    assert any(checkpoint_path(out, cell_id).exists() for cell_id in interrupted)
    with folder_lock(out):  # released
        pass

    subprocess.run(command, check=True, capture_output=True, timeout=300)
    rows = cells_of(out).values()
    assert len(rows) == 2 and all(r["status"] == "done" for r in rows)
    assert all(r["evals"] == list(range(10, 201, 10)) for r in rows), "resumed, none repeated"
