"""Mamba-3's SISO op and layer: the parallel form against the step-by-step recurrence and a
quadratic form, float64, forward and every gradient; the rotation; the layer's options."""

import math

import pytest
import torch

from ssmbench.layers.mamba3 import Mamba3, heavy_tail
from ssmbench.ops.linear_attention import linear_attention_reference
from ssmbench.ops.mamba3 import (
    cumulative_phase,
    mamba3_siso,
    mamba3_siso_reference,
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
    assert layer.B_bias.shape == layer.C_bias.shape == (4, 16)
    assert torch.equal(layer.B_bias, torch.ones(4, 16))


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


def test_mamba3_with_negative_eigenvalues_decodes_as_it_runs():
    torch.manual_seed(0)
    layer = Mamba3(16, d_state=8, headdim=8, chunk=4, negative_eigenvalues=True).double()
    with torch.no_grad():
        layer.dt_bias.fill_(2.0)  # Δ ≈ 2: ΔA below -log 2 at most steps (a < 0)
    x = torch.randn(2, 11, 16, dtype=torch.float64)
    state, steps = layer.init_state(2, x), []
    with torch.no_grad():
        for t in range(11):
            y, state = layer.step(x[:, t], state)
            steps.append(y)
        torch.testing.assert_close(torch.stack(steps, 1), layer(x), atol=1e-10, rtol=0)
