"""Selective scan: the backends side by side (the fused C++ kernels (cpp), the 'torch' paths, the
reference, and mamba_ssm's kernel on CUDA when it imports).

One run, the same inputs for every method, shaped like a Mamba layer: u, delta, z (B, D, L) with
B=16 (--batch), D=128, N=16, input-dependent B and C (B, N, L), D, delta_bias and softplus, float32.
For each L and each pass (forward under no_grad; forward + backward of a random linear loss) it
prints the median time of --repeats runs after warm-up (methods interleaved round-robin, so machine
noise hits all alike; CUDA synchronized), the peak memory above what was allocated before the call
(CUDA: max_memory_allocated; CPU: peak resident set size VmHWM above the resident size after
returning freed heap memory to the system), and the ratios --baseline / method.

    python benchmarks/scan.py [--device cpu|cuda] [--lengths 256 512 784 2048] [--json]
                              [--batch 16] [--methods cpp torch-sequential ...]
                              [--threads T] [--clock wall|process]

The OpenMP wait policy is whatever the environment says (unset: OpenMP's default, spinning); on a
machine shared with other processes, the torch paths' hundreds of parallel regions per call suffer
from it, the fused kernels (one region per call) do not: that difference is part of what is
measured. Set OMP_WAIT_POLICY=PASSIVE to measure the torch paths without spinning.
"""

import argparse
import ctypes
import functools
import json
import os
import statistics
import time
from collections.abc import Callable

import torch

from ssmbench.ops.scan import resolve_backend, selective_scan, selective_scan_reference

DIM, N_STATE = 128, 16
BACKENDS = ("cpp", "torch-sequential", "torch-chunked", "cuda")


def make_inputs(length: int, device: str, batch: int) -> list[torch.Tensor]:
    """u, delta, A, B, C, D, z, delta_bias, like Mamba's: A = -(1..N), delta around 1e-2."""
    randn = functools.partial(torch.randn, generator=torch.Generator().manual_seed(length))
    tensors = [
        randn(batch, DIM, length),  # u
        randn(batch, DIM, length) * 0.5,  # delta, before bias and softplus
        -torch.arange(1, N_STATE + 1.0).repeat(DIM, 1),  # A (D, N)
        randn(batch, N_STATE, length),  # B
        randn(batch, N_STATE, length),  # C
        torch.ones(DIM),  # D
        randn(batch, DIM, length),  # z
        torch.log(torch.expm1(torch.full((DIM,), 1e-2))),  # delta_bias: softplus^-1(0.01)
    ]
    return [x.to(device).requires_grad_() for x in tensors]


def methods(device: str, wanted: list[str]) -> dict[str, Callable[..., torch.Tensor]]:
    """Name (as resolve_backend reports it) -> scan function with selective_scan's signature, for
    the wanted backends that run on this device."""
    found: dict[str, Callable[..., torch.Tensor]] = {}
    if "reference" in wanted:
        found["reference"] = selective_scan_reference
    for backend in [b for b in BACKENDS if b in wanted]:
        try:
            name = resolve_backend(device, backend)
        except ValueError:  # no mamba_ssm or no C++ compiler, or the wrong device
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
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument(
        "--methods", nargs="+", default=["cpp", "torch-sequential", "cuda"],
        help=f"any of reference {' '.join(BACKENDS)}",
    )  # fmt: skip
    parser.add_argument("--baseline", default="torch-sequential", help="ratios are baseline/method")
    parser.add_argument("--clock", choices=["wall", "process"], default="wall")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    scans = methods(args.device, args.methods)
    base = args.baseline if args.baseline in scans else next(iter(scans))
    rows = []
    for length in args.lengths:
        inputs = make_inputs(length, args.device, args.batch)
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
                        "time_ratio": ms[base] / ms[name],
                        "memory_ratio": mib[base] / max(mib[name], 1e-9),
                    }
                )
    setting = {
        "device": args.device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "clock": args.clock,
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "unset"),
        "repeats": args.repeats,
        "shape": {"B": args.batch, "D": DIM, "N": N_STATE},
        "baseline": base,
        "load_average_1min": os.getloadavg()[0],
        "torch_picks": resolve_backend(args.device, "torch"),
        "default_picks": resolve_backend(args.device),
    }
    if args.json:
        print(json.dumps({"setting": setting, "rows": rows}, indent=1))
        return
    print(" ".join(f"{k}={v}" for k, v in setting.items()))
    print(f"\n| L | pass | method | median ms | peak MiB | {base}/method time | memory |")
    print("|---|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['L']} | {r['pass']} | {r['method']} | {r['ms']:.1f} | {r['peak_mib']:.1f} "
            f"| {r['time_ratio']:.2f} | {r['memory_ratio']:.2f} |"
        )


if __name__ == "__main__":
    main()
