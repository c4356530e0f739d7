"""The chunked DPLR recurrence (RWKV-7's transition) against its step-by-step reference.

float64, 1e-10 of the largest value compared, outputs and the gradients of all six inputs, at
lengths 1, odd, and either side of one and two chunks.
"""

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from test_mixers import assert_same

from ssmbench.ops.dplr import dplr, dplr_reference

LENGTHS = [1, 7, 63, 64, 65, 130]  # chunk 64


def inputs(L: int, gates: str, seed: int = 0, K: int = 8, V: int = 5) -> list[torch.Tensor]:
    """q, k, v, a, b, log_decay (B 2, H 3): RWKV-7's a = -κ̂, b = κ̂ ⊙ α with decays in
    (-0.61, 0), or unstructured a, b with decays down to -20 (near-zero transitions)."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(2, 3, L, *shape, generator=g, dtype=torch.float64)

    q, k, v = randn(K), randn(K), randn(V)
    if gates == "rwkv7":
        kk = F.normalize(randn(K), dim=-1)
        a, b = -kk, kk * torch.sigmoid(randn(K))
        log_decay = -0.6065 * torch.sigmoid(randn(K))
    else:
        a, b = randn(K) / K, randn(K) / K
        log_decay = -20 * torch.rand(2, 3, L, K, generator=g, dtype=torch.float64)
    return [q, k, v, a, b, log_decay]


@pytest.mark.parametrize("L", LENGTHS)
@pytest.mark.parametrize("gates", ["rwkv7", "general"])
def test_chunked_dplr_matches_the_recurrence(L, gates):
    assert_same(partial(dplr, chunk=64), dplr_reference, inputs(L, gates, seed=L), 1e-10)


@pytest.mark.parametrize("L", LENGTHS)
def test_factored_decays_match_the_recurrence(L):
    """With lower_bound the pair sums are matmuls of e^{±G} factors (RWKV-7's decays >= -0.61)."""
    fast = partial(dplr, chunk=64, lower_bound=-0.61)
    assert_same(fast, dplr_reference, inputs(L, "rwkv7", seed=L), 1e-10)


@pytest.mark.parametrize(
    "chunk, L, gates, lower_bound",
    [(16, 15, "rwkv7", None), (16, 16, "rwkv7", None), (16, 17, "rwkv7", None),
     (16, 49, "general", None), (5, 23, "rwkv7", None), (16, 49, "rwkv7", -0.61),
     (2, 23, "general", -20.0)],
)  # fmt: skip
def test_other_chunk_sizes_match_the_recurrence(chunk, L, gates, lower_bound):
    fast = partial(dplr, chunk=chunk, lower_bound=lower_bound)
    assert_same(fast, dplr_reference, inputs(L, gates), 1e-10)


def test_the_low_rank_term_acts():
    """With b = 0 the recurrence is gated linear attention; the rank-one term changes it."""
    q, k, v, a, b, log_decay = inputs(20, "rwkv7")
    plain = dplr_reference(q, k, v, a, torch.zeros_like(b), log_decay)
    assert (dplr(q, k, v, a, b, log_decay) - plain).abs().max() > 1e-2


def test_dplr_rejects_mismatched_shapes_and_broken_bounds():
    q, k, v, a, b, log_decay = inputs(4, "rwkv7")
    with pytest.raises(ValueError, match="need q, k, a, b, log_decay"):
        dplr(q, k, v, a, b[..., :3], log_decay)
    with pytest.raises(ValueError, match="use a chunk <= 66"):
        dplr(q, k, v, a, b, log_decay, chunk=128, lower_bound=-0.6)
    with pytest.raises(ValueError, match="below lower_bound -0.1"):
        dplr(q, k, v, a, b, log_decay, chunk=16, lower_bound=-0.1)
