"""The delta-rule models' training step beside the Transformer's and GLA's, on the CPU.

Times, in one run, the training step (forward + backward + AdamW step; ssmbench's `bench`
machinery: median of --repeats steps after 3 warm-up steps) of the five delta-rule models, the
Transformer and GLA, d_model 64, 2 layers, on --threads threads, at two shapes:

    quick: batch 32, L 64 (the `quick` preset's task: selective copying of 4 tokens, 72 inputs)
    long:  batch 8, L 1024 (1032 inputs)

and prints each time with its ratio to the Transformer's, against issue 18's targets: at most 2x
the Transformer at the quick shape, faster than it at L 1024.

    python benchmarks/delta_rule.py [--repeats 10] [--threads 2]
"""

import argparse
import os

# first, as the `ssmbench` command does: the OpenMP wait policy is read when torch loads
from ssmbench import runtime  # noqa: F401

# isort: split
import torch

from ssmbench.experiment.bench import bench, task_section

MODELS = [
    "transformer",
    "gla",
    "deltanet",
    "gated-deltanet",
    "kda",
    "gated-deltanet-2",
    "gated-deltaproduct",
]
SHAPES = {"quick": (32, 64, 2.0), "long": (8, 1024, 1.0)}  # batch, L, target ratio (at most)


def progress(row: dict) -> None:
    print(
        f"  {row['model']} at L {row['seq_len']}: {row['train_ms'] or 0:.1f} ms ({row['status']})"
    )


def measure(repeats: int) -> dict[str, dict[str, float | None]]:
    """{shape: {model: train ms (None where it failed)}}, one shape after the other."""
    task = task_section("selective-copy", n_tokens=4, vocab_size=16)
    found = {}
    for shape, (batch, length, _) in SHAPES.items():
        rows = bench(MODELS, [length], task, batch_size=batch, repeats=repeats, on_row=progress)
        found[shape] = {row["model"]: row["train_ms"] for row in rows}
    return found


def print_table(found: dict[str, dict[str, float | None]]) -> None:
    header = "".join(f"{f'{s} (B {b}, L {n}) ms':>26}{'/ transf.':>10}" for s, (b, n, _) in
                     SHAPES.items())  # fmt: skip
    print(f"\n{'model':<20}{header}")
    for name in MODELS:
        cells = []
        for shape, (_, _, target) in SHAPES.items():
            ms, base = found[shape][name], found[shape]["transformer"]
            if ms is None or base is None:
                cells.append(f"{'failed':>26}{'':>10}")
                continue
            ratio = ms / base
            met = ratio <= target if shape == "quick" else ratio < target
            mark = "" if name in ("transformer", "gla") else (" ok" if met else " no")
            cells.append(f"{ms:>26.1f}{ratio:>7.2f}{mark:<3}")
        print(f"{name:<20}{''.join(cells)}")
    print("\ntargets: delta-rule models <= 2.00x the Transformer at quick, < 1.00x at long")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per model")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    policy = os.environ.get("OMP_WAIT_POLICY", "unset")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, OMP_WAIT_POLICY {policy}")
    print_table(measure(args.repeats))


if __name__ == "__main__":
    main()
