"""S4 (dense, doubling) vs S4LowRank (Cauchy) vs S4D (Vandermonde): forward + backward on CPU.

Measures, side by side in one run (the mixers interleaved round-robin, so machine noise hits all of
them alike), the median time of
  layer:  forward + backward of the mixer on x (batch, L, d_model),
  kernel: forward + backward of kernel(L) alone,
and prints ratios to S4LowRank and growth with L. Time is this process's CPU time on --threads
threads (default 1), which other processes on a shared machine disturb far less than wall time;
on one thread of an idle machine the two agree. "S4 loop" is S4 with the study's kernel, one
matrix power per step k < L (layer table only, fewer repeats: it is slow).

    python benchmarks/lti.py [--lengths 256 512 784] [--batch 64] [--d-model 64] [--d-state 16]
"""

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from ssmbench.layers.lti import S4, S4D, LTIMixer, S4LowRank


class S4StudyLoop(S4):
    """S4 whose kernel is a Python loop of L matrix powers (the study's implementation)."""

    def kernel(self, L: int) -> torch.Tensor:
        dA, dB, C = self.discrete_ssm()
        columns = [torch.linalg.matrix_power(dA, k) @ dB[..., None] for k in range(L)]
        return torch.einsum("hn,hnl->hl", C, torch.cat(columns, dim=-1))


def mixers(d_model: int, d_state: int) -> dict[str, LTIMixer]:
    return {
        "S4": S4(d_model, d_state),
        "S4LowRank": S4LowRank(d_model, d_state),
        "S4D-Real": S4D(d_model, d_state, init="real"),
        "S4D-Inv": S4D(d_model, d_state, init="inv"),
    }


def median_ms(steps: dict[str, Callable[[], None]], warmup: int, repeats: int) -> dict[str, float]:
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.process_time()
            step()
            times[name].append(1e3 * (time.process_time() - start))
    return {name: statistics.median(t) for name, t in times.items()}


def layer_step(layer: LTIMixer, x: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        layer.zero_grad(set_to_none=True)
        layer(x).square().mean().backward()

    return step


def kernel_step(layer: LTIMixer, L: int) -> Callable[[], None]:
    def step() -> None:
        layer.zero_grad(set_to_none=True)
        layer.kernel(L).square().sum().backward()

    return step


def print_table(title: str, results: dict[int, dict[str, float]]) -> None:
    lengths = list(results)
    names = list(results[lengths[0]])
    print(f"\n{title}: median ms (ratio to S4LowRank)")
    print(f"{'mixer':<11}" + "".join(f"{'L=' + str(L):>20}" for L in lengths) + "   growth vs L")
    for name in names:
        cells = []
        for L in lengths:
            ms, ratio = results[L][name], results[L][name] / results[L]["S4LowRank"]
            cells.append(f"{ms:>10.2f} ({ratio:>5.2f}x)")
        growth = results[lengths[-1]][name] / results[lengths[0]][name]
        print(f"{name:<11}" + "".join(f"{c:>20}" for c in cells) + f"   {growth:.2f}")
    print(
        f"(growth = time at L={lengths[-1]} / time at L={lengths[0]}; linear would be "
        f"{lengths[-1] / lengths[0]:.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 784])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--d-state", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--loop-repeats", type=int, default=3, help="0 skips the study's S4")
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    layers = mixers(args.d_model, args.d_state)
    loop = S4StudyLoop(args.d_model, args.d_state)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
        f"d_model {args.d_model}, d_state {args.d_state}, {args.repeats} repeats"
    )
    layer_ms, kernel_ms = {}, {}
    for L in args.lengths:
        x = torch.randn(args.batch, L, args.d_model)
        layer_ms[L] = median_ms(
            {name: layer_step(m, x) for name, m in layers.items()}, args.warmup, args.repeats
        )
        if args.loop_repeats:
            layer_ms[L] |= median_ms({"S4 loop": layer_step(loop, x)}, 0, args.loop_repeats)
        kernel_ms[L] = median_ms(
            {name: kernel_step(m, L) for name, m in layers.items()}, args.warmup, args.repeats
        )
    print_table("layer forward+backward", layer_ms)
    print_table("kernel(L) forward+backward", kernel_ms)


if __name__ == "__main__":
    main()
