"""The Ray executor: every cell a Ray task, on one machine or a cluster (`ssmbench[ray]`).

Tasks ask for `num_gpus` (a fraction allowed) when cells run on CUDA, else `num_cpus`. Results
come back to the driver, which alone writes the store; progress points travel through a Ray
queue so one display follows every worker. A task whose worker dies is retried `retries` times,
then recorded as failed. Checkpoints go to the output folder: on a cluster, make it a shared path
for interrupted cells to resume on another node.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from ssmbench import runtime
from ssmbench.experiment.cell import job_id
from ssmbench.experiment.config import CellConfig, ConfigError, shown
from ssmbench.experiment.executors import Emit
from ssmbench.experiment.results import CellResult
from ssmbench.experiment.sinks import LogSpec


def _run_remote(
    kind: str, cell_json: str, out_dir: str, events: Any, log: LogSpec | None
) -> CellResult:
    from ssmbench.experiment.cell import job_id, run_job

    cell = CellConfig.model_validate_json(cell_json)
    name = job_id(kind, cell)  # type: ignore[arg-type]
    events.put(("start", name, None))
    progress = lambda p: events.put(("progress", name, p))  # noqa: E731
    return run_job(kind, cell, Path(out_dir), progress, log)  # type: ignore[arg-type]


def check_address(address: str | None) -> None:
    """Fail fast, before anything is written, when a Ray cluster cannot be reached."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ConfigError('the ray executor needs Ray: pip install "ssmbench[ray]"') from None
    if address is None or address == "local":
        return
    if address == "auto":
        from ray._private.services import find_bootstrap_address

        if not find_bootstrap_address(None):
            raise ConfigError(
                "--ray-address auto found no running Ray cluster on this machine; "
                "start one with `ray start --head` or give --ray-address HOST:PORT"
            )
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray-address must be auto or HOST:PORT, got {shown(address)}")
    try:
        speaks_grpc = _speaks_grpc(host, int(port))
    except OSError as e:
        raise ConfigError(f"cannot reach a Ray cluster at {address}: {e.strerror or e}") from None
    if not speaks_grpc:
        raise ConfigError(
            f"{address} answers, but not as a Ray cluster (no gRPC reply within "
            f"{_PROBE_S:g} s); give the address `ray start --head` printed"
        )


# The HTTP/2 client preface and an empty SETTINGS frame: a gRPC server (Ray's GCS and its client
# server are gRPC) must answer with a SETTINGS frame (frame type 4) before anything else.
_H2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_PROBE_S = 3.0


def _speaks_grpc(host: str, port: int) -> bool:
    """True when HOST:PORT answers the HTTP/2 preface as a gRPC server does; OSError if closed."""
    with socket.create_connection((host, port), timeout=_PROBE_S) as conn:
        try:
            conn.sendall(_H2_HELLO)
            head = b""
            while len(head) < 9:
                chunk = conn.recv(9 - len(head))
                if not chunk:
                    return False
                head += chunk
        except (TimeoutError, ConnectionResetError, BrokenPipeError):
            return False
    return head[3] == 4


class RayExecutor:
    def __init__(
        self,
        address: str | None = None,
        num_cpus: float = 1.0,
        num_gpus: float = 1.0,
        retries: int = 0,
        max_in_flight: int | None = None,
        log: LogSpec | None = None,
    ) -> None:
        self.address, self.num_cpus, self.num_gpus, self.retries = (
            address,
            num_cpus,
            num_gpus,
            retries,
        )
        self.max_in_flight = max_in_flight  # None: as many as the cluster can take
        self.log = log

    def _gpus_per_cell(self, cells: list[CellConfig]) -> float:
        import ray

        wants_cuda = any(c.device == "cuda" for c in cells) or (
            any(c.device == "auto" for c in cells) and ray.cluster_resources().get("GPU", 0) > 0
        )
        return self.num_gpus if wants_cuda else 0.0

    def run(self, cells: list[CellConfig], out_dir: Path, emit: Emit, kind: str = "train") -> None:
        import ray
        from ray.util.queue import Empty, Queue

        if not ray.is_initialized():
            ray.init(address=self.address, log_to_driver=False, include_dashboard=False)
        events = Queue()
        remote = ray.remote(_run_remote).options(
            num_cpus=self.num_cpus,
            num_gpus=self._gpus_per_cell(cells),
            max_retries=self.retries,
            retry_exceptions=False,
            # A cluster's workers were not started from this process: give them the OpenMP set-up
            # (a local Ray inherits this process's environment, already set up by the CLI).
            runtime_env={"env_vars": runtime.worker_env()} if self.address else None,
        )
        todo = list(cells)
        pending: dict[Any, str] = {}

        def submit() -> None:
            while todo and (self.max_in_flight is None or len(pending) < self.max_in_flight):
                cell = todo.pop(0)
                ref = remote.remote(kind, cell.model_dump_json(), str(out_dir), events, self.log)
                pending[ref] = job_id(kind, cell)  # type: ignore[arg-type]

        def drain() -> None:
            while True:
                try:
                    emit(*events.get_nowait())
                except Empty:
                    return

        try:
            submit()
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=0.2)
                drain()
                for ref in done:
                    cell_id = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayError as e:
                        result = CellResult.lost(cell_id, str(e).splitlines()[0])
                    drain()
                    emit("result", cell_id, result)
                submit()
        finally:
            for ref in pending:
                ray.cancel(ref)
            events.shutdown()
