"""The field's mixers: each fast form (chunked, FFT) against a plain recurrent or quadratic one.

float64 to 1e-10 and float32 to 1e-4 (relative to the largest value compared), outputs and
gradients, at lengths that are not powers of two and shorter and longer than the chunk.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from recurrent_steps import run_steps

import ssmbench.layers.linear_attention as la_layers
import ssmbench.layers.mamba2 as mamba2_module
from ssmbench.layers.attention import CausalSelfAttention
from ssmbench.layers.baseconv import BaseConv, ImplicitLongConvolution
from ssmbench.layers.h3 import H3
from ssmbench.layers.hyena import ImplicitFilter
from ssmbench.layers.linear_attention import GLA, BasedLinearAttention, RetNet, taylor_features
from ssmbench.layers.lti import S4D
from ssmbench.layers.mamba2 import Mamba2, ssd
from ssmbench.models import build
from ssmbench.ops.linear_attention import (
    decayed_scores,
    decayed_scores_reference,
    linear_attention,
    linear_attention_reference,
)

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


@pytest.mark.parametrize("L", [1, 15, 17, 31, 33])
@pytest.mark.parametrize("decay", ["per-key", "scalar"])
def test_default_chunks_match_the_recurrence(decay, L):
    """No chunk given: 16 per key, 32 for a scalar decay (lengths either side of both)."""
    g = torch.Generator().manual_seed(L)
    q, k, v = (torch.randn(2, 3, L, 4, generator=g, dtype=torch.float64) for _ in range(3))
    a = -torch.rand(2, 3, L, 4 if decay == "per-key" else 1, generator=g, dtype=torch.float64)
    assert_same(linear_attention, linear_attention_reference, [q, k, v, a], 1e-10)


def textbook_scores(x, y, g):
    """Σ_d x_td y_jd exp(g_td - g_jd), j <= t, summed in the open (moderate decays only)."""
    c = g.shape[-2]
    G = (g[..., :, None, :] - g[..., None, :, :]).exp()  # (..., c, c, K)
    return torch.einsum("...td,...jd,...tjd->...tj", x, y, G) * torch.ones(c, c).tril()


@pytest.mark.parametrize("sub", [4, 16])
@pytest.mark.parametrize("c", [1, 7, 15, 16, 17, 33, 64])
def test_sub_chunked_decayed_scores_match_the_plain_sum(c, sub):
    """Across sub-chunks (products through each sub-chunk's first position) and inside them;
    x and y with different leading dims, as the delta rule broadcasts its two score matrices."""
    gen = torch.Generator().manual_seed(c)
    x = torch.randn(2, 3, c, 5, generator=gen, dtype=torch.float64)
    y = torch.randn(3, c, 5, generator=gen, dtype=torch.float64)
    g = F.logsigmoid(torch.randn(2, 3, c, 5, generator=gen, dtype=torch.float64)).cumsum(-2)
    for fast in (lambda *z: decayed_scores(*z, sub=sub), decayed_scores_reference):
        assert_same(fast, textbook_scores, [x, y, g], 1e-12)


def test_sub_chunked_decayed_scores_stay_finite_under_strong_decays():
    """log-decays down to -40 per step: exp underflows across sub-chunks, nothing overflows."""
    gen = torch.Generator().manual_seed(0)
    x, y = (torch.randn(2, 40, 3, generator=gen, dtype=torch.float64) for _ in range(2))
    g = (-40 * torch.rand(2, 40, 3, generator=gen, dtype=torch.float64)).cumsum(-2)
    g.requires_grad_()
    M = decayed_scores(x, y, g, sub=8)
    torch.testing.assert_close(M, decayed_scores_reference(x, y, g), atol=1e-12, rtol=0)
    (grad,) = torch.autograd.grad(M.sum(), g)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("L", [1, 63, 64, 65, 130])
def test_per_key_decays_match_the_recurrence_in_long_chunks(L):
    """Chunk 64: the per-key scores split into sub-chunks of 4 inside each chunk."""
    gen = torch.Generator().manual_seed(L)
    q, k, v = (torch.randn(2, 3, L, 4, generator=gen, dtype=torch.float64) for _ in range(3))
    a = -torch.rand(2, 3, L, 4, generator=gen, dtype=torch.float64)
    assert_same(
        lambda *x: linear_attention(*x, chunk=64), linear_attention_reference, [q, k, v, a], 1e-10
    )


def test_linear_attention_rejects_mismatched_shapes():
    q = torch.randn(1, 2, 5, 4)
    with pytest.raises(ValueError, match="log_decay"):
        linear_attention(q, q, q, torch.zeros(1, 2, 5, 3))


def ssd_recurrence(x, dt, A, B, C, negative_eigenvalues=False):
    """Mamba-2's SSM step by step: h_t = a_t h_{t-1} + Δ_t B_t x_t^T, y_t = C_t h_t, with
    a_t = exp(Δ_t A), or 2 exp(Δ_t A) - 1 with negative_eigenvalues.
    x (b, L, H, P), dt (b, L, H), A (H,), B and C (b, L, G, N)."""
    b, L, H, P = x.shape
    G, N = B.shape[2:]
    h = x.new_zeros(b, H, N, P)
    ys = []
    for t in range(L):
        Bt, Ct = (X[:, t].repeat_interleave(H // G, dim=1) for X in (B, C))  # (b, H, N)
        dA = torch.exp(dt[:, t] * A)[..., None, None]  # (b, H, 1, 1)
        dA = 2 * dA - 1 if negative_eigenvalues else dA
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


@pytest.mark.parametrize("L", [1, 15, 16, 17, 45])
def test_ssd_with_negative_eigenvalues_matches_the_signed_recurrence(L):
    """Transitions 2 exp(ΔA) - 1 in (-1, 1), about half of them negative here, float64."""
    g = torch.Generator().manual_seed(L)
    x = torch.randn(2, L, 4, 3, generator=g, dtype=torch.float64)
    dt = F.softplus(torch.randn(2, L, 4, generator=g, dtype=torch.float64))
    A = -torch.rand(4, generator=g, dtype=torch.float64) * 4
    B, C = (torch.randn(2, L, 2, 5, generator=g, dtype=torch.float64) for _ in range(2))
    assert ((2 * torch.exp(dt * A) - 1) < 0).float().mean() > 0.2
    assert_same(lambda *a: ssd(*a, chunk=16, negative_eigenvalues=True),
                lambda *a: ssd_recurrence(*a, negative_eigenvalues=True), [x, dt, A, B, C],
                1e-10)  # fmt: skip


def test_ssd_with_negative_eigenvalues_flips_the_state():
    """ΔA = -50: exp(ΔA) ≈ 0 forgets at once; 2 exp(ΔA) - 1 ≈ -1 flips the state each step."""
    x = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64).view(1, 3, 1, 1)
    dt, A, one = (
        torch.ones(1, 3, 1).double(),
        torch.tensor([-50.0]).double(),
        x.new_ones(1, 3, 1, 1),
    )
    flipped = ssd(x, dt, A, one, one, chunk=2, negative_eigenvalues=True).flatten()
    torch.testing.assert_close(flipped, torch.tensor([1.0, -1.0, 1.0]).double())
    torch.testing.assert_close(ssd(x, dt, A, one, one, chunk=2).flatten(), x.flatten())


def test_mamba2_with_negative_eigenvalues_decodes_as_it_runs():
    torch.manual_seed(0)
    layer = Mamba2(8, d_state=4, headdim=4, chunk=4, negative_eigenvalues=True).double()
    layer.A_log.data.fill_(4.0)  # A = -e^4: ΔA below -log 2 at many steps (a < 0)
    x = torch.randn(2, 11, 8, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(run_steps(layer, x)[0], layer(x), atol=1e-10, rtol=0)


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


def safari_positions(l_max: int) -> tuple[torch.Tensor, torch.Tensor]:
    """safari's PositionalEmbedding(3, l_max), from its formulas: z = [t, Re, Im of
    exp(-i f w)] with t = linspace(0, 1), w = 2π (0..l_max-1) / l_max, f = linspace(1e-4, 0, 1)."""
    t = torch.linspace(0, 1, l_max, dtype=torch.float64)[:, None]
    w = 2 * math.pi * torch.arange(l_max, dtype=torch.float64)[:, None] / l_max
    z = torch.exp(-1j * torch.tensor([1e-4], dtype=torch.float64) * w)
    return torch.cat([t, z.real, z.imag], dim=-1), t


@pytest.mark.parametrize("L", [1, 17, 40])
def test_hyena_filter_is_safaris_at_equal_l_max(L):
    """HyenaFilter(d, seq_len=l_max).filter(L): the MLP of z[:L], times exp(-t |δ|) with
    δ = linspace(ln 1e-2 / 1.5, ln 1e-2 / 0.3, d); the first L taps of the l_max filter."""
    torch.manual_seed(0)
    layer = ImplicitFilter(5, l_max=40).double()
    z, t = safari_positions(40)
    torch.testing.assert_close(layer.z.detach(), z, atol=1e-7, rtol=0)  # made in float32
    x = layer.z.detach()[:L]
    for module in layer.ffn:  # Linear, sin(freq ·), ..., Linear
        x = (
            torch.sin(module.freq * x)
            if hasattr(module, "freq")
            else x @ module.weight.T + (0 if module.bias is None else module.bias)
        )
    torch.testing.assert_close(layer.t, t, atol=1e-7, rtol=0)
    deltas = torch.linspace(math.log(1e-2) / 1.5, math.log(1e-2) / 0.3, 5).double()  # float32
    expected = (x * torch.exp(-layer.t[:L] * deltas.abs())).T  # (C, L)
    torch.testing.assert_close(layer.filter(L), expected, atol=1e-12, rtol=0)


def test_long_filters_refuse_inputs_past_l_max():
    for layer in (ImplicitFilter(3, l_max=8), ImplicitLongConvolution(3, l_max=8)):
        layer(torch.randn(1, 8, 3))
        with pytest.raises(ValueError, match="input length 9 exceeds the long filter's l_max 8"):
            layer(torch.randn(1, 9, 3))


@pytest.mark.parametrize("L", [1, 23])
def test_baseconv_is_zoologys(L):
    """zoology's BaseConv with ImplicitLongConvolution(d, l_max): h = Linear(ReLU(Linear(z))),
    y = (h * u + u) ⊙ (W u + b) + u, by the direct sum, in float64; 17·d + 64 filter parameters."""
    torch.manual_seed(0)
    layer = BaseConv(6, kernel=0, l_max=30).double()
    assert sum(p.numel() for p in layer.conv.parameters()) == 17 * 6 + 64
    u = torch.randn(2, L, 6, dtype=torch.float64)

    def direct(u):
        z = layer.conv.z  # (30, 3), safari's positions in float32 (checked above)
        first, _, second = layer.conv.mlp
        h = torch.relu(z[:L] @ first.weight.T + first.bias) @ second.weight.T + second.bias
        conv = torch.stack([sum(h[j] * u[:, t - j] for j in range(t + 1)) for t in range(L)], 1)
        return (conv + u) * (u @ layer.projection.weight.T + layer.projection.bias) + u

    assert_same(layer, direct, [u], 1e-10)


def test_baseconv_has_zoologys_parameter_count():
    """zoology's BaseConv at d_model 64: 4,160 (projection) + 1,152 (long) = 5,312; with k = 3
    4,160 + 256 (nn.Conv1d depthwise, with bias)."""
    long, short = BaseConv(64, kernel=0), BaseConv(64, kernel=3)
    assert [sum(p.numel() for p in m.parameters()) for m in (long, short)] == [5312, 4416]


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


def test_h3_safari_shift_ssm_is_sskernelshift():
    """safari's SSKernelShift: kernel irfft(conj(rfft(B, 2N)) rfft(C, 2N))[:N], and its step
    x_t = shift(x_{t-1}) + B u_t, y_t = C . x_t, equal to the trainable-B shift, float64."""
    torch.manual_seed(0)
    layer = build("h3", vocab_size=4, d_model=6, n_layers=1, d_state=4, safari=True).double()
    h3 = layer.layers[0].fn
    assert h3.inner.disc == "bilinear" and h3.inner.A_imag is not None  # S4D-Lin
    torch.testing.assert_close(h3.shift_kernel(), h3.shift_C)  # B = e_1 at init
    with torch.no_grad():
        h3.shift_B.normal_()
    B, C = h3.shift_B, h3.shift_C  # (D, N)
    fft = torch.fft.irfft(torch.fft.rfft(B, n=8).conj() * torch.fft.rfft(C, n=8), n=8)[:, :4]
    torch.testing.assert_close(h3.shift_kernel(), fft, atol=1e-12, rtol=0)
    k = torch.randn(2, 9, 6, dtype=torch.float64)
    x, ys = k.new_zeros(2, 6, 4), []
    for t in range(9):
        x = F.pad(x, (1, -1)) + B * k[:, t, :, None]  # (B, D, N)
        ys.append((C * x).sum(-1) + h3.shift_D * k[:, t])
    torch.testing.assert_close(h3.shift(k), torch.stack(ys, 1), atol=1e-12, rtol=0)


def test_sliding_window_attention_sees_only_its_window():
    torch.manual_seed(0)
    attn = CausalSelfAttention(8, n_heads=2, window=4).eval()
    x = torch.randn(1, 20, 8)
    changed = x.clone()
    changed[:, 7] += 1.0
    with torch.no_grad():
        diff = (attn(x) - attn(changed)).abs().amax(dim=(0, 2))  # (L,)
    assert (diff[7:12] > 0).all() and diff[:7].max() == 0 and diff[12:].max() == 0  # 7 .. 7 + 4
    full = CausalSelfAttention(8, n_heads=2).eval()
    full.load_state_dict(attn.state_dict())
    wide = CausalSelfAttention(8, n_heads=2, window=20).eval()
    wide.load_state_dict(attn.state_dict())
    torch.testing.assert_close(wide(x), full(x))


@pytest.mark.parametrize("block_size", [1, 4, 16])
def test_sliding_window_is_zoologys_block_size(block_size):
    """zoology's SlidingSelfAttention: one head, scores q k^T / sqrt(D) with position i seeing
    keys max(0, i - block_size) .. i; in float64 against ours with window = block_size."""
    torch.manual_seed(0)
    attn = CausalSelfAttention(6, n_heads=1, rope=False, window=block_size).double()
    x = torch.randn(2, 21, 6, dtype=torch.float64)

    def zoology(x):
        q, k, v = attn.qkv(x).split(6, dim=-1)  # (B, L, D) each
        i, j = torch.arange(21)[:, None], torch.arange(21)[None]
        allowed = (j <= i) & (j >= (i - block_size).clamp(min=0))  # (L, L)
        scores = (q @ k.mT / math.sqrt(6)).masked_fill(~allowed, float("-inf"))
        return attn.out(scores.softmax(-1) @ v)

    assert_same(attn, zoology, [x], 1e-10)


def test_absolute_positions_are_learned_and_bounded():
    model = build("transformer-abs", vocab_size=10, d_model=16, n_layers=1)
    assert model.positions is not None and model.positions.weight.requires_grad
    tokens = torch.full((1, 6), 3)
    with torch.no_grad():
        logits = model(tokens)[0]
    assert (logits[1] - logits[4]).abs().max() > 1e-4  # same token, other position
    with pytest.raises(ValueError, match="learned positions up to"):
        model(torch.zeros(1, model.positions.num_embeddings + 1, dtype=torch.long))
