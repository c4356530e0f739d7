"""The delta-rule op and layers: the chunked WY form against the step-by-step recurrence.

The op: float64 to 1e-10 of the largest value compared, outputs and gradients of every input, at
lengths 1, 7, 63, 64, 65 and 130 (either side of chunks 16 and 64), for each gate variant; the
scalar case against the textbook Gated DeltaNet transition written out here; DeltaProduct
against its Householder products; fla-core's naive recurrences where it is installed
(`pip install -e ".[refs]"`). The layers: their recurrent form (`step`) against their chunked
forward, its state against the registry's state_size, their gates against fla's.
"""

import pytest
import torch
import torch.nn.functional as F

from ssmbench.layers.delta_net import DeltaRuleMixer, GatedDeltaProduct
from ssmbench.layers.marks import marks_of
from ssmbench.models import build, get
from ssmbench.ops.delta_rule import (
    delta_product,
    delta_product_reference,
    delta_rule,
    delta_rule_reference,
    unit_lower_inverse,
)

B, H, K, V = 2, 3, 4, 5
LENGTHS = [1, 7, 63, 64, 65, 130]
VARIANTS = ["deltanet", "gated-deltanet", "kda", "gated-deltanet-2"]


def inputs(variant: str, L: int, seed: int = 0, decay_scale: float = 1.0) -> dict:
    """Random arguments of delta_rule for a gate variant: L2-normalized q, k (as the layers feed
    them), β in (0, 2) (negative eigenvalues included), log-decays in (-decay_scale, 0)."""
    g = torch.Generator().manual_seed(seed + L)

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=g, dtype=torch.float64)

    q, k = (F.normalize(torch.randn(B, H, L, K, generator=g, dtype=torch.float64), dim=-1)
            for _ in range(2))  # fmt: skip
    x = {"q": q, "k": k, "v": torch.randn(B, H, L, V, generator=g, dtype=torch.float64)}
    if variant == "deltanet":
        return {**x, "beta": rand(B, H, L)}
    if variant == "gated-deltanet":
        return {**x, "beta": 2 * rand(B, H, L), "log_decay": -decay_scale * rand(B, H, L)}
    if variant == "kda":
        return {**x, "beta": rand(B, H, L), "log_decay": -decay_scale * rand(B, H, L, K)}
    return {**x, "beta": 2 * rand(B, H, L, K), "log_decay": -decay_scale * rand(B, H, L, K),
            "write": rand(B, H, L, V)}  # fmt: skip


def assert_same(fast, reference, args: dict, tol: float = 1e-10) -> None:
    """fast(**args) and reference(**args) agree, and so do the gradients of a random linear loss
    w.r.t. every argument, to tol times the largest reference magnitude (at least 1)."""
    args = {name: x.detach().clone().requires_grad_() for name, x in args.items()}
    a, b = fast(**args), reference(**args)
    w = torch.randn_like(b)
    ga = torch.autograd.grad((a * w).sum(), list(args.values()))
    gb = torch.autograd.grad((b * w).sum(), list(args.values()))
    for name, x, y in zip(["output", *args], (a, *ga), (b, *gb), strict=True):
        scale = max(1.0, y.abs().max().item())
        torch.testing.assert_close(x, y, atol=tol * scale, rtol=0, msg=f"{name} differs")


def forward_substitution(A: torch.Tensor) -> torch.Tensor:
    """(I + A)^-1 row by row, reading A below the diagonal: T_i = e_i - sum_{j<i} A_ij T_j."""
    c = A.shape[-1]
    eye = torch.eye(c, dtype=A.dtype).expand_as(A)
    rows = []
    for i in range(c):
        rows.append(eye[..., i, :] - sum((A[..., i, j, None] * rows[j] for j in range(i)), 0))
    return torch.stack(rows, dim=-2)


@pytest.mark.parametrize("c", [1, 2, 7, 16, 17, 33, 64])
def test_blocked_unit_lower_inverse_matches_forward_substitution(c):
    g = torch.Generator().manual_seed(c)
    A = (torch.randn(2, 3, c, c, generator=g, dtype=torch.float64) / c**0.5).requires_grad_()
    fast, plain = unit_lower_inverse(A), forward_substitution(A)
    torch.testing.assert_close(fast, plain, atol=1e-12, rtol=0)
    if c == 1:  # (1 + 0)^-1: nothing below the diagonal to read
        assert not fast.requires_grad and torch.equal(fast, torch.ones_like(fast))
        return
    w = torch.randn(fast.shape, generator=g, dtype=torch.float64)
    grads = [torch.autograd.grad((T * w).sum(), A, allow_unused=True, materialize_grads=True)[0]
             for T in (fast, plain)]  # fmt: skip
    torch.testing.assert_close(*grads, atol=1e-12, rtol=0)
    assert grads[0].triu().abs().max() == 0  # the diagonal and above are never read


@pytest.mark.parametrize("chunk", [16, 64])
@pytest.mark.parametrize("L", LENGTHS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_chunked_form_matches_the_recurrence(variant, L, chunk):
    fast = lambda **x: delta_rule(**x, chunk=chunk)  # noqa: E731
    assert_same(fast, delta_rule_reference, inputs(variant, L))


@pytest.mark.parametrize("variant", ["gated-deltanet", "kda", "gated-deltanet-2"])
def test_strongly_negative_decays_stay_exact(variant):
    """log-decays down to -40 per step: exp(γ) underflows across a chunk, nothing overflows."""
    args = inputs(variant, 130, decay_scale=40.0)
    fast = lambda **x: delta_rule(**x, chunk=64)  # noqa: E731
    assert_same(fast, delta_rule_reference, args)
    assert torch.isfinite(delta_rule(**args)).all()


def textbook_gated_deltanet(q, k, v, beta, log_decay=None):
    """S_t = α_t (I - β_t k_t k_t^T) S_{t-1} + β_t k_t v_t^T, o_t = S_t^T q_t, with matrices."""
    L = q.shape[2]
    alpha = torch.ones_like(beta) if log_decay is None else log_decay.exp()  # (B, H, L)
    eye = torch.eye(q.shape[-1], dtype=q.dtype)
    S = torch.zeros(B, H, q.shape[-1], v.shape[-1], dtype=q.dtype)
    out = []
    for t in range(L):
        k_t, b_t, a_t = k[:, :, t], beta[:, :, t, None, None], alpha[:, :, t, None, None]
        transition = a_t * (eye - b_t * k_t[..., :, None] * k_t[..., None, :])  # (B, H, K, K)
        S = transition @ S + b_t * k_t[..., :, None] * v[:, :, t, None, :]
        out.append((S * q[:, :, t, :, None]).sum(-2))
    return torch.stack(out, dim=2)


@pytest.mark.parametrize("variant", ["deltanet", "gated-deltanet"])
def test_the_scalar_case_is_the_textbook_gated_deltanet(variant):
    args = inputs(variant, 65)
    expected = textbook_gated_deltanet(**args)
    torch.testing.assert_close(delta_rule_reference(**args), expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(delta_rule(**args, chunk=16), expected, atol=1e-12, rtol=0)


def test_gdn2_with_equal_scalar_gates_is_kda_and_equal_channels_are_scalar_decay():
    args = inputs("kda", 65)
    beta, a = args["beta"], args["log_decay"]
    kda = delta_rule(**args, chunk=16)
    gdn2 = {
        "beta": beta[..., None].expand(B, H, 65, K),
        "write": beta[..., None].expand(-1, -1, -1, V),
    }
    torch.testing.assert_close(delta_rule(**{**args, **gdn2}, chunk=16), kda, atol=1e-12, rtol=0)
    scalar = {**args, "log_decay": a[..., 0]}
    per_channel = {**args, "log_decay": a[..., :1].expand(B, H, 65, K)}
    torch.testing.assert_close(
        delta_rule(**per_channel, chunk=16), delta_rule(**scalar, chunk=16), atol=1e-12, rtol=0
    )


def product_inputs(L: int, n_h: int, decay: str = "scalar", seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed + L)
    k = F.normalize(torch.randn(B, H, L, n_h, K, generator=g, dtype=torch.float64), dim=-1)
    q = F.normalize(torch.randn(B, H, L, K, generator=g, dtype=torch.float64), dim=-1)
    decays = {"none": None, "scalar": (B, H, L), "per-channel": (B, H, L, K)}
    shape = decays[decay]
    return {
        "q": q,
        "k": k,
        "v": torch.randn(B, H, L, n_h, V, generator=g, dtype=torch.float64),
        "beta": 2 * torch.rand(B, H, L, n_h, generator=g, dtype=torch.float64),
        "log_decay": None if shape is None else -torch.rand(*shape, generator=g).double(),
    }


def textbook_delta_product(q, k, v, beta, log_decay=None):
    """Per token: S <- α_t S, then n_h Householder steps S <- (I - β k k^T) S + β k v^T."""
    S = torch.zeros(B, H, K, V, dtype=q.dtype)
    out = []
    for t in range(q.shape[2]):
        if log_decay is not None:
            a = log_decay[:, :, t]
            S = (a[..., None, None] if a.dim() == 2 else a[..., None]).exp() * S
        for j in range(k.shape[3]):
            k_j, v_j, b_j = k[:, :, t, j], v[:, :, t, j], beta[:, :, t, j, None, None]
            proj = k_j[..., :, None] * k_j[..., None, :]  # (B, H, K, K)
            S = S - b_j * proj @ S + b_j * k_j[..., :, None] * v_j[..., None, :]
        out.append((S * q[:, :, t, :, None]).sum(-2))
    return torch.stack(out, dim=2)


@pytest.mark.parametrize("decay", ["none", "scalar", "per-channel"])
@pytest.mark.parametrize("L", [1, 7, 32, 33, 65])
def test_delta_product_matches_its_reference_and_the_householder_products(L, decay):
    """n_h = 2 sub-steps per token: chunk 16 sub-steps splits tokens 8 | 8 (L 7: one chunk)."""
    args = product_inputs(L, 2, decay)
    args = {name: x for name, x in args.items() if x is not None}
    fast = lambda **x: delta_product(**x, chunk=16)  # noqa: E731
    assert_same(fast, delta_product_reference, args)
    torch.testing.assert_close(fast(**args), textbook_delta_product(**args), atol=1e-12, rtol=0)


def test_delta_product_with_one_step_is_the_delta_rule():
    args = product_inputs(33, 1)
    flat = {**args, "k": args["k"][:, :, :, 0], "v": args["v"][:, :, :, 0],
            "beta": args["beta"][:, :, :, 0]}  # fmt: skip
    torch.testing.assert_close(
        delta_product(**args, chunk=16), delta_rule(**flat, chunk=16), atol=1e-12, rtol=0
    )


BAD = [  # (what changes, message)
    ({"k": torch.zeros(B, H, 7, K + 1)}, "need q, k"),
    ({"v": torch.zeros(B, H, 6, V)}, "need q, k"),
    ({"beta": torch.zeros(B, H, 7, 2)}, "beta must be"),
    ({"log_decay": torch.zeros(B, H, 7, 1)}, "log_decay must be"),
    ({"write": torch.zeros(B, H, 7, V + 1)}, "write must be"),
    ({"beta": torch.zeros(B, H, 7, K)}, "write=None means write = beta"),
]


@pytest.mark.parametrize("change, message", BAD, ids=[m for _, m in BAD])
def test_bad_shapes_are_refused(change, message):
    args = {**inputs("gated-deltanet", 7), **change}
    for op in (delta_rule, delta_rule_reference):
        with pytest.raises(ValueError, match=message):
            op(**args)
    with pytest.raises(ValueError, match="chunk must be"):
        delta_rule(**inputs("deltanet", 7), chunk=0)


def test_delta_product_refuses_bad_shapes():
    args = product_inputs(7, 2)
    with pytest.raises(ValueError, match="need q"):
        delta_product(**{**args, "k": args["k"][:, :, :, 0]})
    with pytest.raises(ValueError, match="v and beta"):
        delta_product(**{**args, "beta": args["beta"][..., :1]})
    with pytest.raises(ValueError, match="log_decay must be"):
        delta_product(**{**args, "log_decay": args["log_decay"][:, :, :3]})


def to_fla(x: torch.Tensor | None) -> torch.Tensor | None:
    """(B, H, L, ·) -> fla's (B, L, H, ·), float32."""
    return None if x is None else x.transpose(1, 2).float()


@pytest.mark.parametrize("variant", VARIANTS)
def test_matches_fla_naive_recurrences(variant):
    """fla-core's pure-PyTorch references (float32 inside), where fla-core is installed."""
    pytest.importorskip("fla.ops.gdn2.naive")
    from fla.ops.delta_rule.naive import delta_rule_recurrence
    from fla.ops.gated_delta_rule.naive import naive_recurrent_gated_delta_rule
    from fla.ops.gdn2.naive import naive_recurrent_gdn2
    from fla.ops.kda.naive import naive_recurrent_kda

    x = inputs(variant, 65)
    ours = delta_rule(**x, chunk=16).float()
    q, k, v = (to_fla(x[name]) for name in "qkv")
    if variant == "deltanet":  # (B, H, L, K) layout; q scaled by K^-1/2 inside
        theirs = delta_rule_recurrence(x["q"].float() * K**0.5, x["k"].float(),
                                       x["v"].float(), x["beta"].float())[0]  # fmt: skip
    elif variant == "gated-deltanet":
        b, g = to_fla(x["beta"]), to_fla(x["log_decay"])
        theirs = naive_recurrent_gated_delta_rule(q, k, v, b, g, scale=1.0)[0].transpose(1, 2)
    elif variant == "kda":
        b, g = to_fla(x["beta"]), to_fla(x["log_decay"])
        theirs = naive_recurrent_kda(q, k, v, g, b, scale=1.0)[0].transpose(1, 2)
    else:
        b, g, w = to_fla(x["beta"]), to_fla(x["log_decay"]), to_fla(x["write"])
        theirs = naive_recurrent_gdn2(q, k, v, g, b, w, scale=1.0)[0].transpose(1, 2)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_delta_product_matches_fla_naive():
    pytest.importorskip("fla.ops.gated_delta_product.naive")
    from fla.ops.gated_delta_product.naive import naive_recurrent_gated_delta_product

    x = product_inputs(33, 2)
    ours = delta_product(**x, chunk=16).float()
    q = to_fla(x["q"])
    k, v = (x[name].flatten(2, 3).transpose(1, 2).float() for name in "kv")  # (B, L·n_h, H, ·)
    beta, g = to_fla(x["beta"].flatten(2, 3)), to_fla(x["log_decay"])
    theirs = naive_recurrent_gated_delta_product(q, k, v, g, beta, 1.0, None, num_householder=2)
    torch.testing.assert_close(ours, theirs[0].transpose(1, 2), atol=1e-4, rtol=1e-4)


# The layers (ssmbench.layers.delta_net) as the registry builds them.
MODELS = ["deltanet", "gated-deltanet", "kda", "gated-deltanet-2", "gated-deltaproduct"]
OPTIONS = [(name, {}) for name in MODELS] + [
    ("deltanet", {"n_heads": 2, "use_gate": True}),
    ("gated-deltanet", {"n_heads": 4, "negative_eigenvalues": True}),
    ("gated-deltaproduct", {"householder": 3, "n_heads": 1}),
]


def mixer_of(name: str, d_model: int = 16, **options) -> DeltaRuleMixer:
    torch.manual_seed(0)
    model = build(name, vocab_size=10, d_model=d_model, n_layers=1, **options).double()
    return next(m for m in model.modules() if isinstance(m, DeltaRuleMixer))


@pytest.mark.parametrize("d_model", [16, 64])
@pytest.mark.parametrize("name, options", OPTIONS, ids=[f"{n}-{o}" for n, o in OPTIONS])
def test_recurrent_form_matches_and_its_state_is_the_registrys_state_size(name, options, d_model):
    """`step`, one position at a time from the layer's state, gives the chunked forward's output
    (float64, 1e-10), and that state holds exactly `state_size` elements per sequence."""
    mixer = mixer_of(name, d_model, **options)
    x = torch.randn(2, 37, d_model, dtype=torch.float64)
    with torch.no_grad():
        y, (y_steps, final) = mixer(x), mixer.recurrent(x)
    torch.testing.assert_close(y_steps, y, atol=1e-10 * y.abs().max().item(), rtol=0)
    per_sequence = sum(s[0].numel() for s in final)  # conv inputs and S of one sequence
    assert per_sequence == get(name).state(d_model, 16, 37, **options)


GATES = {  # the shapes (B, H, L, ·) of beta, log_decay, write for x (2, 9, 16)
    "deltanet": {"beta": (2, 4, 9)},
    "gated-deltanet": {"beta": (2, 2, 9), "log_decay": (2, 2, 9)},
    "kda": {"beta": (2, 4, 9), "log_decay": (2, 4, 9, 4)},
    "gated-deltanet-2": {"beta": (2, 4, 9, 4), "log_decay": (2, 4, 9, 4), "write": (2, 4, 9, 4)},
    "gated-deltaproduct": {"beta": (2, 2, 9, 2), "log_decay": (2, 2, 9)},
}


@pytest.mark.parametrize("name", MODELS)
def test_gates_have_fla_shapes_and_ranges(name):
    """A scalar decay per head (Gated DeltaNet, DeltaProduct) or per key channel (KDA, GDN-2),
    never positive; β = sigmoid(W_b x) in (0, 1), exactly doubled by negative_eigenvalues
    (on by default only for DeltaProduct, as fla); write gates in (0, 1)."""
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    plain = mixer_of(name, negative_eigenvalues=False).gates(x)
    assert {gate: tuple(g.shape) for gate, g in plain.items()} == GATES[name]
    assert all(plain[g].min() > 0 and plain[g].max() < 1 for g in ("beta", "write") if g in plain)
    assert plain.get("log_decay", torch.zeros(1)).max() <= 0
    doubled = mixer_of(name, negative_eigenvalues=True).gates(x)["beta"]
    torch.testing.assert_close(doubled, 2 * plain["beta"], atol=0, rtol=0)
    assert get(name).options()["negative_eigenvalues"] == (name == "gated-deltaproduct")


def test_one_householder_step_is_gated_deltanet():
    gdn = mixer_of("gated-deltanet")
    product = GatedDeltaProduct(16, householder=1, negative_eigenvalues=False).double()
    product.load_state_dict(gdn.state_dict())
    x = torch.randn(2, 21, 16, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(product(x), gdn(x), atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", MODELS[1:])
def test_decay_parameters_take_no_weight_decay(name):
    """fla marks A_log and dt_bias `_no_weight_decay`; nothing else of the mixer is marked."""
    model = build(name, vocab_size=10, d_model=16, n_layers=1)
    marked = {n.rsplit(".", 1)[-1] for n, hp in marks_of(model).items() if hp}
    assert marked == {"A_log", "dt_bias"}
    assert all(hp == {"weight_decay": 0.0} for hp in marks_of(model).values() if hp)


def test_bad_head_counts_are_refused():
    with pytest.raises(ValueError, match="do not split into n_heads 3"):
        build("kda", vocab_size=10, d_model=16, n_heads=3)
    with pytest.raises(ValueError, match="householder must be >= 1"):
        build("gated-deltaproduct", vocab_size=10, d_model=16, householder=0)
