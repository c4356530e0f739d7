"""Crossover lengths: from which length each linear-time model beats the Transformer, on this
machine, for a training step and for a decoding step.

In one run, side by side:
    training step  ssmbench's `bench` (forward + backward + optimizer step, median of --repeats
                   after warm-up), batch --batch, d_model 64, 2 layers, selective copying, at the
                   lengths 64 · 2^k up to --max-length;
    decoding step  `decode_bench`: ms per generated token at batch --decode-batch after a prompt
                   of each of those lengths, the Transformer with its KV cache;
then, per model, the shortest length from which it stays faster than the Transformer
(`experiment.bench.crossover`): "—" where it is not faster at the longest length measured.

    python benchmarks/crossover.py [--max-length 4096] [--threads 2] [--models mamba-s6,...]
"""

import argparse

# first, as the `ssmbench` command does: the OpenMP wait policy is read when torch loads
from ssmbench import runtime  # noqa: F401

# isort: split
import torch

from ssmbench.experiment.bench import bench, crossover, growth
from ssmbench.experiment.decode import decode_bench
from ssmbench.report.bench import format_bench, format_decode

MODELS = ["transformer", "mamba-s6", "mamba2", "mamba3", "gla", "retnet", "based", "h3", "hyena",
          "baseconv", "deltanet", "gated-deltanet", "rwkv7"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-length", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=8, help="training batch")
    parser.add_argument("--decode-batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = args.models.split(",")
    if "transformer" not in models:
        parser.error("--models must include transformer, the reference")
    lengths = [64 * 2**k for k in range(12) if 64 * 2**k <= args.max_length]
    train = bench(models, lengths, batch_size=args.batch, repeats=args.repeats, device="cpu")
    print(format_bench(train, [], growth(train)))
    decode = decode_bench(models, [args.decode_batch], lengths, args.new_tokens, device="cpu")
    print(format_decode(decode))
    by_train, by_decode = crossover(train), crossover(decode, "ms_per_token", "prompt")
    print(f"\nCrossover with the Transformer (threads {args.threads}; lengths {lengths}):\n")
    print("| model | training step faster from L | decoding step faster from prompt |")
    print("|---|---:|---:|")
    for name in (m for m in models if m != "transformer"):
        cells = (by_train.get(name), by_decode.get(name))
        print(f"| {name} | " + " | ".join("—" if c is None else str(c) for c in cells) + " |")


if __name__ == "__main__":
    main()
