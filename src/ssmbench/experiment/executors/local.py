"""The local executor: every cell in its own worker process, `workers` at a time.

A crash, an out-of-memory kill or a SIGKILL of one worker marks that cell failed; the others go
on. An interrupted driver (SIGINT, or SIGTERM handled the same way) sends SIGINT to its workers,
which checkpoint and stop, and joins them before it releases the folder. Workers poll the driver
and exit when it is gone, so a killed driver leaves no orphans writing checkpoints behind the
next run's back.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_module
import signal
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from ssmbench.experiment.cell import Kind, job_id, run_job, sigterm_as_sigint
from ssmbench.experiment.config import CellConfig
from ssmbench.experiment.executors import Emit
from ssmbench.experiment.results import CellResult
from ssmbench.experiment.sinks import LogSpec


def _exit_with_driver(driver_pid: int, parent: int) -> None:
    """Exit once the driver is gone: no such process, or this process's parent (the driver, or
    its forkserver, which exits with it) is no longer `parent`, read when the worker started. A
    killed driver that nobody reaps stays a zombie, which signal 0 still finds."""
    while True:
        time.sleep(1.0)
        try:
            os.kill(driver_pid, 0)
        except ProcessLookupError:
            os._exit(1)
        if os.getppid() != parent:
            os._exit(1)


def _work(
    kind: Kind, cell_json: str, out_dir: str, events: Any, driver_pid: int, log: LogSpec | None
) -> None:
    """Run one job and send its events; SIGINT or SIGTERM (the driver's, or a scheduler's sent
    to every process) saves the checkpoint and ends the worker without a result."""
    parent = os.getppid()  # first: the driver may die while this worker starts
    threading.Thread(target=_exit_with_driver, args=(driver_pid, parent), daemon=True).start()
    result = None
    with sigterm_as_sigint():
        try:
            cell = CellConfig.model_validate_json(cell_json)
            name = job_id(kind, cell)
            events.put(("start", name, None))
            progress = lambda p: events.put(("progress", name, p))  # noqa: E731
            result = run_job(kind, cell, Path(out_dir), progress, log)
        except KeyboardInterrupt:  # the checkpoint is saved; the rerun resumes from it
            pass
    # The job is over: a signal now (the driver stopping) must not break the queue's flush at
    # exit into a traceback; the worker ends on its own in a moment.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if result is not None:
        events.put(("result", name, result))


def _context() -> mp.context.BaseContext:
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["ssmbench.experiment.cell"])  # import torch once, not per cell
        return ctx
    return mp.get_context("spawn")


def sharing_cores(cell: CellConfig, workers: int) -> CellConfig:
    """The cell as one of `workers` side by side runs it: without its own thread count, the
    cores split evenly between them (threads spinning on shared cores only slow each other)."""
    if cell.threads is None and workers > 1:
        return cell.model_copy(update={"threads": max(1, (os.cpu_count() or 1) // workers)})
    return cell


class LocalExecutor:
    def __init__(self, workers: int = 1, log: LogSpec | None = None) -> None:
        self.workers, self.log = workers, log

    def _start(self, ctx, kind: Kind, cell: CellConfig, out_dir: Path, events) -> Any:
        """A started worker process for one job."""
        cell = sharing_cores(cell, self.workers)
        args = (kind, cell.model_dump_json(), str(out_dir), events, os.getpid(), self.log)
        worker = ctx.Process(target=_work, args=args, name=f"ssmbench {job_id(kind, cell)}",
                             daemon=True)  # fmt: skip
        worker.start()
        return worker

    def run(self, cells: list[CellConfig], out_dir: Path, emit: Emit, kind: Kind = "train") -> None:
        ctx = _context()
        events = ctx.Queue()
        todo = deque(cells)
        running: dict[str, mp.process.BaseProcess] = {}
        reported: set[str] = set()

        def drain(timeout: float) -> None:
            while True:
                try:
                    kind, cell_id, payload = events.get(timeout=timeout)
                except queue_module.Empty:
                    return
                if kind == "result":
                    reported.add(cell_id)
                emit(kind, cell_id, payload)
                timeout = 0.0

        try:
            while todo or running:
                while todo and len(running) < self.workers:
                    cell = todo.popleft()
                    running[job_id(kind, cell)] = self._start(ctx, kind, cell, out_dir, events)
                drain(0.2)
                for cell_id, worker in list(running.items()):
                    if worker.is_alive():
                        continue
                    worker.join()
                    drain(0.5)  # a result sent just before exit is still in the pipe
                    del running[cell_id]
                    if cell_id not in reported:
                        code = worker.exitcode or 0
                        why = (
                            f"killed by {signal.Signals(-code).name}"
                            if code < 0
                            else f"exit code {code}"
                        )
                        emit("result", cell_id, CellResult.lost(cell_id, why))
        finally:
            for worker in running.values():  # interrupted: workers save a checkpoint and stop
                if worker.is_alive() and worker.pid is not None:
                    os.kill(worker.pid, signal.SIGINT)
            for worker in running.values():
                worker.join(timeout=30)
                if worker.is_alive():
                    worker.kill()
