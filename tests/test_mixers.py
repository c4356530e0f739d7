"""The field's mixers: each fast form (chunked, FFT) against a plain recurrent or quadratic one.

float64 to 1e-10 and float32 to 1e-4 (relative to the largest value compared), outputs and
gradients, at lengths that are not powers of two and shorter and longer than the chunk.
"""

import pytest
import torch
import torch.nn.functional as F

import ssmbench.layers.linear_attention as la_layers
import ssmbench.layers.mamba2 as mamba2_module
from ssmbench.layers.attention import CausalSelfAttention
from ssmbench.layers.h3 import H3
from ssmbench.layers.hyena import ImplicitFilter
from ssmbench.layers.linear_attention import GLA, BasedLinearAttention, RetNet, taylor_features
from ssmbench.layers.lti import S4D
from ssmbench.layers.mamba2 import Mamba2, ssd
from ssmbench.models import build
from ssmbench.ops.linear_attention import linear_attention, linear_attention_reference

LENGTHS = [5, 45, 83]  # chunk 16: one partial chunk; several with a remainder
TOL = {torch.float64: 1e-10, torch.float32: 1e-4}


def assert_same(fast, reference, inputs, atol):
    """Outputs and the gradients of a random linear loss w.r.t. inputs agree, to atol times the
    largest reference magnitude (at least 1)."""
    inputs = [x.detach().clone().requires_grad_() for x in inputs]
    a, b = fast(*inputs), reference(*inputs)
    w = torch.randn_like(b)
    ga = torch.autograd.grad((a * w).sum(), inputs)
    gb = torch.autograd.grad((b * w).sum(), inputs)
    for x, y in zip((a, *ga), (b, *gb), strict=True):
        scale = max(1.0, y.abs().max().item())
        torch.testing.assert_close(x, y, atol=atol * scale, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("L", LENGTHS)
@pytest.mark.parametrize("decay", ["per-key", "scalar", "none"])
def test_chunked_linear_attention_matches_its_recurrence(decay, L, dtype):
    g = torch.Generator().manual_seed(L)
    q, k = (torch.randn(2, 3, L, 4, generator=g, dtype=dtype) for _ in range(2))
    v = torch.randn(2, 3, L, 5, generator=g, dtype=dtype)
    width = {"per-key": 4, "scalar": 1, "none": 1}[decay]
    a = -torch.rand(2, 3, L, width, generator=g, dtype=dtype) * (decay != "none")
    assert_same(
        lambda *x: linear_attention(*x, chunk=16), linear_attention_reference, [q, k, v, a],
        TOL[dtype],
    )  # fmt: skip


def test_linear_attention_rejects_mismatched_shapes():
    q = torch.randn(1, 2, 5, 4)
    with pytest.raises(ValueError, match="log_decay"):
        linear_attention(q, q, q, torch.zeros(1, 2, 5, 3))


def ssd_recurrence(x, dt, A, B, C):
    """Mamba-2's SSM step by step: h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t x_t^T, y_t = C_t h_t.
    x (b, L, H, P), dt (b, L, H), A (H,), B and C (b, L, G, N)."""
    b, L, H, P = x.shape
    G, N = B.shape[2:]
    h = x.new_zeros(b, H, N, P)
    ys = []
    for t in range(L):
        Bt, Ct = (X[:, t].repeat_interleave(H // G, dim=1) for X in (B, C))  # (b, H, N)
        dA = torch.exp(dt[:, t] * A)[..., None, None]  # (b, H, 1, 1)
        h = dA * h + (dt[:, t, :, None, None] * Bt[..., None]) * x[:, t, :, None, :]
        ys.append(torch.einsum("bhn,bhnp->bhp", Ct, h))
    return torch.stack(ys, dim=1)  # (b, L, H, P)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("L", LENGTHS)
def test_ssd_chunked_matches_the_recurrence(L, dtype):
    g = torch.Generator().manual_seed(L)
    x = torch.randn(2, L, 4, 3, generator=g, dtype=dtype)
    dt = F.softplus(torch.randn(2, L, 4, generator=g, dtype=dtype))
    A = -torch.rand(4, generator=g, dtype=dtype) * 4
    B, C = (torch.randn(2, L, 2, 5, generator=g, dtype=dtype) for _ in range(2))  # 2 groups
    assert_same(lambda *a: ssd(*a, chunk=16), ssd_recurrence, [x, dt, A, B, C], TOL[dtype])


def reference_scan(q, k, v, log_decay, chunk=None):
    return linear_attention_reference(q, k, v, log_decay)


def layer_with_reference(layer, module, monkeypatch, x):
    """The layer's output with its chunked op, then with the plain recurrence patched in."""
    fast = layer(x)
    monkeypatch.setattr(module, "linear_attention", reference_scan)
    return fast, layer(x)


LAYERS = {
    "gla": (lambda: GLA(16, n_heads=2, chunk=16), la_layers),
    "retnet": (lambda: RetNet(16, n_heads=2, chunk=16), la_layers),
    "based": (lambda: BasedLinearAttention(16, n_heads=2, feature_dim=4, chunk=16), la_layers),
    "mamba2": (lambda: Mamba2(8, d_state=4, headdim=4, chunk=16), mamba2_module),
}


@pytest.mark.parametrize("L", [45, 83])
@pytest.mark.parametrize("name", LAYERS)
def test_layers_with_chunked_form_match_their_recurrent_form(name, L, monkeypatch):
    """Whole layers in float64, outputs and parameter gradients, chunked vs recurrent."""
    make, module = LAYERS[name]
    torch.manual_seed(0)
    layer = make().double()
    x = torch.randn(2, L, 16 if name != "mamba2" else 8, dtype=torch.float64)
    w = torch.randn(2, L, x.shape[-1], dtype=torch.float64)
    params = list(layer.parameters())
    fast = layer(x)
    grads_fast = torch.autograd.grad((fast * w).sum(), params)
    monkeypatch.setattr(module, "linear_attention", reference_scan)
    slow = layer(x)
    grads_slow = torch.autograd.grad((slow * w).sum(), params)
    torch.testing.assert_close(fast, slow, atol=1e-10, rtol=0)
    for a, b in zip(grads_fast, grads_slow, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


def test_taylor_features_give_the_second_order_expansion_of_exp():
    q, k = torch.randn(7, 4, dtype=torch.float64), torch.randn(7, 4, dtype=torch.float64)
    s = (q * k).sum(-1) / 2  # q·k / sqrt(d), d = 4
    torch.testing.assert_close((taylor_features(q) * taylor_features(k)).sum(-1), 1 + s + s**2 / 2)


def test_based_is_normalized_taylor_attention():
    """Based's output = quadratic attention with weights φ(q_t)·φ(k_s), s <= t, normalized."""
    torch.manual_seed(0)
    layer = BasedLinearAttention(8, n_heads=2, feature_dim=4, chunk=16).double()
    x = torch.randn(2, 37, 8, dtype=torch.float64)
    H = 2
    q = taylor_features(la_layers.heads(layer.q_proj(x), H))
    k = taylor_features(la_layers.heads(layer.k_proj(x), H))
    v = la_layers.heads(layer.v_proj(x), H)  # (B, H, L, Dv)
    weights = (q @ k.mT).tril()  # (B, H, L, L)
    y = (weights / weights.sum(-1, keepdim=True)) @ v
    expected = layer.o_proj(y.transpose(1, 2).flatten(2))
    torch.testing.assert_close(layer(x), expected, atol=1e-10, rtol=0)


@pytest.mark.parametrize("L", LENGTHS)
def test_hyena_long_convolution_matches_direct_convolution(L):
    """ImplicitFilter's FFT convolution = y_t = sum_{j<=t} h_j u_{t-j} + β u_t, in float64."""
    torch.manual_seed(0)
    layer = ImplicitFilter(3).double()
    u = torch.randn(2, L, 3, dtype=torch.float64)

    def direct(u):
        h = layer.filter(L)  # (C, L)
        ys = [sum(h[:, j] * u[:, t - j] for j in range(t + 1)) for t in range(L)]
        return torch.stack(ys, dim=1) + layer.bias * u

    assert_same(layer, direct, [u], 1e-10)


def test_hyena_filter_decays_along_the_sequence():
    """The exponential modulation: every channel's envelope falls from t = 0 to t = L - 1."""
    layer = ImplicitFilter(4)
    t = torch.linspace(0, 1, 50)[:, None]
    envelope = torch.exp(-t * layer.deltas.abs())  # (L, C)
    assert (envelope[-1] < 0.05).all() and (envelope[0] == 1).all()


def h3_recurrence(layer: H3, u: torch.Tensor) -> torch.Tensor:
    """H3 with an S4D inner SSM step by step: shift register for k, diagonal recurrence for kv."""
    B, L, D = u.shape
    H, d = layer.n_heads, layer.head_dim
    N = layer.shift_C.shape[1]
    q, k, v = layer.q_proj(u), layer.k_proj(u), layer.v_proj(u)
    dA, dB, C = layer.inner._diagonal_ssm()  # (H, N') each
    window = u.new_zeros(B, D, N)  # the shift SSM's state: the last N keys
    state = torch.zeros(B, d, d, *dA.shape, dtype=dA.dtype)  # (B, d, d, H, N')
    ys = []
    for t in range(L):
        window = torch.cat([k[:, t, :, None], window[..., :-1]], dim=-1)  # shift in k_t
        kt = (layer.shift_C * window).sum(-1) + layer.shift_D * k[:, t]  # (B, D)
        kv = kt.view(B, H, d)[:, :, :, None] * v[:, t].view(B, H, d)[:, :, None, :]  # (B,H,d,d)
        kv = kv.permute(0, 2, 3, 1)  # (B, d, d, H)
        state = dA * state + dB * kv[..., None]
        s = (C * state).sum(-1).real + layer.inner.D * kv  # (B, d, d, H)
        y = (q[:, t].view(B, H, d).permute(0, 2, 1)[:, :, None, :] * s).sum(1)  # (B, d, H)
        ys.append(y.permute(0, 2, 1).reshape(B, D))
    return layer.out_proj(torch.stack(ys, dim=1))


@pytest.mark.parametrize("head_dim", [1, 2])
def test_h3_matches_its_recurrence(head_dim):
    torch.manual_seed(0)
    make_inner = lambda H: S4D(H, 4, init="inv")  # noqa: E731 - complex modes: the harder case
    layer = H3(8, make_inner, d_state=4, head_dim=head_dim)
    for p in layer.parameters():
        p.data = p.data.to(torch.complex128 if p.is_complex() else torch.float64)
    u = torch.randn(2, 45, 8, dtype=torch.float64)
    torch.testing.assert_close(layer(u), h3_recurrence(layer, u), atol=1e-10, rtol=0)


def test_sliding_window_attention_sees_only_its_window():
    torch.manual_seed(0)
    attn = CausalSelfAttention(8, n_heads=2, window=4).eval()
    x = torch.randn(1, 20, 8)
    changed = x.clone()
    changed[:, 7] += 1.0
    with torch.no_grad():
        diff = (attn(x) - attn(changed)).abs().amax(dim=(0, 2))  # (L,)
    assert (diff[7:11] > 0).all() and diff[:7].max() == 0 and diff[11:].max() == 0
    full = CausalSelfAttention(8, n_heads=2).eval()
    full.load_state_dict(attn.state_dict())
    wide = CausalSelfAttention(8, n_heads=2, window=20).eval()
    wide.load_state_dict(attn.state_dict())
    torch.testing.assert_close(wide(x), full(x))


def test_absolute_positions_are_learned_and_bounded():
    model = build("transformer-abs", vocab_size=10, d_model=16, n_layers=1)
    assert model.positions is not None and model.positions.weight.requires_grad
    tokens = torch.full((1, 6), 3)
    with torch.no_grad():
        logits = model(tokens)[0]
    assert (logits[1] - logits[4]).abs().max() > 1e-4  # same token, other position
    with pytest.raises(ValueError, match="learned positions up to"):
        model(torch.zeros(1, model.positions.num_embeddings + 1, dtype=torch.long))
