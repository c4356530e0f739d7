"""Results as types: the store's CHECK, the finished set and the records all come from Status."""

import sqlite3

import pytest

from ssmbench.experiment.config import load_config
from ssmbench.experiment.results import FAILURES, FINISHED, CellResult, Status
from ssmbench.experiment.store import Store

CELL = load_config("smoke").cells()[0]


def test_store_accepts_every_status_and_nothing_else(tmp_path):
    with Store(tmp_path / "r.sqlite") as store:
        store.mark_running(CELL)
        assert store.status(CELL.id) is Status.RUNNING
        for seed, status in enumerate(Status):  # one cell each: finished results stay as they are
            cell = CELL.model_copy(update={"seed": seed})
            store.mark_running(cell)
            store.finish(cell.id, CellResult(status))
            assert store.status(cell.id) is status
        with pytest.raises(sqlite3.IntegrityError):
            store.db.execute("UPDATE cells SET status = 'finished' WHERE id = ?", (CELL.id,))


def test_results_are_typed_and_round_trip_through_the_store(tmp_path):
    curve = [{"step": 1, "train_loss": 2.0, "val_accuracy": 0.5, "elapsed_s": 0.1}]
    with pytest.raises(ValueError):
        CellResult("finished")
    assert CellResult("done").status is Status.DONE
    with Store(tmp_path / "r.sqlite") as store:
        store.mark_running(CELL)
        store.finish(CELL.id, CellResult(Status.DONE, {"accuracy": 0.75}, curve=curve))
        [row] = store.rows()
        assert (row["status"], row["accuracy"]) == ("done", 0.75)
        assert (row["task"], row["lr"], row["weight_decay"]) == (
            CELL.task.key,
            CELL.train.lr,
            CELL.train.weight_decay,
        )
        assert store.curves() == {CELL.id: curve}
    lost = CellResult.lost("a", "killed by SIGKILL")
    assert lost.status is Status.FAILED and "killed by SIGKILL" in lost.error


def test_finished_and_failures_partition_the_outcomes():
    assert {Status.DONE, Status.DIVERGED, Status.OOM} == FINISHED
    assert {Status.FAILED, Status.DIVERGED, Status.OOM} == FAILURES
    assert Status.FAILED not in FINISHED and Status.RUNNING not in FINISHED | FAILURES


def test_a_store_of_an_older_layout_is_refused_then_rebuilt_by_force(tmp_path, capsys):
    from ssmbench.cli import main

    old = sqlite3.connect(tmp_path / "results.sqlite")
    old.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "CREATE TABLE cells (id TEXT PRIMARY KEY, model TEXT NOT NULL);"
    )
    old.close()
    assert main(["export", str(tmp_path)]) == 2
    assert "older ssmbench" in capsys.readouterr().err
    assert main(["run", "--preset", "smoke", "--out", str(tmp_path), "--dry-run"]) == 2
    with Store(tmp_path / "results.sqlite") as store:
        assert store.outdated
        store.clear()
        assert not store.outdated
        store.mark_running(CELL)
        assert store.status(CELL.id) is Status.RUNNING
