"""What one model costs: training-step time, inference-step time, peak memory, utilization.

Every model is measured by the same procedure, apart from training, on one batch drawn once by
the caller (data generation is never timed):

    train step = forward, the task loss (cross-entropy where labels != -100), backward,
                 gradient clipping and the optimizer step of the given TrainConfig (its
                 optimizer, weight decay, clipping and warm-up schedule; a fresh optimizer on a
                 deep copy, so the caller's model is untouched)
    infer step = forward under torch.inference_mode(), model in eval mode

Each is run `warmup` times untimed, then `repeats` times, each timed alone with time.perf_counter
between two device synchronizations. A time is reported as the median and the interquartile
range q75 - q25 of those samples (linear interpolation between order statistics), in ms.

Peak memory covers the whole training phase: the model copy, its gradients, Adam's state, the
activations of the warm-up and timed training steps. One training step on a throwaway copy runs
before it, so one-time set-up (kernel libraries loaded, thread pools, caches) is not counted.
    CUDA: torch.cuda.max_memory_allocated (and max_memory_reserved) after reset_peak_memory_stats
          just before the copy is made, nothing subtracted: every live tensor on the device
          counts (the inputs, model, optimizer state and activations). Apart from it, the
          largest device memory NVML reports for this process while the steps run
          (nvml_process_mem_mib: CUDA context, allocator cache and libraries included); None
          when nvidia-ml-py is missing or NVML cannot see the process.
    CPU:  the process's peak resident set size above its RSS just before the copy is made, after
          a garbage collection and glibc's malloc_trim (so earlier freed memory is handed back and
          must be touched again to be reused). The peak is the kernel's VmHWM, reset by writing
          "5" to /proc/self/clear_refs; where /proc is not writable, the maximum RSS seen by a
          thread sampling every millisecond (which can miss spikes shorter than that).

Utilization over the timed training steps:
    CUDA: the mean of NVML's GPU utilization sampled every 20 ms (each reading is the share of
          the driver's last 1/6 to 1 s during which a kernel ran, so the figure is only meaningful
          when the timed steps last well over a second); None when nvidia-ml-py is missing.
    CPU:  process CPU time / (wall time * torch.get_num_threads()), in %: 100 = every torch
          thread busy for the whole time.
"""

from __future__ import annotations

import copy
import ctypes
import gc
import importlib.metadata
import os
import platform
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import torch
from torch import Tensor, nn

from ssmbench.experiment.config import TrainConfig
from ssmbench.experiment.train import CompileBackend, compile_model, make_optimizer, train_step

MiB = 2**20
MEASURES = (
    "train_ms",
    "train_ms_iqr",
    "infer_ms",
    "infer_ms_iqr",
    "peak_mem_mib",
    "reserved_mem_mib",
    "nvml_process_mem_mib",
    "util_pct",
    "util_kind",
    "compile_s",
)


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cpu'; 'cuda'."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "--device cuda was asked for but torch.cuda.is_available() is False; "
            "use --device cpu or auto"
        )
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {name!r}")
    return torch.device(name)


def check_counts(warmup: int, repeats: int) -> None:
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")


def summarize(samples_ms: list[float]) -> tuple[float, float]:
    """(median, q75 - q25) of the samples."""
    if not samples_ms:
        raise ValueError("summarize needs at least one sample")
    q25, median, q75 = np.percentile(samples_ms, [25, 50, 75])
    return float(median), float(q75 - q25)


def time_steps(step: Callable[[], None], repeats: int, sync: Callable[[], None]) -> list[float]:
    """Time `repeats` calls of step, each alone between two synchronizations; samples in ms."""
    samples = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        step()
        sync()
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


def _rss_bytes() -> int:
    return psutil.Process().memory_info().rss


def _release_freed_memory() -> None:
    """Collect garbage and hand glibc's free heap pages back to the kernel, where glibc is used."""
    gc.collect()
    try:
        libc = ctypes.CDLL(None)  # the C library the interpreter is linked with
    except (OSError, TypeError):  # no such handle on this platform
        return
    if hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def _reset_peak_rss() -> bool:
    """Reset the kernel's VmHWM to the current RSS; False where /proc/self/clear_refs is closed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _peak_rss_bytes() -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024


class _Sampler:
    """Call `read` every `interval` seconds on a background thread, from start to stop."""

    def __init__(self, read: Callable[[], float], interval: float) -> None:
        self.read, self.interval = read, interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.read())
            self._stop.wait(self.interval)

    def start(self) -> _Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(self.read())


class PeakMemory:
    """Peak memory of the code inside the `with` block, in MiB (see the module docstring)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mib: float | None = None
        self.reserved_mib: float | None = None

    def __enter__(self) -> PeakMemory:
        _release_freed_memory()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        self._baseline = _rss_bytes()
        self._sampler = None if _reset_peak_rss() else _Sampler(_rss_bytes, 1e-3).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mib = torch.cuda.max_memory_allocated(self.device) / MiB
            self.reserved_mib = torch.cuda.max_memory_reserved(self.device) / MiB
            return
        if self._sampler is None:
            peak = _peak_rss_bytes()
        else:
            self._sampler.stop()
            peak = max(self._sampler.samples)
        self.peak_mib = (peak - self._baseline) / MiB


def _nvml_process_bytes(device: torch.device) -> int | None:
    """The device memory NVML counts for this process (context included), or None."""
    try:
        import pynvml

        pynvml.nvmlInit()
        index = device.index if device.index is not None else torch.cuda.current_device()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        processes = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
    except Exception:  # nvidia-ml-py missing, or NVML can't read this device (e.g. MIG)
        return None
    used = [p.usedGpuMemory for p in processes if p.pid == os.getpid() and p.usedGpuMemory]
    return max(used) if used else None


class ProcessDeviceMemory:
    """The largest NVML process device memory (MiB) seen during the block; None off CUDA."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mib: float | None = None
        self._sampler: _Sampler | None = None

    def __enter__(self) -> ProcessDeviceMemory:
        if self.device.type == "cuda" and _nvml_process_bytes(self.device) is not None:
            self._sampler = _Sampler(lambda: _nvml_process_bytes(self.device) or 0, 0.02).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._sampler is not None:
            self._sampler.stop()
            self.peak_mib = max(self._sampler.samples) / MiB


class Utilization:
    """Mean utilization in % over the `with` block and its kind (see the module docstring)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.pct: float | None = None
        self.kind: str | None = None

    def __enter__(self) -> Utilization:
        if self.device.type == "cuda":
            self._sampler = None
            try:
                torch.cuda.utilization(self.device)
            except Exception:  # nvidia-ml-py missing, or NVML can't read this device (e.g. MIG)
                return self
            self._sampler = _Sampler(lambda: torch.cuda.utilization(self.device), 0.02).start()
            return self
        self._cpu_start, self._wall_start = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            if self._sampler is not None:
                self._sampler.stop()
                self.pct, self.kind = float(np.mean(self._sampler.samples)), "gpu-nvml"
            return
        cpu = time.process_time() - self._cpu_start
        wall = time.perf_counter() - self._wall_start
        self.pct = 100 * cpu / (wall * torch.get_num_threads())
        self.kind = "cpu-process"


def _synchronizer(device: torch.device) -> Callable[[], None]:
    """What waits for the device's queued work (nothing on the CPU), so a timer sees it done."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def _trainer(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    device: torch.device,
    hp: TrainConfig,
    compile: bool,
    compile_backend: CompileBackend,
) -> tuple[nn.Module, Callable[[], None]]:
    """A fresh copy of `model` on `device` with its own optimizer, and its training step."""
    trainee = copy.deepcopy(model).to(device).train()
    if compile:
        compile_model(trainee, compile_backend)
    optimizer = make_optimizer(trainee, hp)
    steps = iter(range(1 << 62))

    def step() -> None:
        train_step(trainee, optimizer, inputs, labels, hp, next(steps))

    return trainee, step


def measure(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    device: torch.device,
    warmup: int = 3,
    repeats: int = 20,
    hp: TrainConfig | None = None,
    compile: bool = False,
    compile_backend: CompileBackend = "inductor",
) -> dict:
    """Cost of one training step (as `hp` trains; TrainConfig() by default) and one inference
    step of `model` on inputs (B, T) and labels (B, T), where the model maps tokens (B, T) to
    logits (B, T, V). Keys: MEASURES, each as the module docstring defines it. With `compile`,
    the model runs under torch.compile; compile_s is then the priming step's wall time (tracing
    and code generation, plus one step), kept apart from the step times, which come after it."""
    hp = hp or TrainConfig()
    check_counts(warmup, repeats)
    inputs, labels = inputs.to(device), labels.to(device)
    sync = _synchronizer(device)
    setup = (inputs, labels, device, hp, compile, compile_backend)
    started = time.perf_counter()
    _trainer(model, *setup)[1]()  # priming: one-time library and cache set-up stays out of the peak
    sync()
    prime_s = time.perf_counter() - started
    with PeakMemory(device) as memory, ProcessDeviceMemory(device) as device_memory:
        trainee, timed_step = _trainer(model, *setup)
        for _ in range(warmup):
            timed_step()
        with Utilization(device) as utilization:
            train_samples = time_steps(timed_step, repeats, sync)

    trainee.eval()

    def infer_step() -> None:
        with torch.inference_mode():
            trainee(inputs)

    for _ in range(warmup):
        infer_step()
    infer_samples = time_steps(infer_step, repeats, sync)
    train_ms, train_iqr = summarize(train_samples)
    infer_ms, infer_iqr = summarize(infer_samples)
    return {
        "train_ms": train_ms,
        "train_ms_iqr": train_iqr,
        "infer_ms": infer_ms,
        "infer_ms_iqr": infer_iqr,
        "peak_mem_mib": memory.peak_mib,
        "reserved_mem_mib": memory.reserved_mib,
        "nvml_process_mem_mib": device_memory.peak_mib,
        "util_pct": utilization.pct,
        "util_kind": utilization.kind,
        "compile_s": prime_s if compile else None,
    }


def _git(*args: str, cwd: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def _git_commit() -> str | None:
    """Short commit of the checkout holding this package, '-dirty' if it has changes; None when
    the package is not a tracked file of a git checkout (e.g. installed into site-packages)."""
    package = Path(__file__).resolve().parent.parent
    if _git("ls-files", "--error-unmatch", "__init__.py", cwd=package) is None:
        return None
    commit = _git("rev-parse", "--short", "HEAD", cwd=package)
    if commit is None:
        return None
    return commit + "-dirty" if _git("status", "--porcelain", cwd=package) else commit


def _cpu_name() -> str | None:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    return found.group(1).strip() if found else platform.processor() or None


ABSENT = "absent"  # the version of a package or toolkit this environment does not have
# The kernel packages a result depends on: record key -> the distributions that install it.
KERNEL_PACKAGES = {
    "mamba_ssm": ("mamba-ssm",),
    "causal_conv1d": ("causal-conv1d",),
    "fla": ("fla-core", "flash-linear-attention"),
    "triton": ("triton",),
}


def _installed(*distributions: str) -> str | None:
    """The version of the first of `distributions` installed, else None."""
    for name in distributions:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _gpu(device: torch.device) -> dict[str, object]:
    """Name, memory (MiB) and driver of the GPU `device` is (NVML's when nvidia-ml-py reads it,
    else torch's, which knows no driver); None for each off CUDA."""
    if device.type != "cuda":
        return {"gpu_name": None, "gpu_memory_mib": None, "gpu_driver": None}
    index = device.index if device.index is not None else torch.cuda.current_device()
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        name, driver = pynvml.nvmlDeviceGetName(handle), pynvml.nvmlSystemGetDriverVersion()
        return {
            "gpu_name": name.decode() if isinstance(name, bytes) else name,
            "gpu_memory_mib": round(pynvml.nvmlDeviceGetMemoryInfo(handle).total / MiB),
            "gpu_driver": driver.decode() if isinstance(driver, bytes) else driver,
        }
    except Exception:  # nvidia-ml-py missing, or NVML can't read this device (e.g. MIG, ROCm)
        properties = torch.cuda.get_device_properties(index)
        return {
            "gpu_name": properties.name,
            "gpu_memory_mib": round(properties.total_memory / MiB),
            "gpu_driver": None,
        }


def environment(device: torch.device) -> dict:
    """Where and with what a measurement was made: the versions GPU numbers depend on (torch,
    CUDA or ROCm, the kernel packages; "absent" where there is none), the CPU and the GPU."""
    return {
        "device": device.type,
        "device_name": (
            torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
        ),
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        # read when torch loaded OpenMP; ssmbench's processes set PASSIVE (ssmbench.runtime)
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset (OpenMP's spin-then-sleep)"),
        "ssmbench_version": _installed("ssmbench"),
        "git_commit": _git_commit(),
        "python_version": platform.python_version(),
        "cuda_version": torch.version.cuda or ABSENT,
        "rocm_version": getattr(torch.version, "hip", None) or ABSENT,
        **{f"{key}_version": _installed(*d) or ABSENT for key, d in KERNEL_PACKAGES.items()},
        "cpu_model": _cpu_name(),
        "cpu_count": os.cpu_count(),
        **_gpu(device),
        "hostname": socket.gethostname(),
    }
