"""Learning on the CPU: the task suite separates models the way the field's papers say.

A causal Transformer solves small induction heads and MQAR; the gated MLP, which mixes no tokens,
stays at chance on both; trained on short induction-heads sequences, Mamba-S6 keeps its accuracy
at 4x the training length while the RoPE Transformer falls away (the shape of the Mamba paper's
Table 11, in miniature). Each trains a 2-layer d_model 32 model for seconds to a minute.
"""

from __future__ import annotations

import pytest
import torch

from ssmbench.experiment.config import load_config
from ssmbench.experiment.train import train

CPU = torch.device("cpu")
INDUCTION = {"name": "induction-heads", "vocab_size": 16}  # 15 ordinary tokens: chance 1/15
MQAR = {"name": "mqar", "num_kv_pairs": 2, "vocab_size": 32}  # 16 values: chance 1/16


def trained(model: str, task: dict, steps: int, eval_lengths: list[int] = (), **train_hp):
    config = load_config(
        "smoke",
        overrides={
            "models": [model],
            "lengths": [16],
            "task": task,
            "eval_lengths": list(eval_lengths),
            "arch": {"d_model": 32, "n_layers": 2, "d_state": 16},
            "train": {
                "max_steps": steps,
                "batch_size": 32,
                "lr": 3e-3,
                "grad_clip": 1.0,
                "eval_every": 50,
                "val_size": 256,
                "test_size": 256,
                "length_test_size": 256,
                **train_hp,
            },
            "measure": {"enabled": False},
        },
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads on a shared 2-core machine stall each other
    try:
        return train(config.cells()[0], CPU)[1]
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_transformer_solves_induction_heads_gated_mlp_stays_at_chance():
    assert trained("transformer", INDUCTION, 600, target_accuracy=1.0).accuracy >= 0.95
    assert trained("gated-mlp", INDUCTION, 200).accuracy <= 1 / 15 + 0.05


@pytest.mark.slow
def test_transformer_solves_mqar_gated_mlp_stays_at_chance():
    assert trained("transformer", MQAR, 1_500, target_accuracy=1.0).accuracy >= 0.95
    assert trained("gated-mlp", MQAR, 200).accuracy <= 1 / 16 + 0.05


@pytest.mark.slow
def test_mamba_extrapolates_induction_heads_the_transformer_does_not():
    """Trained at L=16, tested at 16, 64 and 256 (Mamba paper, Table 11, in miniature)."""
    mamba = trained("mamba-s6", INDUCTION, 800, [64, 256], target_accuracy=1.0).by_length
    transformer = trained("transformer", INDUCTION, 800, [64, 256], target_accuracy=1.0).by_length
    assert mamba[16]["accuracy"] >= 0.95 and transformer[16]["accuracy"] >= 0.95
    assert mamba[64]["accuracy"] >= 0.9 > 0.75 >= transformer[64]["accuracy"]
    assert mamba[256]["accuracy"] >= transformer[256]["accuracy"] + 0.2
