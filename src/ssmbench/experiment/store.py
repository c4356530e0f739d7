"""The results store: one SQLite file per output folder, written by the sweep's driver alone.

Tables: `meta` (key -> JSON value: the sweep's fingerprint, preset, creation time), `cells` (one
row per cell: config, status, metrics, error) and `curves` (one row per evaluation of a cell).
A cell's final status, metrics and learning curve land in one transaction, so a driver killed at
any instant leaves each cell either finished once or not at all.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from ssmbench.experiment.results import CellResult, Status

_STATUS_WORDS = ", ".join(f"'{s.value}'" for s in Status)

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cells (
    id TEXT PRIMARY KEY,
    model TEXT NOT NULL, seq_len INTEGER NOT NULL, n_tokens INTEGER,
    seed INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ({_STATUS_WORDS})),
    config TEXT NOT NULL, metrics TEXT, error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS curves (
    cell_id TEXT NOT NULL REFERENCES cells(id), step INTEGER NOT NULL,
    train_loss REAL, val_accuracy REAL, elapsed_s REAL,
    PRIMARY KEY (cell_id, step)
);
"""

FILENAME = "results.sqlite"


class Store:
    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly:  # touches nothing on disk: for checks made before a run may write
            self.db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
        else:
            self.db = sqlite3.connect(self.path, timeout=30)
            self.db.executescript(SCHEMA)
        self.db.row_factory = sqlite3.Row

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get_meta(self, key: str) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row["value"])

    def set_meta(self, **items: Any) -> None:
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                [(k, json.dumps(v)) for k, v in items.items()],
            )

    def clear(self) -> None:
        with self.db:
            for table in ("curves", "cells", "meta"):
                self.db.execute(f"DELETE FROM {table}")

    def status(self, cell_id: str) -> Status | None:
        row = self.db.execute("SELECT status FROM cells WHERE id = ?", (cell_id,)).fetchone()
        return None if row is None else Status(row["status"])

    def mark_running(self, cell_id: str, config: dict[str, Any]) -> None:
        """Record a cell as started (or restarted: attempts counts the starts)."""
        task = config["task"]
        with self.db:
            self.db.execute(
                """INSERT INTO cells (id, model, seq_len, n_tokens, seed, status, config,
                                      attempts, updated_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?)
                   ON CONFLICT(id) DO UPDATE SET status = excluded.status,
                       config = excluded.config,
                       metrics = NULL, error = NULL, attempts = attempts + 1,
                       updated_at = excluded.updated_at""",
                (
                    cell_id,
                    config["model"],
                    config["seq_len"],
                    task.get("n_tokens"),
                    config["seed"],
                    Status.RUNNING.value,
                    json.dumps(config),
                    time.time(),
                ),
            )

    def finish(self, cell_id: str, result: CellResult) -> None:
        """A cell's outcome, its metrics and its whole learning curve, in one transaction."""
        metrics, curve = result.metrics, result.curve
        with self.db:
            self.db.execute(
                "UPDATE cells SET status = ?, metrics = ?, error = ?, updated_at = ? WHERE id = ?",
                (
                    Status(result.status).value,
                    json.dumps(metrics) if metrics else None,
                    result.error,
                    time.time(),
                    cell_id,
                ),
            )
            self.db.execute("DELETE FROM curves WHERE cell_id = ?", (cell_id,))
            self.db.executemany(
                "INSERT INTO curves VALUES (?, ?, ?, ?, ?)",
                [
                    (cell_id, p["step"], p["train_loss"], p["val_accuracy"], p["elapsed_s"])
                    for p in curve
                ],
            )

    def rows(self) -> list[dict[str, Any]]:
        """Every cell as one flat dict: identity, status, error, config and metrics."""
        rows = []
        for r in self.db.execute("SELECT * FROM cells ORDER BY rowid"):
            row = {
                k: r[k]
                for k in (
                    "id",
                    "model",
                    "seq_len",
                    "n_tokens",
                    "seed",
                    "status",
                    "error",
                    "attempts",
                )
            }
            row["config"] = json.loads(r["config"])
            row.update(json.loads(r["metrics"]) if r["metrics"] else {})
            rows.append(row)
        return rows

    def curves(self) -> dict[str, list[dict[str, float]]]:
        curves: dict[str, list[dict[str, float]]] = {}
        query = "SELECT * FROM curves ORDER BY cell_id, step"
        for r in self.db.execute(query):
            point = {k: r[k] for k in ("step", "train_loss", "val_accuracy", "elapsed_s")}
            curves.setdefault(r["cell_id"], []).append(point)
        return curves
