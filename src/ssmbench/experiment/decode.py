"""Recurrent decoding cost: tokens per second and memory of generating tokens after a prompt,
one position at a time from each model's recurrent state (`SequenceModel.step`; the Transformer
with its KV cache).

For each model, batch size B and prompt length P: the prompt (random tokens of the task's
vocabulary) is fed step by step (`prefill_s`; no parallel prefill), then `new_tokens` tokens are
generated greedily, each from the last one's argmax, under torch.inference_mode. Reported:

    tokens_per_s    B · new_tokens / the generation's wall time
    ms_per_token    the generation's wall time / new_tokens (one step for the whole batch)
    state_kib       the recurrent state after the prompt: every tensor it holds (for attention
                    the KV cache, which grows with P; for a recurrent model independent of P)
    peak_mem_mib    peak memory during the generation, as `measure` defines it (RSS above the
                    baseline on the CPU, allocated memory on CUDA)
"""

from __future__ import annotations

import time

import torch
from torch import nn

from ssmbench.experiment.measure import PeakMemory, environment, resolve_device
from ssmbench.layers.decoding import Constants
from ssmbench.models import build, get


def state_tensors(state: object) -> list[torch.Tensor]:
    """The per-sequence tensors of a (nested) state: every tensor outside `Constants`."""
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, Constants):
        return []
    if isinstance(state, dict):
        state = list(state.values())
    if isinstance(state, list | tuple):
        return [t for part in state for t in state_tensors(part)]
    return []


def state_bytes(state: object) -> int:
    return sum(t.numel() * t.element_size() for t in state_tensors(state))


@torch.inference_mode()
def decode_cost(
    model: nn.Module, vocab: int, batch: int, prompt: int, new_tokens: int, device: torch.device
) -> dict:
    """The module docstring's figures for one model, batch size and prompt length."""
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    tokens = torch.randint(0, vocab, (batch, prompt), generator=torch.Generator().manual_seed(0))
    tokens = tokens.to(device)
    state = model.init_state(batch)
    started = time.perf_counter()
    for t in range(prompt):
        logits, state = model.step(tokens[:, t], state)
    sync()
    prefill_s = time.perf_counter() - started
    held = state_bytes(state)
    with PeakMemory(device) as memory:
        started = time.perf_counter()
        for _ in range(new_tokens):
            logits, state = model.step(logits.argmax(-1), state)
        sync()
        wall = time.perf_counter() - started
    return {
        "prefill_s": prefill_s,
        "tokens_per_s": batch * new_tokens / wall,
        "ms_per_token": wall / new_tokens * 1e3,
        "state_kib": held / 2**10,
        "peak_mem_mib": memory.peak_mib,
    }


def decode_bench(
    models: list[str],
    batches: list[int],
    prompts: list[int],
    new_tokens: int = 32,
    vocab: int = 16,
    d_model: int = 64,
    n_layers: int = 2,
    d_state: int = 16,
    device: str = "auto",
) -> list[dict]:
    """A row per (prompt length, batch size, model), models side by side innermost; a model
    without a recurrent form, or one that fails, gives a row with its status and error."""
    if new_tokens < 1 or min(batches, default=0) < 1 or min(prompts, default=0) < 1:
        raise ValueError("decode needs new_tokens, batch sizes and prompt lengths >= 1")
    torch_device = resolve_device(device)
    env = environment(torch_device)
    rows = []
    for prompt in prompts:
        for batch in batches:
            for name in models:
                row = {"model": name, "batch_size": batch, "prompt": prompt,
                       "new_tokens": new_tokens, "status": "done", "error": None,
                       **env}  # fmt: skip
                options = get(name).sized_for({}, prompt + new_tokens)
                torch.manual_seed(0)
                try:
                    model = build(name, vocab, d_model, n_layers, d_state, **options)
                    model = model.to(torch_device).eval()
                    row.update(decode_cost(model, vocab, batch, prompt, new_tokens, torch_device))
                except (ValueError, RuntimeError) as error:  # no recurrent form, out of memory
                    row.update(status="failed", error=f"{type(error).__name__}: {error}")
                rows.append(row)
    return rows
