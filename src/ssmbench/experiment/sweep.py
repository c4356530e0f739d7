"""A sweep: every cell of a config, run by an executor, recorded in the store, then reported.

Rerunning the same command into the same folder runs only the cells that have not finished
(done, diverged and oom are outcomes; failed and running ones are retried, resuming from their
checkpoints). A folder made with another config is refused unless `force` wipes it.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from ssmbench.experiment.cell import CHECKPOINTS
from ssmbench.experiment.config import ConfigError, SweepConfig
from ssmbench.experiment.executors import Executor
from ssmbench.experiment.progress import SweepDisplay
from ssmbench.experiment.results import FINISHED
from ssmbench.experiment.store import FILENAME, Store
from ssmbench.report import write_report


def check_writable(out: Path) -> None:
    """Fail, having written nothing, unless `out` is (or can become) a writable folder."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output folder {out} is a file; choose another --out")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"cannot create output folder {out}: {existing} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise ConfigError(
            f"output folder {out} is not writable ({e.strerror}); choose another --out"
        ) from None


def check_compatible(config: SweepConfig, out: Path, force: bool) -> None:
    """Refuse to mix results of different configs in one folder (read-only check)."""
    path = Path(out) / FILENAME
    if not path.exists() or force:
        return
    try:
        with Store(path, readonly=True) as store:
            previous = store.get_meta("fingerprint")
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported the same way
        raise ConfigError(
            f"{path} is not a readable ssmbench store ({e}); choose another --out"
        ) from None
    if previous is not None and previous != config.fingerprint():
        raise ConfigError(
            f"{out} holds results of a different config; use another --out, "
            "or --force to discard them"
        )


def open_store(config: SweepConfig, out: Path, force: bool) -> Store:
    out.mkdir(parents=True, exist_ok=True)
    store = Store(out / FILENAME)
    if force:  # start clean: no result, no checkpoint of an earlier run survives
        store.clear()
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    if store.get_meta("fingerprint") is None:
        store.set_meta(fingerprint=config.fingerprint(), created_at=time.time())
    store.set_meta(preset=config.preset, config=config.model_dump())
    return store


def make_executor(config: SweepConfig) -> Executor:
    if config.executor == "ray":
        from ssmbench.experiment.executors.ray_cluster import RayExecutor

        return RayExecutor(
            config.ray_address, config.ray_num_cpus, config.ray_num_gpus, config.retries
        )
    from ssmbench.experiment.executors.local import LocalExecutor

    return LocalExecutor(config.workers)


def run_sweep(
    config: SweepConfig, out: Path, force: bool = False, executor: Executor | None = None
) -> Path:
    """Run every unfinished cell, record it, and write the report; returns the report's path."""
    out = Path(out).resolve()  # workers may run elsewhere: Ray's start in their own folder
    with open_store(config, out, force) as store:
        todo = [c for c in config.cells() if store.status(c.id) not in FINISHED]
        configs = {c.id: c.model_dump() for c in todo}
        with SweepDisplay(total=len(todo)) as display:

            def emit(kind: str, cell_id: str, payload: object) -> None:
                if kind == "start":
                    store.mark_running(cell_id, configs[cell_id])
                elif kind == "result":
                    if store.status(cell_id) is None:  # its worker died before saying "start"
                        store.mark_running(cell_id, configs[cell_id])
                    store.finish(cell_id, payload)  # type: ignore[arg-type]
                display.event(kind, cell_id, payload)

            (executor or make_executor(config)).run(todo, out, emit)
        return write_report(store.rows(), store.curves(), report_meta(store), out)


def report_meta(store: Store) -> dict[str, object]:
    return {key: store.get_meta(key) for key in ("preset", "config", "created_at")}
