"""LTI mixers (S4, S4D, S4LowRank) against explicit recurrences of their discrete systems."""

import math

import pytest
import torch

from ssmbench.layers.lti import S4, S4D, LTIMixer, S4LowRank
from ssmbench.ops.hippo import hippo_legs, hippo_legs_dplr

H, N = 3, 8
LAYERS = {
    "s4": lambda: S4(H, N),
    "s4d_real": lambda: S4D(H, N, init="real"),
    "s4d_inv": lambda: S4D(H, N, init="inv"),
    "s4d_lin": lambda: S4D(H, N, init="lin"),
    "s4_lowrank": lambda: S4LowRank(H, N),
}


def make_float64(name: str) -> LTIMixer:
    """Layer in float64 (complex parameters are real views: complex128 when read)."""
    return LAYERS[name]().double()


def recurrence(layer: LTIMixer, u: torch.Tensor) -> torch.Tensor:
    """x_k = dA x_{k-1} + dB u_k, y_k = Re(C x_k), x_{-1} = 0, per channel. u (B, H, L)."""
    dA, dB, C = layer.discrete_ssm()  # (H, N', N'), (H, N'), (H, N')
    x = torch.zeros(u.shape[0], *dB.shape, dtype=dB.dtype)  # (B, H, N')
    ys = []
    for k in range(u.shape[-1]):
        x = torch.einsum("hij,bhj->bhi", dA, x) + dB * u[..., k, None]
        ys.append(torch.einsum("hn,bhn->bh", C, x).real)
    return torch.stack(ys, dim=-1)  # (B, H, L)


def impulse_response(layer: LTIMixer, L: int) -> torch.Tensor:
    delta = torch.zeros(1, layer.d_model, L, dtype=torch.float64)
    delta[..., 0] = 1
    return recurrence(layer, delta)[0]  # (H, L)


@pytest.mark.parametrize("name", LAYERS)
def test_kernel_is_impulse_response_of_discrete_ssm(name):
    torch.manual_seed(0)
    layer = make_float64(name)
    for L in (300, 64):  # two lengths on the same layer
        K = layer.kernel(L)
        assert K.shape == (H, L) and not K.is_complex()
        torch.testing.assert_close(K, impulse_response(layer, L), atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("name", LAYERS)
def test_kernel_gradients_match_recurrence(name):
    torch.manual_seed(0)
    layer = make_float64(name)
    L = 40
    weights = torch.randn(H, L, dtype=torch.float64)
    params = list(layer.parameters())
    grads = torch.autograd.grad((layer.kernel(L) * weights).sum(), params, allow_unused=True)
    grads_ref = torch.autograd.grad(
        (impulse_response(layer, L) * weights).sum(), params, allow_unused=True
    )
    for (pname, _), g, g_ref in zip(layer.named_parameters(), grads, grads_ref, strict=True):
        if pname == "D":  # the skip is not part of the kernel
            assert g is None and g_ref is None
            continue
        torch.testing.assert_close(g, g_ref, atol=1e-10, rtol=1e-8, msg=pname)


@pytest.mark.parametrize("name", LAYERS)
def test_forward_matches_recurrence_plus_skip(name):
    torch.manual_seed(0)
    layer = make_float64(name)
    x = torch.randn(2, 50, H, dtype=torch.float64)  # (B, L, H)
    u = x.transpose(1, 2)
    expected = recurrence(layer, u) + layer.D[:, None] * u
    torch.testing.assert_close(layer(x), expected.transpose(1, 2), atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("name", LAYERS)
def test_forward_is_causal(name):
    torch.manual_seed(0)
    layer = LAYERS[name]()
    x = torch.randn(2, 64, H)
    t = 30
    changed = x.clone()
    changed[:, t + 1 :] = torch.randn(2, 64 - t - 1, H) * 10
    y, y_changed = layer(x), layer(changed)
    torch.testing.assert_close(y[:, : t + 1], y_changed[:, : t + 1], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(y[:, t + 1 :], y_changed[:, t + 1 :])


@pytest.mark.parametrize("name", LAYERS)
def test_default_dtypes_and_gradients_reach_all_parameters(name):
    torch.manual_seed(0)
    layer = LAYERS[name]()
    for p in layer.parameters():
        assert p.dtype == torch.float32  # complex ones as real views
    dt = layer.dt
    assert torch.all(dt >= 1e-3 * (1 - 1e-6)) and torch.all(dt <= 1e-1 * (1 + 1e-6))
    y = layer(torch.randn(2, 32, H))
    assert y.shape == (2, 32, H) and y.dtype == torch.float32
    y.square().mean().backward()
    for pname, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


def test_s4_and_s4_lowrank_agree_at_init():
    """Both start from HiPPO-LegS; with equal dt and C in matching bases, the kernels agree."""
    torch.manual_seed(0)
    s4, lowrank = make_float64("s4"), make_float64("s4_lowrank")
    A, B = hippo_legs(N)
    Lambda, P, B_diag, V = hippo_legs_dplr(N)
    M = N // 2
    with torch.no_grad():  # exact float64 init values (the layers round them to float32)
        s4.A.copy_(A), s4.B.copy_(B)
        P_, B_, C_ = (torch.view_as_complex(p) for p in (lowrank.P, lowrank.B, lowrank.C))
        lowrank.Lambda_imag.copy_(Lambda.imag[:M]), P_.copy_(P[:M])
        B_.copy_(B_diag[:M]), lowrank.log_neg_Lambda_real.fill_(math.log(0.5))
        lowrank.log_dt.copy_(s4.log_dt)
        C_.copy_((s4.C.to(torch.complex128) @ V)[:, :M])
    torch.testing.assert_close(lowrank.kernel(100), s4.kernel(100), atol=1e-10, rtol=0)


@pytest.mark.parametrize("init", ["inv", "lin"])
def test_s4d_complex_kernel_sums_all_modes_and_their_conjugates(init):
    """C holds the first N/2 modes of the N-mode system; the other N/2 are their conjugates."""
    layer = make_float64(f"s4d_{init}")
    L = 50
    A = torch.complex(-torch.exp(layer.log_neg_A_real), layer.A_imag)  # (H, N/2)
    A = torch.cat([A, A.conj()], dim=-1)  # (H, N)
    C = torch.view_as_complex(layer.C)  # (H, N/2)
    C = torch.cat([C, C.conj()], dim=-1)
    dA = torch.exp(layer.dt[:, None] * A)  # zero-order hold, B = 1
    powers = dA[..., None] ** torch.arange(L)  # (H, N, L)
    K = torch.einsum("hn,hnl->hl", C * (dA - 1) / A, powers)
    torch.testing.assert_close(K.imag, torch.zeros_like(K.real), atol=1e-12, rtol=0)
    torch.testing.assert_close(layer.kernel(L), K.real, atol=1e-12, rtol=0)


def test_s4d_complex_inits_use_conjugate_pairs():
    assert S4D(H, N, init="inv").C.shape == (H, N // 2, 2)  # complex, as its real view
    assert S4D(H, N, init="real").C.shape == (H, N)
    assert S4LowRank(H, N).C.shape == (H, N // 2, 2)
    assert S4(H, N).A.shape == (H, N, N)
    dA, _, _ = S4LowRank(H, N).discrete_ssm()
    assert dA.shape == (H, N, N)


@pytest.mark.parametrize(
    "call",
    [
        lambda: S4D(H, N, init="legs"),
        lambda: S4D(H, 7, init="lin"),
        lambda: S4LowRank(H, 7),
        lambda: S4(0, N),
        lambda: S4(H, N, dt_min=0.1, dt_max=0.01),
        lambda: S4(H, N)(torch.randn(2, 10, H + 1)),
        lambda: S4(H, N).kernel(0),
    ],
)
def test_bad_arguments_raise_value_error(call):
    with pytest.raises(ValueError):
        call()


def test_dt_init_is_log_uniform():
    torch.manual_seed(0)
    log_dt = S4D(4000, 2, dt_min=1e-3, dt_max=1e-1).log_dt.detach()
    low, high = math.log(1e-3), math.log(1e-1)
    assert log_dt.min() >= low and log_dt.max() <= high
    assert abs(log_dt.mean().item() - (low + high) / 2) < 0.05


def test_s4_lowrank_clips_the_imaginary_part_of_b_as_upstream():
    """state-spaces/s4 clips Im(B) of the DPLR HiPPO init to ±2 (B_clip); the rest is HiPPO's."""
    layer = S4LowRank(2, 32)
    B = hippo_legs_dplr(32)[2][:16].to(torch.complex64)
    assert B.imag.abs().max() > 2, "the clip matters at this size"
    stored = torch.view_as_complex(layer.B)[0]  # (16,)
    torch.testing.assert_close(stored.real, B.real)
    torch.testing.assert_close(stored.imag, B.imag.clamp(-2, 2))
