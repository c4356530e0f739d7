"""Selective scan: reference vs the 'torch' paths (and mamba_ssm's kernel on CUDA when it imports).

One run, the same inputs for every method, shaped like a Mamba layer: u, delta, z (B, D, L) with
B=8, D=128, N=16, input-dependent B and C (B, N, L), D, delta_bias and softplus, float32. For each
L and each pass (forward under no_grad; forward + backward of a random linear loss) it prints the
median time of --repeats runs after warm-up (methods interleaved round-robin, so machine noise hits
all alike; CUDA synchronized), the peak memory above what was allocated before the call (CUDA:
max_memory_allocated; CPU: peak resident set size VmHWM above the resident size after returning
freed heap memory to the system), and the ratios reference / method.

    python benchmarks/scan.py [--device cpu|cuda] [--lengths 256 512 784 2048] [--json]
                              [--threads T] [--clock wall|process]

OMP_WAIT_POLICY defaults to PASSIVE here: with OpenMP's default spin-waiting, every parallel region
leaves the worker thread spinning, and on a machine shared with other processes the 'torch' paths
(hundreds of parallel regions per call) ran ~4x slower than the reference at 2 threads instead of
~9x faster. Set OMP_WAIT_POLICY=ACTIVE to measure the default.
"""

import argparse
import ctypes
import functools
import json
import os
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when torch loads OpenMP

import torch  # noqa: E402

from ssmbench.ops.scan import (  # noqa: E402
    resolve_backend,
    selective_scan,
    selective_scan_reference,
)

BATCH, DIM, N_STATE = 8, 128, 16


def make_inputs(length: int, device: str) -> list[torch.Tensor]:
    """u, delta, A, B, C, D, z, delta_bias, like Mamba's: A = -(1..N), delta around 1e-2."""
    randn = functools.partial(torch.randn, generator=torch.Generator().manual_seed(length))
    tensors = [
        randn(BATCH, DIM, length),  # u
        randn(BATCH, DIM, length) * 0.5,  # delta, before bias and softplus
        -torch.arange(1, N_STATE + 1.0).repeat(DIM, 1),  # A (D, N)
        randn(BATCH, N_STATE, length),  # B
        randn(BATCH, N_STATE, length),  # C
        torch.ones(DIM),  # D
        randn(BATCH, DIM, length),  # z
        torch.log(torch.expm1(torch.full((DIM,), 1e-2))),  # delta_bias: softplus^-1(0.01)
    ]
    return [x.to(device).requires_grad_() for x in tensors]


def methods(device: str) -> dict[str, Callable[..., torch.Tensor]]:
    """Name (as resolve_backend reports it) -> scan function with selective_scan's signature."""
    found: dict[str, Callable[..., torch.Tensor]] = {"reference": selective_scan_reference}
    for backend in ("torch-sequential", "torch-chunked", "numba", "cuda"):
        try:
            name = resolve_backend(device, backend)
        except ValueError:  # no mamba_ssm, or not on CUDA
            continue
        found[name] = lambda *args, b=backend, **kw: selective_scan(*args, **kw, backend=b)
    return found


def step(scan: Callable[..., torch.Tensor], inputs: list[torch.Tensor], backward: bool):
    u, delta, A, B, C, D, z, delta_bias = inputs
    weights = torch.randn(u.shape, generator=torch.Generator().manual_seed(0)).to(u.device)

    def run() -> None:
        with torch.set_grad_enabled(backward):
            out = scan(u, delta, A, B, C, D, z=z, delta_bias=delta_bias, delta_softplus=True)
            if backward:
                torch.autograd.grad((out * weights).sum(), inputs)

    return run


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def median_ms(runs: dict[str, Callable[[], None]], device, warmup, repeats, clock) -> dict:
    now = time.process_time if clock == "process" else time.perf_counter
    for _ in range(warmup):
        for run in runs.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            synchronize(device)
            start = now()
            run()
            synchronize(device)
            times[name].append(1e3 * (now() - start))
    return {name: statistics.median(t) for name, t in times.items()}


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1])


def peak_mib(run: Callable[[], None], device: str) -> float:
    """Memory the call needs above what is allocated before it, at its peak."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        run()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed heap pages would hide new allocations
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # VmHWM := VmRSS
    before = _rss_kib("VmRSS")
    run()
    return (_rss_kib("VmHWM") - before) / 2**10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 784, 2048])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch default)")
    parser.add_argument("--clock", choices=["wall", "process"], default="wall")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    scans = methods(args.device)
    rows = []
    for length in args.lengths:
        inputs = make_inputs(length, args.device)
        for backward in (False, True):
            runs = {name: step(scan, inputs, backward) for name, scan in scans.items()}
            ms = median_ms(runs, args.device, args.warmup, args.repeats, args.clock)
            mib = {name: peak_mib(run, args.device) for name, run in runs.items()}
            for name in runs:
                rows.append(
                    {
                        "L": length,
                        "pass": "fwd+bwd" if backward else "fwd",
                        "method": name,
                        "ms": ms[name],
                        "peak_mib": mib[name],
                        "time_ratio": ms["reference"] / ms[name],
                        "memory_ratio": mib["reference"] / max(mib[name], 1e-9),
                    }
                )
    setting = {
        "device": args.device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "clock": args.clock,
        "OMP_WAIT_POLICY": os.environ["OMP_WAIT_POLICY"],
        "repeats": args.repeats,
        "shape": {"B": BATCH, "D": DIM, "N": N_STATE},
        "torch_picks": resolve_backend(args.device, "torch"),
        "default_picks": resolve_backend(args.device),
    }
    if args.json:
        print(json.dumps({"setting": setting, "rows": rows}, indent=1))
        return
    print(" ".join(f"{k}={v}" for k, v in setting.items()))
    print("\n| L | pass | method | median ms | peak MiB | ref/method time | ref/method memory |")
    print("|---|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['L']} | {r['pass']} | {r['method']} | {r['ms']:.1f} | {r['peak_mib']:.1f} "
            f"| {r['time_ratio']:.2f} | {r['memory_ratio']:.2f} |"
        )


if __name__ == "__main__":
    main()
