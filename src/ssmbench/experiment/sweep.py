"""A sweep: every cell of a config, run by an executor and recorded in the store; then the cost
of every (model, input shape), measured once, alone.

Rerunning the same command into the same folder runs only the cells that have not finished
(done, diverged and oom are outcomes; failed and running ones are retried, resuming from their
checkpoints). A folder made with another config is refused unless `force` wipes it. Output that
cannot be written (a full disk) stops the sweep with OutputError; the cells it stopped stay
`running`, never failed, and the next run retries them.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from ssmbench.experiment.cell import CHECKPOINTS, sigterm_as_sigint
from ssmbench.experiment.config import CellConfig, ConfigError, SweepConfig
from ssmbench.experiment.executors import Executor
from ssmbench.experiment.lock import LOCKFILE, folder_lock
from ssmbench.experiment.progress import SweepDisplay
from ssmbench.experiment.results import FINISHED, CellResult, Status
from ssmbench.experiment.sinks import log_spec
from ssmbench.experiment.store import FILENAME, Store, StoreError, journal_of
from ssmbench.files import OutputError, check_own
from ssmbench.report import FIGURES, REPORT


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


def check_not_a_checkout(out: Path, force: bool) -> None:
    """Refuse to scatter a run's files into a folder of a git checkout (e.g. `--out .`).

    A folder that does not exist yet, is empty or already holds a store is fine; --force allows
    the rest (add the folder to .gitignore)."""
    out = Path(out).resolve()
    if force or not out.is_dir() or (out / FILENAME).exists() or not any(out.iterdir()):
        return
    for folder in (out, *out.parents):
        if (folder / ".git").exists():
            raise ConfigError(
                f"--out {out} is a folder of the git checkout {folder} holding other files; "
                "use a new folder such as runs/NAME (gitignored), or --force"
            )


def check_compatible(config: SweepConfig, out: Path, force: bool) -> None:
    """Refuse to mix results of different configs in one folder (read-only check)."""
    path = Path(out) / FILENAME
    if not path.exists() or force:
        return
    with Store(path, readonly=True) as store:  # StoreError if SQLite cannot read it
        previous, outdated = store.get_meta("fingerprint"), store.outdated
    if outdated:
        raise ConfigError(
            f"{out} holds results of an older ssmbench; use another --out, "
            "or --force to discard them"
        )
    if previous is not None and previous != config.fingerprint():
        raise ConfigError(
            f"{out} holds results of a different config; use another --out, "
            "or --force to discard them"
        )


def check_own_files(out: Path) -> None:
    """ForeignFile, before anything is written, if a link or a non-regular file stands where a
    run writes its own: the lock file, the store and its journal, the report, the figure and
    checkpoint folders and any file in them (each is checked again where it is opened)."""
    for name in (LOCKFILE, journal_of(Path(FILENAME)).name, REPORT):
        check_own(out / name)
    if not (out / FILENAME).is_dir():  # a folder is a damaged store: Store says what --force does
        check_own(out / FILENAME)
    for folder in (out / FIGURES, out / CHECKPOINTS):
        check_own(folder, folder=True)
        if folder.is_dir():
            for entry in os.scandir(folder):
                check_own(Path(entry.path))


def set_aside(path: Path) -> Path:
    """Move a damaged file or folder to a fresh `NAME.corrupt[-N]` beside it; returns that."""
    aside, n = path.with_name(path.name + ".corrupt"), 1
    while aside.exists():
        aside, n = path.with_name(f"{path.name}.corrupt-{n}"), n + 1
    os.replace(path, aside)
    return aside


def open_store(config: SweepConfig, out: Path, force: bool) -> Store:
    out.mkdir(parents=True, exist_ok=True)
    path = out / FILENAME
    try:
        store = Store(path)
    except StoreError as e:
        if not force:
            raise
        journal = journal_of(path)
        aside = set_aside(path)
        if journal.exists():
            os.replace(journal, journal_of(aside))
        print(f"warning: {e.args[0].split(';')[0]}: moved to {aside.name}", file=sys.stderr)
        store = Store(path)
    if force:  # start clean: no result, no checkpoint of an earlier run survives
        store.clear()
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    if store.get_meta("fingerprint") is None:
        store.set_meta(fingerprint=config.fingerprint(), created_at=time.time())
    store.set_meta(preset=config.preset, config=config.model_dump())
    return store


def make_executor(config: SweepConfig, alone: bool = False) -> Executor:
    """The config's executor, its workers logging where the config says; `alone`: one job at a
    time (for measuring costs)."""
    log = log_spec(config)
    if config.executor == "ray":
        from ssmbench.experiment.executors.ray_cluster import RayExecutor

        return RayExecutor(
            config.ray_address,
            config.ray_num_cpus,
            config.ray_num_gpus,
            config.retries,
            max_in_flight=1 if alone else None,
            log=log,
        )
    if config.executor == "slurm":
        from ssmbench.experiment.executors.slurm import SlurmExecutor

        return SlurmExecutor(
            partition=config.slurm_partition,
            gpus=config.slurm_gpus,
            time_min=config.slurm_time,
            extra=list(config.slurm_extra),
            retries=config.retries,
            max_in_flight=1 if alone else None,
            log=log,
        )
    from ssmbench.experiment.executors.local import LocalExecutor

    return LocalExecutor(1 if alone else config.workers, log=log)


def cost_cells(config: SweepConfig) -> list[CellConfig]:
    """One cell per (model, task setting, length): the first of its lr × wd × seed grid."""
    found: dict[str, CellConfig] = {}
    for cell in config.cells():
        found.setdefault(cell.cost_id, cell)
    return list(found.values())


def run_sweep(
    config: SweepConfig,
    out: Path,
    force: bool = False,
    executor: Executor | None = None,
    wait: bool = False,
    log_every: float = 10.0,
) -> None:
    """Train every unfinished cell (in parallel as the executor allows), then measure each
    unmeasured (model, input shape) once, one at a time, with no training job alive.

    Both phases record into the store as results arrive; the report is the caller's business.
    The folder's writer lock is held throughout (ConfigError if another run holds it, unless
    `wait`), so two runs never train or record the same folder's cells at once. SIGTERM stops
    the sweep as SIGINT does (KeyboardInterrupt, workers checkpointed and joined); a job that
    its output stopped (a full disk) stops the sweep with its OutputError.
    """
    out = Path(out).resolve()  # workers may run elsewhere: Ray's start in their own folder
    with sigterm_as_sigint(), folder_lock(out, wait):
        check_compatible(config, out, force)  # the folder may have changed while we waited
        check_own_files(out)
        _run_locked(config, out, force, executor, log_every)


def _run_locked(
    config: SweepConfig, out: Path, force: bool, executor: Executor | None, log_every: float
) -> None:
    with open_store(config, out, force) as store:
        todo = [c for c in config.cells() if store.status(c.id) not in FINISHED]
        by_id = {c.id: c for c in todo}
        costs = [c for c in cost_cells(config) if store.cost_status(c.cost_id) not in FINISHED]
        costs = costs if config.measure.enabled else []
        by_cost_id = {c.cost_id: c for c in costs}
        started: set[str] = set()  # this run's starts: each one attempt
        with SweepDisplay(total=len(todo) + len(costs), log_every=log_every) as display:

            def emit(kind: str, cell_id: str, payload: object) -> None:
                if kind == "start":
                    started.add(cell_id)
                    store.mark_running(by_id[cell_id])
                elif kind == "result":
                    _stop_if_unwritten(payload)  # type: ignore[arg-type]
                    if cell_id not in started:  # its worker died before its "start" was sent
                        started.add(cell_id)
                        store.mark_running(by_id[cell_id])
                    store.finish(cell_id, payload)  # type: ignore[arg-type]
                display.event(kind, cell_id, payload)

            def emit_cost(kind: str, cost_id: str, payload: object) -> None:
                if kind == "result":
                    result: CellResult = payload  # type: ignore[assignment]
                    _stop_if_unwritten(result)
                    if result.metrics is not None:  # what the driver alone knows
                        result.metrics["alone"] = True  # no other job of this sweep alive
                    store.finish_cost(by_cost_id[cost_id], result)
                display.event(kind, f"cost {cost_id}", payload)

            (executor or make_executor(config)).run(todo, out, emit)
            # Every training worker has been joined: the measurements have the sweep's machine.
            if costs:
                make_executor(config, alone=True).run(costs, out, emit_cost, kind="cost")


def _stop_if_unwritten(result: CellResult) -> None:
    """A job returned without an outcome (still running) was stopped by its output: the sweep
    stops too (the disk that refused it holds the rest), its cell left for the next run."""
    if result.status == Status.RUNNING:
        raise OutputError(None, result.error)


def report_meta(store: Store) -> dict[str, object]:
    return {key: store.get_meta(key) for key in ("preset", "config", "created_at")}


def unfinished_cells(config: SweepConfig, out: Path) -> list[str]:
    """Ids of the config's cells that are not done (failed, diverged, oom, or never run)."""
    with Store(Path(out) / FILENAME, readonly=True) as store:
        return [c.id for c in config.cells() if store.status(c.id) != Status.DONE]
