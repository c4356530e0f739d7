"""The SLURM executor: every cell a SLURM job, sent through submitit (`ssmbench[slurm]`).

Jobs: the training phase goes out as job arrays, one `sbatch` per ARRAY_LIMIT cells and one
array task per cell, all queued at once for the cluster to schedule; the cost phase sends one job
at a time (`max_in_flight` 1), so that each cost is measured with no other job of the sweep
alive. Each job asks for `gpus` GPUs (None: 1 when the cells run on CUDA, else 0), `time_min`
minutes, the partition and any extra sbatch flags (`--account=abc`).

The driver alone writes the store, as with Ray: a job hands its CellResult back through
submitit's result file, and its `start` and `progress` events through a JSON Lines file that the
driver follows. Submitit's files, those event files and the checkpoints live in the output
folder: it must be a path the driver and every node share.

Exactly once: a job preempted or about to time out gets submitit's signal (USR2, asked for 90 s
before the time limit); it saves a checkpoint at the end of its step and submitit requeues it
(the job is Checkpointable), to resume from that checkpoint. SIGTERM (scancel, a preemption
without requeue) saves the checkpoint and ends the job without a result; so does nothing a job
killed outright (SIGKILL, a lost node). A job that ends without a result is sent again
`retries` times, then recorded as failed, as a lost Ray worker is: the next run retries its cell
from the checkpoint. An interrupted driver cancels its jobs (they checkpoint) and waits for them
to end, up to CANCEL_WAIT_S.
"""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import submitit
from submitit.core.utils import FailedJobError, UncompletedJobError
from submitit.helpers import Checkpointable

from ssmbench.experiment.cell import Kind, job_id, run_job, sigterm_as_sigint
from ssmbench.experiment.config import CellConfig, ConfigError
from ssmbench.experiment.executors import Emit
from ssmbench.experiment.results import CellResult
from ssmbench.experiment.sinks import LogSpec, safe_name
from ssmbench.files import own_folder

ARRAY_LIMIT = 1000  # array tasks per sbatch: SLURM's default MaxArraySize is 1001
POLL_S = 0.5  # how often the driver reads the jobs' events and states (SLURM has no callback)
CANCEL_WAIT_S = 30.0
SLURM = "slurm"  # OUT/slurm/: submitit's files and the jobs' events, a folder per run
REQUEUE_SIGNAL = signal.SIGUSR2  # what submitit asks SLURM to send before preemption or timeout


def check_cluster() -> None:
    """Fail fast, before anything is written, where no SLURM cluster takes jobs."""
    missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
    if missing:
        raise ConfigError(
            f"--executor slurm needs SLURM's {' and '.join(missing)} on PATH; "
            "run it on the cluster's login node"
        )


def sbatch_flags(extra: list[str]) -> dict[str, Any]:
    """Extra sbatch flags (`--account=abc`, `qos=high`, `--exclusive`) as submitit's
    slurm_additional_parameters."""
    flags: dict[str, Any] = {}
    for flag in extra:
        name, sep, value = flag.removeprefix("--").partition("=")
        flags[name] = value if sep else True
    return flags


class EventFile:
    """A job's events, one JSON line each: appended by the job, followed by the driver."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.partial = Path(path), 0, b""

    def put(self, kind: str, name: str, payload: Any) -> None:
        with open(self.path, "a", encoding="utf-8") as file:
            file.write(json.dumps([kind, name, payload]) + "\n")

    def read(self) -> list[tuple[str, str, Any]]:
        """The events written since the last read (a line still being written waits)."""
        try:
            with open(self.path, "rb") as file:
                file.seek(self.offset)
                data = file.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        return [tuple(json.loads(line)) for line in lines if line]  # type: ignore[misc]


@contextmanager
def _interrupt_on(signum: signal.Signals, received: list[int]) -> Iterator[None]:
    """While the block runs, `signum` is noted in `received` and handled as SIGINT: inside the
    training loop a checkpoint at the end of the step, then KeyboardInterrupt."""

    def handle(sig: int, frame: FrameType | None) -> None:
        received.append(sig)
        as_sigint = signal.getsignal(signal.SIGINT)
        if callable(as_sigint):
            as_sigint(signal.SIGINT, frame)

    previous = signal.signal(signum, handle)
    try:
        yield
    finally:
        signal.signal(signum, previous)


class CellJob(Checkpointable):
    """One job on a node. Requeued by submitit with the same arguments (Checkpointable) once it
    has saved its checkpoint: the requeued job resumes from it."""

    def __call__(
        self, kind: Kind, cell_json: str, out_dir: str, events_file: str, log: LogSpec | None
    ) -> CellResult:
        cell = CellConfig.model_validate_json(cell_json)
        name, events = job_id(kind, cell), EventFile(Path(events_file))
        requeue = signal.getsignal(REQUEUE_SIGNAL)  # submitit's: checkpoint(), requeue, exit
        preempted: list[int] = []
        with sigterm_as_sigint(), _interrupt_on(REQUEUE_SIGNAL, preempted):
            try:
                events.put("start", name, None)
                progress = lambda p: events.put("progress", name, p)  # noqa: E731
                return run_job(kind, cell, Path(out_dir), progress, log)
            except KeyboardInterrupt:  # the checkpoint is saved
                pass
        if preempted and callable(requeue):
            requeue(REQUEUE_SIGNAL, None)  # exits the process, requeued (or raises: not)
        raise SystemExit(1)  # no result file: the driver sees the job end without one


@dataclass
class Running:
    """A job sent and not yet ended: its cell, its submitit Job (id, state, logs), its events."""

    cell: CellConfig
    job: Any
    events: EventFile
    tries: int = 1


@dataclass
class SlurmExecutor:
    """Sends cells as SLURM jobs (see the module's docstring) and reports their events.

    `cluster` "local": submitit runs the jobs as processes of this machine instead (tests, or a
    rehearsal of a sweep before it goes to the cluster)."""

    partition: str | None = None
    gpus: int | None = None
    time_min: int = 240
    extra: list[str] = field(default_factory=list)
    retries: int = 0
    max_in_flight: int | None = None  # None: every cell queued at once
    log: LogSpec | None = None
    cluster: str = "slurm"
    running: dict[str, Running] = field(default_factory=dict, init=False, repr=False)  # by job id

    def submitit_executor(self, folder: Path, cells: list[CellConfig]) -> submitit.AutoExecutor:
        """Submitit's executor for `cells`, writing its files in `folder`."""
        executor = submitit.AutoExecutor(folder=folder, cluster=self.cluster)
        gpus = self.gpus if self.gpus is not None else int(any(c.device == "cuda" for c in cells))
        executor.update_parameters(
            name="ssmbench",
            timeout_min=self.time_min,
            gpus_per_node=gpus,
            slurm_partition=self.partition,
            slurm_additional_parameters=sbatch_flags(self.extra) or None,
        )
        return executor

    def run(self, cells: list[CellConfig], out_dir: Path, emit: Emit, kind: Kind = "train") -> None:
        out_dir = Path(out_dir)
        stamp = time.strftime("%Y%m%d-%H%M%S")  # a folder per run: never an old job's files
        folder = Path(tempfile.mkdtemp(prefix=f"{kind}-{stamp}-", dir=own_folder(out_dir / SLURM)))
        executor = self.submitit_executor(folder, cells)
        todo: deque[tuple[CellConfig, int]] = deque((cell, 1) for cell in cells)
        self.running = {}
        try:
            while todo or self.running:
                self._submit(executor, todo, kind, out_dir, folder)
                time.sleep(POLL_S)
                self._collect(todo, emit)
        finally:
            self._cancel()

    def _submit(
        self,
        executor: submitit.AutoExecutor,
        todo: deque[tuple[CellConfig, int]],
        kind: Kind,
        out_dir: Path,
        folder: Path,
    ) -> None:
        """Send the next cells, as one job array (up to ARRAY_LIMIT, and to max_in_flight)."""
        room = ARRAY_LIMIT if self.max_in_flight is None else self.max_in_flight - len(self.running)
        batch = [todo.popleft() for _ in range(min(room, ARRAY_LIMIT, len(todo)))]
        if not batch:
            return
        sent = []
        with executor.batch():
            for cell, tries in batch:
                name = job_id(kind, cell)
                events = EventFile(folder / f"{safe_name(name)}.events.jsonl")
                events.path.unlink(missing_ok=True)  # a retry's events start afresh
                args = (kind, cell.model_dump_json(), str(out_dir), str(events.path), self.log)
                sent.append((name, cell, executor.submit(CellJob(), *args), events, tries))
        for name, cell, job, events, tries in sent:  # the array is submitted: the jobs have ids
            self.running[name] = Running(cell, job, events, tries)

    def _collect(self, todo: deque[tuple[CellConfig, int]], emit: Emit) -> None:
        """Pass on every job's new events; the result of each job that ended (or a retry)."""
        for name, entry in list(self.running.items()):
            for event in entry.events.read():
                emit(*event)
            if not entry.job.done():
                continue
            for event in entry.events.read():  # written just before the job ended
                emit(*event)
            del self.running[name]
            try:
                result = entry.job.result()
            except UncompletedJobError:
                if entry.tries <= self.retries:
                    todo.append((entry.cell, entry.tries + 1))
                    continue
                state = entry.job.state
                result = CellResult.lost(name, f"SLURM job {entry.job.job_id} ended without a "
                                               f"result (state {state})")  # fmt: skip
            except FailedJobError as e:
                last = [line for line in str(e).splitlines() if line.strip()][-1:]
                result = CellResult.lost(name, f"SLURM job {entry.job.job_id} failed: "
                                               f"{''.join(last).strip()}")  # fmt: skip
            emit("result", name, result)

    def _cancel(self) -> None:
        """Cancel the jobs still alive (each saves its checkpoint) and wait for them to end."""
        for entry in self.running.values():
            entry.job.cancel(check=False)
        deadline = time.monotonic() + CANCEL_WAIT_S
        while time.monotonic() < deadline and not all(e.job.done() for e in self.running.values()):
            time.sleep(POLL_S)
        self.running = {}
