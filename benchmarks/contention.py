"""Training-step time of every study model, quiet and then with one busy process beside it.

For each OpenMP set-up (--setups) a fresh Python process (the set-up is read when torch loads its
OpenMP runtime) builds each model at each shape and times its training step (forward, backward,
Adam) alternately without and with a busy neighbour: a process spinning on CPU 0, which our
process also uses. Per model and shape it prints the median step time quiet and busy over
--rounds rounds of --steps steps each, and the slowdown busy / quiet.

    python benchmarks/contention.py [--models mamba-s6 s6 ...] [--shapes quick b16-L256 ...]
                                    [--setups ssmbench omp-default] [--rounds 3] [--steps 5]

Set-ups: 'ssmbench' is what the `ssmbench` command and its workers do (ssmbench.runtime);
'omp-default' is a plain process with OpenMP's defaults (what the issue measured: spin-waiting);
'passive' is OMP_WAIT_POLICY=PASSIVE. Shapes: quick (batch 32, 72 tokens: the quick preset's longest
cell) and bN-LT (batch N, T = L + 16 tokens). The machine must otherwise be quiet for the quiet
figures to mean that; say so when it is not.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SHAPES = {"quick": (32, 72), "b16-L256": (16, 272), "b16-L784": (16, 800),
          "b64-L256": (64, 272), "b64-L784": (64, 800)}  # fmt: skip
SETUPS = {
    "ssmbench": None,  # ssmbench.runtime.configure_process() before torch loads
    "omp-default": {},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "spin-10k": {"GOMP_SPINCOUNT": "10000"},
    "1-thread": {"OMP_NUM_THREADS": "1"},
}
BUSY = "while True: pass"


def busy_neighbour() -> subprocess.Popen:
    """A process spinning on CPU 0."""
    return subprocess.Popen(
        [sys.executable, "-c", BUSY], preexec_fn=lambda: os.sched_setaffinity(0, {0})
    )


def child(args: argparse.Namespace) -> None:
    """Runs in the fresh process: times every (model, shape), quiet and busy, prints JSON rows."""
    if args.setup == "ssmbench":
        from ssmbench import runtime

        runtime.configure_process()
    import torch
    import torch.nn.functional as F

    from ssmbench.models import build

    rows = []
    for shape in args.shapes:
        batch, length = SHAPES[shape]
        tokens = torch.randint(0, 16, (batch, length), generator=torch.Generator().manual_seed(0))
        for name in args.models:
            torch.manual_seed(0)
            model = build(name, 16, 64, 2, 16)
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

            def step(model=model, optimizer=optimizer, tokens=tokens) -> None:
                loss = F.cross_entropy(model(tokens).flatten(0, 1), tokens.flatten())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

            step()
            times: dict[str, list[float]] = {"quiet": [], "busy": []}
            for _ in range(args.rounds):
                for condition in ("quiet", "busy"):
                    neighbour = busy_neighbour() if condition == "busy" else None
                    if neighbour is not None:
                        time.sleep(0.3)  # let it start spinning
                    for _ in range(args.steps):
                        start = time.perf_counter()
                        step()
                        times[condition].append(1e3 * (time.perf_counter() - start))
                    if neighbour is not None:
                        neighbour.kill()
                        neighbour.wait()
            quiet, busy = (statistics.median(times[c]) for c in ("quiet", "busy"))
            rows.append({"setup": args.setup, "model": name, "shape": shape, "quiet_ms": quiet,
                         "busy_ms": busy, "slowdown": busy / quiet,
                         "threads": torch.get_num_threads()})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", nargs="+", default=None, help="default: the study's twelve (preset quick)"
    )
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--setups", nargs="+", default=["ssmbench", "omp-default"],
                        choices=list(SETUPS))  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--setup", help=argparse.SUPPRESS)  # set in the child process
    args = parser.parse_args()
    if args.models is None:
        from ssmbench.experiment.config import load_config

        args.models = load_config("quick").models
    if args.setup is not None:
        child(args)
        return
    rows = []
    for setup in args.setups:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_"))}
        env.update(SETUPS[setup] or {})
        command = [sys.executable, __file__, "--setup", setup, "--rounds", str(args.rounds),
                   "--steps", str(args.steps), "--models", *args.models,
                   "--shapes", *args.shapes]  # fmt: skip
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        rows += [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    print(f"load average before/after (1 min): {os.getloadavg()[0]:.1f}; cores: {os.cpu_count()}")
    print("\n| setup | model | shape | quiet ms | busy ms | busy / quiet |")
    print("|---|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['setup']} | {r['model']} | {r['shape']} | {r['quiet_ms']:.1f} "
              f"| {r['busy_ms']:.1f} | {r['slowdown']:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
