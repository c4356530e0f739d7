"""ssmbench's sequence ops against the pure-PyTorch implementations a user would run instead,
installed from their own packages and called as shipped (`pip install -e ".[refs]"`: fla-core,
triton, mambapy; a peer that does not import is listed as such, never replaced).

    op                  ours                                   peers
    selective scan      ops.selective_scan (auto backend)      mambapy pscan (+ its y = C·h + D u)
    scalar decay        ops.linear_attention, (B, H, L, 1)     fla naive_chunk_simple_gla
    per-key decay       ops.linear_attention, (B, H, L, K)     fla naive_recurrent_gla
    retention           ops.linear_attention, fixed decays     fla naive_retention
    Taylor (Based)      linear_attention of taylor_features    fla naive_parallel_based,
                                                               fla naive_chunk_based
    gated delta rule    ops.delta_rule                         fla naive_chunk_gated_delta_rule

One run, the same inputs for every implementation of an op, float32: the median of --repeats
calls of the forward (no_grad) and of forward + backward (a random linear loss), and the peak
memory of forward + backward (RSS above the baseline on the CPU, allocated memory on CUDA), with
each peer's time over ours. Quadratic and step-by-step peers stop at --peer-max-length (their
memory or time grows past what a run should wait for); mamba_ssm's `selective_scan_ref` and
`ssd_minimal_discrete` need mamba_ssm, which builds only with CUDA: not run here.

    python benchmarks/ops.py [--lengths 256 512 1024 2048 4096] [--repeats 3]
                             [--threads T] [--peer-max-length 2048] [--ops scan delta ...]
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import time
from collections.abc import Callable

# first, as the `ssmbench` command does: the OpenMP wait policy is read when torch loads
from ssmbench import runtime  # noqa: F401

# isort: split
import torch

from ssmbench.experiment.measure import PeakMemory
from ssmbench.layers.linear_attention import taylor_features
from ssmbench.ops.delta_rule import delta_rule
from ssmbench.ops.linear_attention import linear_attention
from ssmbench.ops.scan import selective_scan

B, H, K, V = 8, 4, 32, 32  # the linear-attention shapes
D, N = 128, 16  # the selective scan's channels and state
CPU = torch.device("cpu")


def peer(module: str, name: str) -> Callable | None:
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError:
        return None


def bhld(L: int, last: int) -> torch.Tensor:
    return torch.randn(B, H, L, last)


def fla_layout(*xs: torch.Tensor) -> list[torch.Tensor]:
    """(B, H, L, ...) -> fla's (B, L, H, ...)."""
    return [x.transpose(1, 2) for x in xs]


def scan_case(L: int) -> dict[str, Callable]:
    u, delta = torch.randn(B, D, L), torch.rand(B, D, L) * 0.1
    A, Bm, C, Dv = -torch.arange(1.0, N + 1).repeat(D, 1), *torch.randn(2, B, N, L), torch.ones(D)
    pscan = peer("mambapy.pscan", "pscan")

    def mambapy(u, delta, A, Bm, C):
        dA = torch.exp(delta.mT[..., None] * A)  # (B, L, D, N)
        bx = delta.mT[..., None] * Bm.mT[:, :, None] * u.mT[..., None]  # (B, L, D, N)
        return (pscan(dA, bx) * C.mT[:, :, None]).sum(-1) + Dv * u.mT  # (B, L, D)

    args = (u, delta, A, Bm, C)
    return {"ssmbench": (lambda *a: selective_scan(*a, Dv), args),
            "mambapy pscan": (mambapy if pscan else None, args)}  # fmt: skip


def linear_cases(L: int) -> dict[str, dict[str, tuple]]:
    q, k, v = bhld(L, K), bhld(L, K), bhld(L, V)
    scalar = torch.nn.functional.logsigmoid(torch.randn(B, H, L, 1)) / 8
    per_key = torch.nn.functional.logsigmoid(torch.randn(B, H, L, K)) / 8
    gamma = (1 - 2.0 ** (-5.0 - torch.arange(H, dtype=torch.float32))).log()
    fixed = gamma[:, None, None].expand(B, H, L, 1)
    simple = peer("fla.ops.simple_gla.naive", "naive_chunk_simple_gla")
    gla = peer("fla.ops.gla.naive", "naive_recurrent_gla")
    retention = peer("fla.ops.retention.naive", "naive_retention")
    ours = lambda q, k, v, a: linear_attention(q * K**-0.5, k, v, a)  # noqa: E731
    return {
        "scalar decay": {
            "ssmbench": (ours, (q, k, v, scalar)),
            "fla naive_chunk_simple_gla": (
                simple and (lambda q, k, v, a: simple(*fla_layout(q, k, v), a[..., 0].mT)[0]),
                (q, k, v, scalar),
            ),
        },
        "per-key decay": {
            "ssmbench": (ours, (q, k, v, per_key)),
            "fla naive_recurrent_gla": (
                gla and (lambda q, k, v, a: gla(*fla_layout(q * K**-0.5, k, v, a))[0]),
                (q, k, v, per_key),
            ),
        },
        "retention": {
            "ssmbench": (ours, (q, k, v, fixed)),
            "fla naive_retention": (retention and (lambda q, k, v: retention(q, k, v)), (q, k, v)),
        },
    }


def based_case(L: int) -> dict[str, tuple]:
    f = 16
    q, k, v = bhld(L, f), bhld(L, f), bhld(L, V)
    parallel = peer("fla.ops.based.naive", "naive_parallel_based")
    chunked = peer("fla.ops.based.naive", "naive_chunk_based")

    def ours(q, k, v):
        v1 = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)
        no_decay = q.new_zeros(*q.shape[:3], 1)
        o = linear_attention(taylor_features(q), taylor_features(k), v1, no_decay)
        return o[..., :-1] / (o[..., -1:] + 1e-12)

    return {"ssmbench": (ours, (q, k, v)),
            "fla naive_parallel_based": (parallel, (q, k, v)),
            "fla naive_chunk_based": (chunked, (q, k, v))}  # fmt: skip


def delta_case(L: int) -> dict[str, tuple]:
    q, k = (torch.nn.functional.normalize(bhld(L, K), dim=-1) for _ in range(2))
    v, beta = bhld(L, V), torch.rand(B, H, L)
    g = torch.nn.functional.logsigmoid(torch.randn(B, H, L)) / 8
    chunk = peer("fla.ops.gated_delta_rule.naive", "naive_chunk_gated_delta_rule")

    def fla(q, k, v, beta, g):
        return chunk(*fla_layout(q, k, v), g.mT, beta.mT, scale=1.0)[0]

    return {"ssmbench": (lambda q, k, v, b, g: delta_rule(q, k, v, b, g), (q, k, v, beta, g)),
            "fla naive_chunk_gated_delta_rule": (chunk and fla, (q, k, v, beta, g))}  # fmt: skip


CASES = {
    "scan": lambda L: {"selective scan": scan_case(L)},
    "linear": linear_cases,
    "based": lambda L: {"Taylor (Based)": based_case(L)},
    "delta": lambda L: {"gated delta rule": delta_case(L)},
}
CAPPED = ("naive_recurrent", "naive_parallel", "naive_retention", "pscan")  # step-wise/quadratic


def timed(fn: Callable, args: tuple, backward: bool, repeats: int) -> float:
    """Median ms of `repeats` calls (after one warm-up)."""
    leaves = [a.detach().requires_grad_(backward) for a in args]

    def once() -> None:
        if backward:
            out = fn(*leaves)
            (out * torch.ones_like(out)).sum().backward()
        else:
            with torch.no_grad():
                fn(*leaves)

    once()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        once()
        samples.append((time.perf_counter() - started) * 1e3)
    return statistics.median(samples)


def measure(fn: Callable, args: tuple, repeats: int) -> tuple[float, float, float]:
    forward = timed(fn, args, False, repeats)
    with PeakMemory(CPU) as memory:
        both = timed(fn, args, True, repeats)
    return forward, both, memory.peak_mib


def run_op(name: str, impls: dict[str, tuple], L: int, args: argparse.Namespace) -> None:
    """Print a row per implementation of one op at length L, ours first."""
    ours = None
    for impl, (fn, fn_args) in impls.items():
        row = f"| {name} | {L} | {impl} |"
        capped = impl != "ssmbench" and any(c in impl for c in CAPPED)
        if fn is None:
            print(f"{row} not installed | | |")
        elif capped and args.peer_max_length < L:
            print(f"{row} past --peer-max-length | | |")
        else:
            fwd, both, peak = measure(fn, fn_args, args.repeats)
            ours = ours or (fwd, both)
            ratios = ("", "") if impl == "ssmbench" else (f" ({fwd / ours[0]:.2f}x)",
                                                          f" ({both / ours[1]:.2f}x)")  # fmt: skip
            print(f"{row} {fwd:.1f}{ratios[0]} | {both:.1f}{ratios[1]} | {peak:.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--peer-max-length", type=int, default=2048)
    parser.add_argument("--ops", nargs="+", choices=list(CASES), default=list(CASES))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    policy = os.environ.get("OMP_WAIT_POLICY", "unset")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads (OMP_WAIT_POLICY "
          f"{policy}), float32, CPU; median of {args.repeats}; peer / ssmbench time in "
          "brackets")  # fmt: skip
    print("| op | L | implementation | forward (ms) | fwd+bwd (ms) | peak fwd+bwd (MiB) |")
    print("|---|---:|---|---:|---:|---:|")
    for L in args.lengths:
        torch.manual_seed(0)
        for op in args.ops:
            for name, impls in CASES[op](L).items():
                run_op(name, impls, L, args)


if __name__ == "__main__":
    main()
