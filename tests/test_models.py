import pytest
import torch

from ssmbench.models import build, n_params, names

STUDY_MODELS = [
    "s4",
    "s4d-real",
    "s4d-inv",
    "s4-lowrank",
    "s6",
    "mamba-s4d-real",
    "mamba-s4d-inv",
    "mamba-s4-lowrank",
    "mamba-s6",
    "gated-mlp",
    "transformer",
    "lstm",
]
V = 10


def small(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build(name, vocab_size=V, d_model=16, n_layers=2, d_state=8).eval()


def test_registry_names_are_the_studys_twelve():
    assert names()[:12] == STUDY_MODELS  # then any a plugin registered (the fault tests do)


@pytest.mark.parametrize("name", STUDY_MODELS)
def test_shapes_and_gradients(name):
    model = small(name).train()
    tokens = torch.randint(0, V, (3, 37))
    logits = model(tokens)
    assert logits.shape == (3, 37, V) and logits.dtype == torch.float32
    logits.logsumexp(-1).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient reaches {missing}"


@pytest.mark.parametrize("name", STUDY_MODELS)
def test_causal(name):
    """Changing the inputs after position t leaves the logits up to t unchanged."""
    model = small(name)
    tokens = torch.randint(0, V, (2, 48))
    t = 20
    changed = tokens.clone()
    changed[:, t + 1 :] = torch.randint(0, V, (2, 48 - t - 1))
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    scale = a.abs().max()
    assert (a[:, : t + 1] - b[:, : t + 1]).abs().max() <= 1e-5 * scale
    assert (a[:, t + 1 :] - b[:, t + 1 :]).abs().max() > 1e-3 * scale, "later inputs matter"


def test_gated_mlp_mixes_no_tokens():
    model = small("gated-mlp")
    tokens = torch.randint(0, V, (2, 30))
    changed = tokens.clone()
    changed[:, 10] = (tokens[:, 10] + 1) % V
    with torch.no_grad():
        diff = (model(tokens) - model(changed)).abs().amax(dim=(0, 2))  # (T,)
    assert diff[10] > 0 and diff[torch.arange(30) != 10].max() == 0


def test_transformer_knows_positions():
    """With RoPE, the same token at two positions after a context gives different outputs."""
    model = small("transformer")
    tokens = torch.tensor([[3, 5, 5, 5, 5, 5]])
    with torch.no_grad():
        logits = model(tokens)[0]
    assert (logits[2] - logits[5]).abs().max() > 1e-4


def test_bad_build_arguments():
    with pytest.raises(ValueError, match="unknown model 'mamba'"):
        build("mamba", vocab_size=V)
    with pytest.raises(ValueError, match="takes no option n_heads"):
        build("s4d-real", vocab_size=V, n_heads=4)
    with pytest.raises(ValueError, match="d_model"):
        build("lstm", vocab_size=V, d_model=0)


def test_overrides_reach_the_layers():
    wide = build("mamba-s6", vocab_size=V, d_model=16, expand=4)
    narrow = build("mamba-s6", vocab_size=V, d_model=16, expand=2)
    assert n_params(wide) > n_params(narrow)
