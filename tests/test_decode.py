"""Recurrent decoding: for every registered model with a recurrent form, `step` from
`init_state` gives the logits of the parallel forward at every position, in float64."""

import pytest
import torch

from ssmbench.experiment.decode import decode_bench, state_tensors
from ssmbench.models import MODELS, build, names

V = 10
NO_RECURRENT_FORM: set[str] = set()  # models that refuse to decode step by step


def decoded(model, tokens: torch.Tensor) -> torch.Tensor:
    state = model.init_state(tokens.shape[0])
    out = []
    for t in range(tokens.shape[1]):
        logits, state = model.step(tokens[:, t], state)
        out.append(logits)
    return torch.stack(out, dim=1)  # (B, T, V)


@pytest.mark.parametrize("name", names())
def test_decoding_step_by_step_is_the_parallel_forward(name):
    torch.manual_seed(0)
    model = build(name, vocab_size=V, d_model=16, n_layers=2, d_state=4).double().eval()
    tokens = torch.randint(0, V, (2, 19))
    if name in NO_RECURRENT_FORM:
        with pytest.raises(ValueError, match="has no recurrent form"):
            model.init_state(2)
        return
    with torch.no_grad():
        torch.testing.assert_close(decoded(model, tokens), model(tokens), atol=1e-10, rtol=0)


@pytest.mark.parametrize("name", [n for n in names() if n not in NO_RECURRENT_FORM])
def test_the_registrys_state_size_is_the_decoding_state(name):
    """state_size (per sequence per layer, real elements) = what init_state/step carry after L
    positions, counted from the tensors themselves (a complex element as 2)."""
    torch.manual_seed(0)
    model = build(name, vocab_size=V, d_model=16, n_layers=2, d_state=4).eval()
    batch, L = 3, 19
    state = model.init_state(batch)
    with torch.no_grad():
        for _ in range(L):
            _, state = model.step(torch.zeros(batch, dtype=torch.long), state)
    tensors = state_tensors(state)
    assert all(t.shape[0] == batch for t in tensors), "per-sequence tensors come batch first"
    elements = sum(t.numel() * (2 if t.is_complex() else 1) for t in tensors) // batch
    assert elements == 2 * MODELS[name].state(16, 4, L)


def test_decode_bench_keeps_a_recurrent_state_and_grows_a_kv_cache():
    rows = decode_bench(["transformer", "mamba-s6", "hyena"], [2], [8, 16], new_tokens=4,
                        d_model=16)  # fmt: skip
    by = {(r["model"], r["prompt"]): r for r in rows}
    assert all(r["status"] == "done" and r["tokens_per_s"] > 0 for r in rows)
    kv = 2 * 2 * 16 * 2 * 4  # layers, keys and values, d_model, batch, float32 bytes per position
    assert by["transformer", 16]["state_kib"] - by["transformer", 8]["state_kib"] == 8 * kv / 1024
    assert by["mamba-s6", 16]["state_kib"] == by["mamba-s6", 8]["state_kib"]
