"""The results store: one SQLite file per output folder, written by the sweep's driver alone.

Tables: `meta` (key -> JSON value: the sweep's fingerprint, preset, creation time), `cells` (one
row per training cell: config, status, metrics, error), `curves` (one row per evaluation of a
cell) and `costs` (one row per model × input shape: time, memory, utilization and the conditions
they were measured under; they depend on neither lr, weight decay nor seed).
A cell's final status, metrics and learning curve land in one transaction, so a driver killed at
any instant leaves each cell either finished once or not at all; a transaction that fails for a
full disk (or an I/O error) is rolled back and raises OutputError, leaving the store as it was.
The store and its journal must be regular files: a writer refuses a link in their place.
"""

from __future__ import annotations

import errno
import json
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ssmbench.experiment.config import CellConfig, ConfigError
from ssmbench.experiment.results import FINISHED, CellResult, Status
from ssmbench.files import OutputError, cannot_write, check_own

_FINISHED_SQL = ", ".join(f"'{s.value}'" for s in sorted(FINISHED))

_STATUS_WORDS = ", ".join(f"'{s.value}'" for s in Status)

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cells (
    id TEXT PRIMARY KEY,
    model TEXT NOT NULL, task TEXT NOT NULL, seq_len INTEGER NOT NULL,
    n_tokens INTEGER, lr REAL NOT NULL, weight_decay REAL NOT NULL, seed INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ({_STATUS_WORDS})),
    config TEXT NOT NULL, metrics TEXT, error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS curves (
    cell_id TEXT NOT NULL REFERENCES cells(id), step INTEGER NOT NULL,
    train_loss REAL, val_accuracy REAL, elapsed_s REAL,
    PRIMARY KEY (cell_id, step)
);
CREATE TABLE IF NOT EXISTS costs (
    id TEXT PRIMARY KEY,
    model TEXT NOT NULL, task TEXT NOT NULL, seq_len INTEGER NOT NULL, n_tokens INTEGER,
    status TEXT NOT NULL CHECK (status IN ({_STATUS_WORDS})),
    config TEXT NOT NULL, metrics TEXT, error TEXT, updated_at REAL NOT NULL
);
"""
IDENTITY = ("id", "model", "task", "seq_len", "n_tokens", "lr", "weight_decay", "seed")

FILENAME = "results.sqlite"
SCHEMA_VERSION = 3  # 2: task, lr and weight decay per cell; costs measured apart; 3: any task
# (n_tokens null for tasks without it)


class StoreError(ConfigError):
    """A results store that cannot be read; the message says what is wrong and what to do."""


def journal_of(path: Path) -> Path:
    return path.with_name(path.name + "-journal")


# SQLite's primary result codes of a write the disk refused: full, I/O error, cannot open.
_WRITE_FAILURES = {sqlite3.SQLITE_FULL: errno.ENOSPC, sqlite3.SQLITE_IOERR: errno.EIO,
                   sqlite3.SQLITE_CANTOPEN: errno.EIO}  # fmt: skip


def _output_error(error: sqlite3.Error, path: Path) -> OutputError | None:
    """The OutputError of a write SQLite could not make to `path` (None for any other error)."""
    code = getattr(error, "sqlite_errorcode", None)
    if code is None or code & 0xFF not in _WRITE_FAILURES:
        return None
    return cannot_write(OSError(_WRITE_FAILURES[code & 0xFF], str(error)), path)


def _identity(cell: CellConfig) -> tuple[str, str, str, int, int | None]:
    """id, model key (`mamba-s6`, or `mamba-s6@d128` where the width is swept), task key,
    seq_len and n_tokens (None for a task without it)."""
    return (cell.id, cell.model_key, cell.task.key, cell.seq_len, cell.task.params.get("n_tokens"))


class Store:
    """The store at `path`. Read-only opens never change a byte on disk: a hot journal left by
    a killed writer is rolled back in a private copy. Read-write opens let SQLite roll it back in
    place. A file SQLite cannot read or repair raises StoreError. A store written by an older
    layout is `outdated`: readable only after `clear()`, which rebuilds it (the sweep's --force).
    """

    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = Path(path)
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        if self.path.is_dir():
            raise StoreError(
                f"{self.path} is a folder, not a results store: move it away, "
                "or `ssmbench run --force` sets it aside and starts a new store"
            )
        if not readonly:  # SQLite follows links: never write through one
            check_own(self.path)
            check_own(journal_of(self.path))
        try:
            self.db = self._connect(readonly)
            self.db.row_factory = sqlite3.Row
            if not readonly and not self._has_cells():
                self._create()
            self._check()
        except OutputError:
            self.close()
            raise
        except sqlite3.DatabaseError as e:
            self.close()
            unwritten = None if readonly else _output_error(e, self.path)
            if unwritten is not None:
                raise unwritten from None
            why = " ".join(str(e).split())  # quick_check's report spans lines
            raise StoreError(
                f"{self.path} is damaged beyond SQLite's recovery ({why}); "
                "`ssmbench run --force` sets it aside and starts a new store"
            ) from None

    def _connect(self, readonly: bool, retry: bool = True) -> sqlite3.Connection:
        if not readonly:
            return sqlite3.connect(self.path, timeout=30)  # rolls back a hot journal in place
        db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        try:  # beside a live writer SQLite waits for its commit; only a hot journal refuses
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.OperationalError as e:
            db.close()
            if "readonly" not in str(e):  # SQLITE_READONLY_ROLLBACK: a killed writer's journal
                raise
        try:
            return self._rolled_back_copy()
        except FileNotFoundError:  # a writer rolled the journal back meanwhile
            if not retry:
                raise
            return self._connect(readonly, retry=False)

    def _rolled_back_copy(self) -> sqlite3.Connection:
        """A private copy of the store and its hot journal; its first read rolls the copy back."""
        self._scratch = self._scratch or tempfile.TemporaryDirectory(prefix="ssmbench-store-")
        copy = Path(self._scratch.name) / self.path.name
        shutil.copyfile(self.path, copy)
        shutil.copyfile(journal_of(self.path), journal_of(copy))
        return sqlite3.connect(copy)

    def _check(self) -> None:
        (verdict,) = self.db.execute("PRAGMA quick_check").fetchone()
        if verdict != "ok":
            raise sqlite3.DatabaseError(verdict)
        query = "SELECT name FROM sqlite_master WHERE type = 'table'"
        if not {"meta", "cells"} <= {name for (name,) in self.db.execute(query)}:
            raise sqlite3.DatabaseError("it holds no ssmbench tables")

    def _has_cells(self) -> bool:
        query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'cells'"
        return self.db.execute(query).fetchone() is not None

    def _create(self) -> None:
        with self._transaction():
            self.db.executescript(SCHEMA)
            self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One transaction, committed whole or rolled back; OutputError if the disk refused it."""
        try:
            with self.db:
                yield self.db
        except sqlite3.OperationalError as e:
            unwritten = _output_error(e, self.path)
            if unwritten is None:
                raise
            raise unwritten from None

    @property
    def outdated(self) -> bool:
        """True when the file was written by an ssmbench with another layout."""
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        return self._has_cells() and version != SCHEMA_VERSION

    def close(self) -> None:
        if getattr(self, "db", None) is not None:
            self.db.close()
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get_meta(self, key: str) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row["value"])

    def set_meta(self, **items: Any) -> None:
        with self._transaction():
            self.db.executemany(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                [(k, json.dumps(v)) for k, v in items.items()],
            )

    def clear(self) -> None:
        """Drop everything and start over in the current layout."""
        with self._transaction():
            for table in ("curves", "cells", "costs", "meta"):
                self.db.execute(f"DROP TABLE IF EXISTS {table}")
        self._create()

    def status(self, cell_id: str) -> Status | None:
        row = self.db.execute("SELECT status FROM cells WHERE id = ?", (cell_id,)).fetchone()
        return None if row is None else Status(row["status"])

    def mark_running(self, cell: CellConfig) -> None:
        """Record a cell as started (or restarted: attempts counts the starts).

        A finished cell (done, diverged, oom) is left as it is: only `clear` (--force) undoes it.
        """
        with self._transaction():
            self.db.execute(
                """INSERT INTO cells (id, model, task, seq_len, n_tokens, lr, weight_decay, seed,
                                      status, config, attempts, updated_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?)
                   ON CONFLICT(id) DO UPDATE SET status = excluded.status,
                       config = excluded.config,
                       metrics = NULL, error = NULL, attempts = attempts + 1,
                       updated_at = excluded.updated_at
                   WHERE cells.status NOT IN ("""
                + _FINISHED_SQL
                + """)""",
                (
                    *_identity(cell),
                    cell.train.lr,
                    cell.train.weight_decay,
                    cell.seed,
                    Status.RUNNING.value,
                    cell.model_dump_json(),
                    time.time(),
                ),
            )

    def finish(self, cell_id: str, result: CellResult) -> None:
        """A cell's outcome, its metrics and its whole learning curve, in one transaction."""
        metrics, curve = result.metrics, result.curve
        with self._transaction():
            updated = self.db.execute(
                "UPDATE cells SET status = ?, metrics = ?, error = ?, updated_at = ? "
                f"WHERE id = ? AND status NOT IN ({_FINISHED_SQL})",
                (
                    Status(result.status).value,
                    json.dumps(metrics) if metrics else None,
                    result.error,
                    time.time(),
                    cell_id,
                ),
            )
            if updated.rowcount == 0:  # finished already (or unknown): never overwritten
                return
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
        return self._flat("cells", (*IDENTITY, "status", "error", "attempts"))

    def cost_status(self, cost_id: str) -> Status | None:
        row = self.db.execute("SELECT status FROM costs WHERE id = ?", (cost_id,)).fetchone()
        return None if row is None else Status(row["status"])

    def finish_cost(self, cell: CellConfig, result: CellResult) -> None:
        """The cost of `cell`'s model and input shape, measured once (a rerun replaces it)."""
        with self._transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO costs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    cell.cost_id,
                    *_identity(cell)[1:],
                    Status(result.status).value,
                    cell.model_dump_json(),
                    json.dumps(result.metrics) if result.metrics else None,
                    result.error,
                    time.time(),
                ),
            )

    def costs(self) -> list[dict[str, Any]]:
        """Every cost measurement as one flat dict: identity, status, error, config, metrics."""
        return self._flat(
            "costs", ("id", "model", "task", "seq_len", "n_tokens", "status", "error")
        )

    def _flat(self, table: str, columns: tuple[str, ...]) -> list[dict[str, Any]]:
        rows = []
        for r in self.db.execute(f"SELECT * FROM {table} ORDER BY rowid"):
            row = {k: r[k] for k in columns}
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
