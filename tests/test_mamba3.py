"""Mamba-3's op and layer, SISO and MIMO: the parallel form against the step-by-step recurrence
and a quadratic form, float64, forward and every gradient; the rotations; the layer's options,
and the MIMO layer against upstream's MIMO step reference written out here."""

import math

import pytest
import torch
import torch.nn.functional as F
from recurrent_steps import run_steps

from ssmbench.layers.mamba3 import Mamba3, heavy_tail
from ssmbench.ops.linear_attention import linear_attention_reference
from ssmbench.ops.mamba3 import (
    cumulative_phase,
    mamba3_mimo,
    mamba3_mimo_reference,
    mamba3_siso,
    mamba3_siso_reference,
    rotate_halves,
    rotate_pairs,
)

LENGTHS = [1, 7, 63, 64, 65, 130]  # 1, odd, either side of the chunk (64) and of two


def inputs(L: int, B: int = 2, H: int = 3, N: int = 4, P: int = 5, seed: int = 0) -> list:
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(B, H, L, N, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(B, H, L, P, generator=g, dtype=torch.float64)
    dt = torch.rand(B, H, L, generator=g, dtype=torch.float64) * 0.5 + 0.01
    log_decay = -torch.rand(B, H, L, generator=g, dtype=torch.float64) * dt * 4
    trap = torch.rand(B, H, L, generator=g, dtype=torch.float64)
    return [x.requires_grad_() for x in (q, k, v, log_decay, dt, trap)]


def quadratic(q, k, v, log_decay, dt, trap):
    """y_t = Σ_{s<=t} e^{b_t - b_s} w_ts (q_t·k_s) v_s with w_tt = λ_t Δ_t and, for s < t,
    w_ts = λ_s Δ_s + (1 - λ_{s+1}) Δ_{s+1}: the (L, L) form of upstream's mamba3_siso_fwd_ref."""
    L = q.shape[2]
    b = log_decay.cumsum(-1)  # (B, H, L)
    mask = torch.ones(L, L, dtype=torch.bool).tril()
    decay = (b[..., :, None] - b[..., None, :]).masked_fill(~mask, -math.inf).exp()  # (B,H,t,s)
    now = trap * dt
    back = torch.cat([((1 - trap) * dt)[..., 1:], torch.zeros_like(dt[..., :1])], -1)
    weight = (now + back)[..., None, :].expand(*decay.shape).clone()  # (B, H, t, s)
    weight = weight - torch.diag_embed(back)  # the diagonal keeps λ_t Δ_t only
    scores = (q @ k.mT) * decay * weight  # (B, H, t, s)
    return scores @ v  # (B, H, L, P)


def grads(out: torch.Tensor, xs: list, seed: int = 1) -> list:
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    return torch.autograd.grad(out, xs, g)


@pytest.mark.parametrize("L", LENGTHS)
def test_the_parallel_form_is_the_recurrence_and_the_quadratic_form(L):
    xs = inputs(L)
    fast, ref, quad = mamba3_siso(*xs), mamba3_siso_reference(*xs), quadratic(*xs)
    torch.testing.assert_close(fast, ref, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(quad, ref, atol=1e-10, rtol=1e-10)
    for a, b in zip(grads(fast, xs), grads(ref, xs), strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("chunk", [1, 5, 16, 200])
def test_every_chunk_size_gives_the_same_result(chunk):
    xs = inputs(37)
    torch.testing.assert_close(mamba3_siso(*xs, chunk=chunk), mamba3_siso_reference(*xs),
                               atol=1e-10, rtol=1e-10)  # fmt: skip


def test_with_trapezoid_weight_one_it_is_the_euler_step_of_mamba2():
    """λ = 1: S_t = e^{ΔA} S_{t-1} + Δ_t k_t v_t^T, gated linear attention with keys Δ k."""
    q, k, v, log_decay, dt, _ = (x.detach() for x in inputs(20))
    ones = torch.ones_like(dt)
    expected = linear_attention_reference(q, k * dt[..., None], v, log_decay[..., None])
    torch.testing.assert_close(mamba3_siso(q, k, v, log_decay, dt, ones), expected)


def test_the_trapezoid_averages_the_two_ends_of_each_step():
    """One channel, no decay, λ = 1/2: S_t = S_{t-1} + Δ_t (x_{t-1} + x_t) / 2 (k = q = 1)."""
    x = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64).view(1, 1, 3, 1)
    one, dt = torch.ones(1, 1, 3, 1, dtype=torch.float64), torch.tensor([[[0.5, 1.0, 2.0]]])
    zero, half = torch.zeros(1, 1, 3, dtype=torch.float64), torch.full((1, 1, 3), 0.5)
    out = mamba3_siso(one, one, x, zero, dt.double(), half.double())[0, 0, :, 0]
    # 0.5·(0 + 1)/2, then + 1·(1 + 2)/2, then + 2·(2 + 4)/2
    torch.testing.assert_close(out, torch.tensor([0.25, 1.75, 7.75], dtype=torch.float64))


def test_the_rotation_is_complex_multiplication_of_the_first_pairs():
    g = torch.Generator().manual_seed(0)
    x, phase = torch.randn(3, 8, generator=g), torch.randn(3, 2, generator=g)
    turned = rotate_pairs(x, phase)
    z = torch.view_as_complex(x[:, :4].reshape(3, 2, 2).contiguous()) * torch.polar(
        torch.ones_like(phase), phase
    )
    torch.testing.assert_close(turned[:, :4], torch.view_as_real(z).flatten(1))
    torch.testing.assert_close(turned[:, 4:], x[:, 4:])  # the rest is not turned


def test_the_phase_accumulates_pi_tanh_theta_dt_modulo_two_pi():
    angles = torch.tensor([[[10.0], [-10.0], [0.3]]], dtype=torch.float64)  # (B, L, R)
    dt = torch.tensor([[[1.0, 0.5, 2.0]]], dtype=torch.float64)  # (B, H, L)
    steps = math.pi * torch.tanh(angles[0, :, 0]) * dt[0, 0]
    expected = torch.remainder(steps.cumsum(0), 2 * math.pi)
    torch.testing.assert_close(cumulative_phase(angles, dt)[0, 0, :, 0], expected)


def test_heavy_tail_is_continuous_positive_and_one_plus_a_above_zero():
    a = torch.tensor([-1e3, -1.0, 0.0, 2.0], dtype=torch.float64)
    torch.testing.assert_close(heavy_tail(a), torch.tensor([1 / 1001, 0.5, 1.0, 3.0]).double())


def test_the_layer_refuses_a_state_too_small_to_rotate():
    with pytest.raises(ValueError, match="rope_fraction"):
        Mamba3(16, d_state=1)
    with pytest.raises(ValueError, match="rope_fraction"):
        Mamba3(16, d_state=8, rope_fraction=0.3)


@pytest.mark.parametrize("rope_fraction, angles", [(0.5, 4), (1.0, 8)])
def test_the_layer_has_upstreams_projections(rope_fraction, angles):
    layer = Mamba3(64, d_state=16, headdim=32, rope_fraction=rope_fraction)
    # z, x (E = 128), B, C (G N = 16), dt, A, λ (H = 4) and the angles
    assert layer.in_proj.out_features == 2 * 128 + 2 * 16 + 3 * 4 + angles
    assert layer.B_bias.shape == layer.C_bias.shape == (4, 1, 16)  # (H, mimo_rank, N)
    assert torch.equal(layer.B_bias, torch.ones(4, 1, 16))


def signed_recurrence(q, k, v, dA, dt, trap):
    """The trapezoid recurrence with real transitions a = 2 exp(ΔA) - 1 in (-1, 1), directly."""
    B, H, L, N = q.shape
    S, k_prev, v_prev = q.new_zeros(B, H, N, v.shape[-1]), q.new_zeros(B, H, N), 0 * v[:, :, 0]
    out = []
    for t in range(L):
        a = (2 * dA[:, :, t].exp() - 1)[..., None, None]
        back, now = (((1 - trap) * dt)[:, :, t, None, None], (trap * dt)[:, :, t, None, None])
        S = a * S + back * a * k_prev[..., None] * v_prev[..., None, :]
        S = S + now * k[:, :, t, :, None] * v[:, :, t, None, :]
        out.append(torch.einsum("bhn,bhnp->bhp", q[:, :, t], S))
        k_prev, v_prev = k[:, :, t], v[:, :, t]
    return torch.stack(out, dim=2)


@pytest.mark.parametrize("L", [1, 7, 65])
def test_negative_eigenvalues_are_the_chunked_form_on_log_abs_with_signed_queries_and_keys(L):
    from ssmbench.ops.linear_attention import signed_transition

    q, k, v, _, dt, trap = inputs(L)
    dA = -torch.rand(dt.shape, generator=torch.Generator().manual_seed(3), dtype=dt.dtype) * 3
    assert ((2 * dA.exp() - 1) < 0).any()  # some transitions negative
    log_abs, sign = signed_transition(dA, True)
    s = sign.cumprod(-1)[..., None]
    fast = mamba3_siso(q * s, k * s, v, log_abs, dt, trap, chunk=16)
    torch.testing.assert_close(fast, signed_recurrence(q, k, v, dA, dt, trap), atol=1e-10,
                               rtol=1e-10)  # fmt: skip


@pytest.mark.parametrize("mimo_rank, chunk", [(0, 4), (2, 5)])
def test_mamba3_with_negative_eigenvalues_decodes_as_it_runs(mimo_rank, chunk):
    """SISO and MIMO (a chunk of 5 pairs splits a position's 2 ranks)."""
    torch.manual_seed(0)
    layer = Mamba3(16, d_state=8, headdim=8, chunk=chunk, negative_eigenvalues=True,
                   mimo_rank=mimo_rank).double()  # fmt: skip
    with torch.no_grad():
        layer.dt_bias.fill_(2.0)  # Δ ≈ 2: ΔA below -log 2 at most steps (a < 0)
        x = torch.randn(2, 11, 16, dtype=torch.float64)
        torch.testing.assert_close(run_steps(layer, x)[0], layer(x), atol=1e-10, rtol=0)


def mimo_inputs(L: int, R: int, B: int = 2, H: int = 2, N: int = 4, P: int = 3) -> list:
    q, k, v, log_decay, dt, trap = (x.detach() for x in inputs(L, B, H, N, P))
    g = torch.Generator().manual_seed(R)
    q, k = (torch.randn(B, H, L, R, N, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(B, H, L, R, P, generator=g, dtype=torch.float64)
    return [x.requires_grad_() for x in (q, k, v, log_decay, dt, trap)]


def mimo_quadratic(q, k, v, log_decay, dt, trap):
    """y_{t,r} = Σ_{s<=t} Σ_{r'} e^{b_t - b_s} w_ts (q_{t,r}·k_{s,r'}) v_{s,r'}, w as in
    `quadratic`: every rank of a position reads every rank's write of it and before."""
    L = q.shape[2]
    b = log_decay.cumsum(-1)  # (B, H, L)
    mask = torch.ones(L, L, dtype=torch.bool).tril()
    decay = (b[..., :, None] - b[..., None, :]).masked_fill(~mask, -math.inf).exp()  # (B,H,t,s)
    back = torch.cat([((1 - trap) * dt)[..., 1:], torch.zeros_like(dt[..., :1])], -1)
    weight = (trap * dt + back)[..., None, :] - torch.diag_embed(back)  # (B, H, t, s)
    scores = torch.einsum("bhtrn,bhsun->bhtrsu", q, k) * (decay * weight)[:, :, :, None, :, None]
    return torch.einsum("bhtrsu,bhsup->bhtrp", scores, v)  # (B, H, L, R, P)


@pytest.mark.parametrize("R", [2, 3])
@pytest.mark.parametrize("L", LENGTHS)
def test_mimo_parallel_form_is_the_recurrence_and_the_quadratic_form(L, R):
    """chunk 64 counts (position, rank) pairs: L·R either side of one and two chunks."""
    xs = mimo_inputs(L, R)
    fast, ref = mamba3_mimo(*xs), mamba3_mimo_reference(*xs)
    torch.testing.assert_close(fast, ref, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(mimo_quadratic(*xs), ref, atol=1e-10, rtol=1e-10)
    for a, b in zip(grads(fast, xs), grads(ref, xs), strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("chunk", [1, 5, 16, 200])
def test_mimo_chunks_may_split_a_positions_ranks(chunk):
    xs = mimo_inputs(23, 4)
    torch.testing.assert_close(mamba3_mimo(*xs, chunk=chunk), mamba3_mimo_reference(*xs),
                               atol=1e-10, rtol=1e-10)  # fmt: skip


def test_mimo_with_one_rank_is_siso():
    xs = [x.detach() for x in inputs(19)]
    ranked = [x[:, :, :, None] for x in xs[:3]]
    torch.testing.assert_close(mamba3_mimo(*ranked, *xs[3:])[:, :, :, 0], mamba3_siso(*xs))


def test_the_halves_rotation_is_complex_multiplication_of_i_and_i_plus_half():
    g = torch.Generator().manual_seed(0)
    x, phase = torch.randn(3, 8, generator=g), torch.randn(3, 2, generator=g)
    turned = rotate_halves(x, phase)
    z = torch.complex(x[:, :2], x[:, 4:6]) * torch.polar(torch.ones_like(phase), phase)
    torch.testing.assert_close(turned[:, :2], z.real)
    torch.testing.assert_close(turned[:, 4:6], z.imag)
    torch.testing.assert_close(turned[:, [2, 3, 6, 7]], x[:, [2, 3, 6, 7]])  # not turned


def turn_halves(X: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Upstream's MIMO rotation: channel i with channel i + N/2 for i < A, X (..., N), angle
    (..., A)."""
    A, half = angle.shape[-1], X.shape[-1] // 2
    x0, x1 = X[..., :A], X[..., half : half + A]
    Y = X.clone()
    Y[..., :A] = x0 * angle.cos() - x1 * angle.sin()
    Y[..., half : half + A] = x0 * angle.sin() + x1 * angle.cos()
    return Y


def upstream_mimo_step_ref(layer: Mamba3, u: torch.Tensor) -> torch.Tensor:
    """Upstream's MIMO module (in_proj, RMSNorm'd B/C with biases, heavy-tail A) and its
    `mamba3_MIMO_step_ref` loop written out, with the kernels' rotation (i paired with i + N/2)
    -> the mixer's output (b, L, D)."""
    b, L, _ = u.shape
    H, P, N, R, G = layer.n_heads, layer.headdim, layer.d_state, layer.mimo_rank, layer.ngroups
    z, x, B, C, dd_dt, dd_A, trap, angles = layer.in_proj(u).split(layer.sizes, dim=-1)
    z, x = z.view(b, L, H, P), x.view(b, L, H, P)
    B, C = (F.rms_norm(X.view(b, L, R, G, N), (N,), w, eps=1e-5)
            for X, w in ((B, layer.B_norm), (C, layer.C_norm)))  # fmt: skip
    B, C = (X.repeat_interleave(H // G, dim=3) for X in (B, C))  # (b, L, R, H, N)
    DT = F.softplus(dd_dt + layer.dt_bias)  # (b, L, H)
    ADT = -heavy_tail(dd_A).clamp(min=layer.A_floor) * DT
    v_proj = torch.einsum("blhp,hrp->blrhp", x, layer.mimo_x)
    z_proj = torch.einsum("blhp,hrp->blrhp", z, layer.mimo_z)
    angle = torch.zeros(b, H, angles.shape[-1], dtype=u.dtype)
    S = torch.zeros(b, H, P, N, dtype=u.dtype)  # upstream's (headdim, d_state) layout
    k_prev, v_prev = torch.zeros(b, H, R, N, dtype=u.dtype), torch.zeros(b, H, R, P, dtype=u.dtype)
    out = []
    for t in range(L):
        q = (C[:, t] + layer.C_bias.transpose(0, 1)).transpose(1, 2)  # (b, H, R, N)
        k = (B[:, t] + layer.B_bias.transpose(0, 1)).transpose(1, 2)
        v, zt = v_proj[:, t].transpose(1, 2), z_proj[:, t].transpose(1, 2)  # (b, H, R, P)
        angle = angle + torch.tanh(angles[:, t, None]) * DT[:, t, :, None] * math.pi
        q, k = turn_halves(q, angle[:, :, None]), turn_halves(k, angle[:, :, None])
        lam = torch.sigmoid(trap[:, t])[..., None, None]  # (b, H, 1, 1)
        alpha, dt = ADT[:, t].exp()[..., None, None], DT[:, t][..., None, None]
        S = alpha * S + (1 - lam) * dt * alpha * torch.einsum("bhrd,bhrp->bhpd", k_prev, v_prev)
        S = S + lam * dt * torch.einsum("bhrd,bhrp->bhpd", k, v)
        y = torch.einsum("bhpd,bhrd->bhrp", S, q) + layer.D[None, :, None, None] * v
        y = y * zt * torch.sigmoid(zt)
        out.append(torch.einsum("bhrp,hrp->bhp", y, layer.mimo_o))
        k_prev, v_prev = k, v
    return layer.out_proj(torch.stack(out, 1).flatten(2))  # (b, L, D)


@pytest.mark.parametrize("ngroups, rope_fraction", [(1, 0.5), (2, 1.0)])
def test_the_mimo_layer_is_upstreams_mimo_module_and_step_reference(ngroups, rope_fraction):
    torch.manual_seed(0)
    layer = Mamba3(16, d_state=8, headdim=8, ngroups=ngroups, rope_fraction=rope_fraction,
                   chunk=8, mimo_rank=3).double()  # fmt: skip
    with torch.no_grad():
        for p in (layer.mimo_x, layer.mimo_z, layer.mimo_o, layer.B_bias, layer.C_bias):
            p.normal_()  # away from the symmetric inits, so that every rank differs
    u = torch.randn(2, 13, 16, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(layer(u), upstream_mimo_step_ref(layer, u), atol=1e-10,
                                   rtol=1e-10)  # fmt: skip


def test_the_mimo_layer_has_upstreams_parameters():
    layer = Mamba3(64, d_state=16, headdim=32, mimo_rank=4)
    # z, x (E = 128), B, C (R G N = 64 each), dt, A, λ (H = 4) and the angles (4)
    assert layer.in_proj.out_features == 2 * 128 + 2 * 64 + 3 * 4 + 4
    assert layer.B_bias.shape == (4, 4, 16)  # (H, R, N)
    assert torch.equal(layer.mimo_x, torch.full((4, 4, 32), 0.25))  # 1/R
    assert torch.equal(layer.mimo_z, torch.ones(4, 4, 32))
    assert torch.equal(layer.mimo_o, torch.full((4, 4, 32), 0.25))
    with pytest.raises(ValueError, match="even d_state"):
        Mamba3(16, d_state=7, mimo_rank=2)
