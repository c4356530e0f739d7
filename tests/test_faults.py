"""Fault tolerance of sweeps, under both executors: failing cells are recorded with the right
status while the others finish; reruns retry only unfinished cells; a killed driver loses and
duplicates nothing."""

import os
import select
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from ssmbench.experiment.config import load_config
from ssmbench.experiment.executors.local import LocalExecutor
from ssmbench.experiment.store import FILENAME, Store
from ssmbench.experiment.sweep import run_sweep

FAULTS = {
    "fault-raise": "failed",
    "fault-nan": "diverged",
    "fault-kill": "failed",
    "fault-oom": "oom",
    "lstm": "done",
}
ERRORS = {
    "fault-raise": "injected failure",
    "fault-nan": "nan",
    "fault-kill": "died",
    "fault-oom": "out of memory",
}


def fault_config(executor: str):
    return load_config(
        "smoke",
        overrides={
            "models": list(FAULTS),
            "lengths": [8],
            "plugins": ["faulty_models"],
            "executor": executor,
            "workers": 2,
            "train": {"max_steps": 20},
            "measure": {"enabled": False},  # training faults; costs are test_protocol's
        },
    )


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="the Ray executor needs `pip install ssmbench[ray]`")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield ray
    ray.shutdown()


def rows_by_model(out):
    with Store(out / FILENAME, readonly=True) as store:
        return {r["model"]: r for r in store.rows()}


def check_faults(out, executor):
    rows = rows_by_model(out)
    assert {m: r["status"] for m, r in rows.items()} == FAULTS
    for model, text in ERRORS.items():
        assert text in rows[model]["error"], (model, rows[model]["error"])
    assert rows["lstm"]["accuracy"] is not None and rows["lstm"]["error"] is None

    run_sweep(fault_config(executor), out)  # retries only the unfinished (failed) cells
    attempts = {m: r["attempts"] for m, r in rows_by_model(out).items()}
    assert attempts == {
        "fault-raise": 2,
        "fault-kill": 2,
        "fault-nan": 1,
        "fault-oom": 1,
        "lstm": 1,
    }


def test_faults_local(tmp_path):
    run_sweep(fault_config("local"), tmp_path)
    assert "killed by SIGKILL" in rows_by_model(tmp_path)["fault-kill"]["error"]
    check_faults(tmp_path, "local")


class Vanishing:
    """An executor whose workers die before their "start" reaches the driver: only the driver's
    lost result arrives (a queued event is lost with the process that queued it)."""

    def run(self, cells, out_dir, emit, kind="train") -> None:
        from ssmbench.experiment.cell import job_id
        from ssmbench.experiment.results import CellResult

        for name in (job_id(kind, cell) for cell in cells):
            emit("result", name, CellResult.lost(name, "SIGKILL"))


def test_a_start_lost_with_its_worker_still_counts_an_attempt_in_every_run(tmp_path):
    config = fault_config("local").model_copy(update={"models": ["lstm"]})
    for attempts in (1, 2, 3):
        run_sweep(config, tmp_path, executor=Vanishing())
        row = rows_by_model(tmp_path)["lstm"]
        assert (row["status"], row["attempts"]) == ("failed", attempts)
        assert "died: SIGKILL" in row["error"]


def test_faults_ray(tmp_path, ray_cluster):
    run_sweep(fault_config("ray"), tmp_path)
    check_faults(tmp_path, "ray")


def test_ray_gives_the_local_executors_metrics(tmp_path, ray_cluster):
    config = load_config(
        "smoke", overrides={"seeds": [0, 1], "models": ["mamba-s6", "lstm"], "threads": 1}
    )  # same float reductions in both
    run_sweep(config, tmp_path / "local", executor=LocalExecutor(workers=2))
    run_sweep(config.model_copy(update={"executor": "ray"}), tmp_path / "ray")
    learned = ("accuracy", "exact_match", "steps", "best_step", "val_accuracy", "params")
    with Store(tmp_path / "local" / FILENAME) as a, Store(tmp_path / "ray" / FILENAME) as b:
        local = {r["id"]: r for r in a.rows()}
        on_ray = {r["id"]: r for r in b.rows()}
        assert set(local) == set(on_ray) == {c.id for c in config.cells()}
        for cell_id, row in local.items():
            assert row["status"] == on_ray[cell_id]["status"] == "done"
            assert {k: row[k] for k in learned} == {k: on_ray[cell_id][k] for k in learned}
        strip = {
            cid: [(p["step"], p["train_loss"], p["val_accuracy"]) for p in curve]
            for cid, curve in a.curves().items()
        }
        assert strip == {
            cid: [(p["step"], p["train_loss"], p["val_accuracy"]) for p in curve]
            for cid, curve in b.curves().items()
        }


def test_driver_killed_mid_sweep_resumes_with_every_cell_done_once(tmp_path):
    no_costs = tmp_path.parent / f"{tmp_path.name}-no-costs.yaml"
    no_costs.write_text("measure: {enabled: false}\n")  # training is what resumes here
    command = [
        "ssmbench",
        "run",
        "--preset",
        "smoke",
        "--config",
        str(no_costs),
        "--models",
        "lstm,s4d-real",
        "--lengths",
        "8,12,16",
        "--steps",
        "60",
        "--out",
        str(tmp_path),
    ]
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = tmp_path / FILENAME
    deadline = time.time() + 180
    statuses: list[str] = []
    while time.time() < deadline and driver.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                    statuses = [s for (s,) in conn.execute("SELECT status FROM cells")]
            except sqlite3.OperationalError:
                statuses = []
            if "done" in statuses and "running" in statuses:
                break
        time.sleep(0.05)
    assert driver.poll() is None, "the sweep ended before the driver could be killed"
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert "done" in statuses and "running" in statuses

    subprocess.run(command, check=True, capture_output=True, timeout=300)
    with sqlite3.connect(db) as conn:
        cells = conn.execute("SELECT id, status FROM cells").fetchall()
        curve_rows = conn.execute(
            "SELECT cell_id, COUNT(*) FROM curves GROUP BY cell_id"
        ).fetchall()
    assert len(cells) == 6 and {s for _, s in cells} == {"done"}
    assert len({cid for cid, _ in cells}) == 6
    assert dict(curve_rows) == {cid: 6 for cid, _ in cells}, "one curve point per eval, no repeats"


ORPHANED_WORKER = """
import subprocess, sys
watch = "import os, sys; parent = os.getppid(); "  # before saying so: we may be killed after
watch += "from ssmbench.experiment.executors.local import _exit_with_driver; "
watch += "print('watching', flush=True); _exit_with_driver(int(sys.argv[1]), parent)"
subprocess.Popen([sys.executable, "-c", watch, sys.argv[1]])  # shares our stdout pipe
input()  # until killed
"""


@pytest.mark.slow
def test_a_worker_whose_parent_dies_exits_even_if_the_driver_pid_lives():
    """The driver's pid may still answer (an unreaped zombie; here: this test's own pid), but the
    worker's parent is gone: it exits instead of training on as an orphan."""
    parent = subprocess.Popen(
        [sys.executable, "-c", ORPHANED_WORKER, str(os.getpid())],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert parent.stdout.readline().strip() == b"watching"
    parent.kill()
    parent.wait()
    # the worker alone now holds the pipe's write end: end of file says it has exited
    ready, _, _ = select.select([parent.stdout], [], [], 60)
    assert ready and parent.stdout.read() == b"", "the orphaned worker did not exit"
