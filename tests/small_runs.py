"""A tiny training run for the learning tests: one cell of the smoke preset, one thread."""

from __future__ import annotations

import torch

from ssmbench.experiment.config import load_config
from ssmbench.experiment.train import train


def scores_by_length(model: str, task: dict, length: int, eval_length: int, steps: int) -> dict:
    """`model` (d_model 16, 1 layer) trained `steps` steps on `task` at `length`, scored at
    `length` and `eval_length`: the result's by_length, {length: {"accuracy": ...}, ...}."""
    config = load_config(
        "smoke",
        overrides={
            "models": [model],
            "lengths": [length],
            "task": task,
            "eval_lengths": [eval_length],
            "arch": {"d_model": 16, "n_layers": 1},
            "train": {"max_steps": steps, "batch_size": 32, "lr": 1e-2, "eval_every": 50,
                      "val_size": 128, "test_size": 128, "target_accuracy": 1.0},
            "measure": {"enabled": False},
        },
    )  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train(config.cells()[0], torch.device("cpu"))[1].by_length
    finally:
        torch.set_num_threads(threads)
