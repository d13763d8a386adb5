"""normreg.prox: every operator against the float64 reference and closed forms, the
optimality conditions, the Moreau identity with independently written duals, the
three-point inequality, zero counts, NaN, determinism across threads and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import normreg
from normreg import _reference as ref
from normreg import prox

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
IDS = ["f32", "f64", "bf16", "f16"]
SHAPES = [[(7,)], [(3, 5), (4,), (2, 3, 4)], [(66_000,), (1,), (0,)]]
SHAPE_IDS = ["vec", "mixed", "multichunk+empty"]
TOL = {torch.float32: 2e-6, torch.float64: 1e-12, torch.bfloat16: 1e-2, torch.float16: 2e-3}


def make(shapes, dtype=torch.float32, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(s, generator=g, dtype=torch.float64) * scale).to(dtype) for s in shapes]


def clones(ts):
    return [t.clone() for t in ts]


def assert_close(a, b, dtype):
    tol = TOL[dtype]
    for x, y in zip(a, b):
        torch.testing.assert_close(x.double(), y.double(), rtol=tol, atol=tol)


def counts(ts):
    return [int((t == 0).sum()) for t in ts]


# ---- each operator against the reference ----------------------------------------------------

ELEMENTWISE = {
    "soft": (lambda ts: prox.soft_threshold_(ts, 0.5, 0.9), lambda ts: ref.prox_shrink_(ts, 0.45, 1.0)),
    "soft_per_tensor": (
        lambda ts: prox.soft_threshold_(ts, 1.0, [0.1 * (i + 1) for i in range(len(ts))]),
        lambda ts: ref.prox_shrink_(ts, [0.1 * (i + 1) for i in range(len(ts))], 1.0),
    ),
    "soft_nonneg": (
        lambda ts: prox.soft_threshold_(ts, 0.3, nonneg=True),
        lambda ts: ref.prox_shrink_(ts, 0.3, 1.0, nonneg=True),
    ),
    "ridge": (lambda ts: prox.ridge_shrink_(ts, 0.5, 2.0), lambda ts: ref.prox_shrink_(ts, 0.0, 0.5)),
    "elastic_net": (
        lambda ts: prox.elastic_net_(ts, 0.5, 0.4, 2.0),
        lambda ts: ref.prox_shrink_(ts, 0.2, 0.5),
    ),
    "hard": (lambda ts: prox.hard_threshold_(ts, 0.5, 0.81), lambda ts: ref.prox_hard_(ts, math.sqrt(0.81))),
    "box": (lambda ts: prox.project_box_(ts, -0.3, 0.7), lambda ts: ref.project_box_(ts, -0.3, 0.7)),
    "box_open": (lambda ts: prox.project_box_(ts, lo=0.0), lambda ts: ref.project_box_(ts, 0.0, math.inf)),
    "linf_ball": (lambda ts: prox.project_linf_ball_(ts, 0.5), lambda ts: ref.project_box_(ts, -0.5, 0.5)),
    "l2_ball": (lambda ts: prox.project_l2_ball_(ts, 2.0), lambda ts: ref.project_l2_ball_(ts, 2.0)),
    "l2_norm": (lambda ts: prox.l2_norm_prox_(ts, 0.5, 3.0), lambda ts: ref.prox_l2_norm_(ts, 0.0, 1.5, 1.0)),
    "group0": (
        lambda ts: prox.group_soft_threshold_(ts, 0.5, 2.0, dim=0),
        lambda ts: ref.prox_group_(ts, 0, 0.0, 1.0, 1.0),
    ),
    "group_last": (
        lambda ts: prox.group_soft_threshold_(ts, 0.5, 2.0, dim=-1),
        lambda ts: ref.prox_group_(ts, -1, 0.0, 1.0, 1.0),
    ),
    "l1_ball": (lambda ts: prox.project_l1_ball_(ts, 3.0), lambda ts: ref.project_l1_ball_(ts, 3.0)),
    "linf_prox": (lambda ts: prox.linf_prox_(ts, 0.5, 4.0), lambda ts: ref.prox_linf_(ts, 2.0)),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("shapes", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("op", list(ELEMENTWISE))
def test_operator_matches_reference(op, shapes, dtype):
    if op.startswith("group") and any(len(s) == 0 or 0 in s for s in shapes):
        shapes = [s for s in shapes if 0 not in s] or [(3,)]
    ours, oracle = ELEMENTWISE[op]
    x = make(shapes, dtype)
    y = [t.clone() for t in x]
    stats = ours(x)
    zeros_ref = oracle(y)
    assert_close(x, y, dtype)
    assert stats.zeros == counts(x)
    if dtype in (torch.float32, torch.float64):
        assert stats.zeros == zeros_ref
    assert stats.total_zeros == sum(stats.zeros)
    assert stats.numel == sum(t.numel() for t in x)
    assert stats.fraction == pytest.approx(stats.total_zeros / max(stats.numel, 1))


@pytest.mark.skipif(
    normreg._ops.reference_forced(),
    reason="bitwise vs torch is the kernels' float32 rounding; the reference rounds from float64",
)
def test_soft_threshold_closed_form_and_torch_softshrink():
    x = make([(1000,)], torch.float32, seed=1)[0]
    want = F.softshrink(x, 0.3)
    prox.soft_threshold_([x], 0.3)
    assert torch.equal(x, want)  # same rounding as torch (x - t, rounded once)


def test_weighted_soft_threshold_matches_reference():
    x = make([(40,), (5, 6)], torch.float64, seed=2)
    u = [
        torch.rand(t.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(i)) * 2
        for i, t in enumerate(x)
    ]
    y = clones(x)
    s = prox.elastic_net_(x, 0.5, 0.8, 0.3, weights=u)
    z = ref.prox_shrink_(y, 0.4, 1.0 / 1.15, weights=u)
    assert_close(x, y, torch.float64)
    assert s.zeros == z
    # zero weight: untouched; weights of another float dtype are converted
    x = make([(50,)], torch.float32, seed=3)
    x0 = x[0].clone()
    prox.soft_threshold_(x, 10.0, weights=[torch.zeros(50, dtype=torch.float64)])
    assert torch.equal(x[0], x0)


def test_hard_threshold_is_the_exact_l0_prox_not_hardshrink():
    # prox of step*l*||w||_0 keeps w iff w^2/2 > step*l, i.e. |w| > sqrt(2 step l)
    x = torch.linspace(-2, 2, 401, dtype=torch.float64)
    step, lam = 0.5, 0.64  # sqrt(2 * 0.5 * 0.64) = 0.8
    y = x.clone()
    prox.hard_threshold_([y], step, lam)
    brute = torch.where(
        0.5 * x**2 > step * lam, x, torch.zeros_like(x)
    )  # argmin of 1/2 (z-x)^2 + step*l*[z != 0]
    assert torch.equal(y, brute)
    assert not torch.equal(y, F.hardshrink(x, step * lam))  # hardshrink(x, 0.32) keeps 0.5
    assert torch.equal(y, torch.where(x.abs() <= 0.8, 0.0, x))


def test_l1_ball_projection_closed_form():
    x = torch.tensor([3.0, -1.0, 0.5, 0.0], dtype=torch.float64)
    prox.project_l1_ball_([x], 2.0)  # theta = 1: [2, 0, 0, 0]
    assert torch.equal(x, torch.tensor([2.0, 0.0, 0.0, 0.0], dtype=torch.float64))
    y = torch.tensor([0.5, -0.25], dtype=torch.float64)
    s = prox.project_l1_ball_([y], 1.0)  # inside: unchanged
    assert torch.equal(y, torch.tensor([0.5, -0.25], dtype=torch.float64)) and s.total_zeros == 0


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 3000),
    radius=st.floats(1e-3, 50.0),
    scale=st.floats(1e-3, 10.0),
    seed=st.integers(0, 2**31 - 1),
    ties=st.booleans(),
)
def test_l1_ball_threshold_exact(n, radius, scale, seed, ties):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g, dtype=torch.float64) * scale
    if ties:
        x = torch.round(x * 4) / 4  # many equal magnitudes
    theta = _C_threshold(x, radius)
    want = ref.l1_ball_threshold(x, radius)
    assert theta == pytest.approx(want, rel=1e-12, abs=1e-12)
    y = x.clone()
    prox.project_l1_ball_([y], radius)
    l1 = float(y.abs().sum())
    if float(x.abs().sum()) > radius:
        assert l1 == pytest.approx(radius, rel=1e-10)
    else:
        assert torch.equal(y, x)


def _C_threshold(x, r):
    from normreg._loader import _C

    return _C.l1_ball_thresholds([x.data_ptr()], [x.numel()], [1], [r])[0]


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(1, 9), min_size=1, max_size=3),
    dtype=st.sampled_from(DTYPES),
    step=st.floats(0.0, 3.0),
    l1=st.floats(0.0, 2.0),
    l2=st.floats(0.0, 2.0),
    seed=st.integers(0, 1000),
)
def test_elastic_net_hypothesis(shape, dtype, step, l1, l2, seed):
    x = make([tuple(shape)], dtype, seed)
    y = clones(x)
    prox.elastic_net_(x, step, l1, l2)
    ref.prox_shrink_(y, step * l1, 1.0 / (1.0 + step * l2))
    assert_close(x, y, dtype)


@settings(max_examples=30, deadline=None)
@given(
    shape=st.lists(st.integers(1, 7), min_size=1, max_size=3),
    dim=st.integers(-3, 2),
    step=st.floats(0.0, 3.0),
    lam=st.floats(0.0, 4.0),
    l1=st.floats(0.0, 1.0),
    seed=st.integers(0, 1000),
)
def test_sparse_group_lasso_hypothesis(shape, dim, step, lam, l1, seed):
    if not -len(shape) <= dim < len(shape):
        return
    x = make([tuple(shape)], torch.float64, seed)
    y = clones(x)
    normreg.Sum([normreg.GroupLasso(lam, dim), normreg.L1(l1)]).prox_(x, step)
    ref.prox_group_(y, dim, step * l1, step * lam, 1.0)
    assert_close(x, y, torch.float64)


# ---- penalties: prox_ dispatch and sums -----------------------------------------------------

PENALTIES = {
    "l1": normreg.L1(0.7),
    "sq_l2": normreg.SquaredL2(1.5),
    "enet": normreg.ElasticNet(0.5, 0.8),
    "l1+l2": normreg.L1(0.5) + normreg.SquaredL2(0.8),
    "l2norm": normreg.L2Norm(2.0),
    "group": normreg.GroupLasso(1.0, dim=0),
    "sgl": normreg.L1(0.3) + normreg.GroupLasso(1.0, dim=0),
    "sgl+ridge": normreg.ElasticNet(0.3, 0.5) + normreg.GroupLasso(1.0, dim=0),
    "l1+l2norm": normreg.L1(0.2) + normreg.L2Norm(3.0),
    "linf": normreg.Linf(3.0),
}


def subgradient_distance(name, pen, p, g, step):
    """Distance of g = (w - p)/step to the subdifferential of pen at p (float64)."""
    terms = pen.terms if isinstance(pen, normreg.Sum) else [pen]
    l1 = sum(t._s1() for t in terms if t.affine)
    l2 = sum(t._s2() for t in terms if t.affine)
    norm_terms = [t for t in terms if not t.affine]
    r = g - l2 * p  # remove the smooth part
    if not norm_terms:
        nz = p != 0
        d_nz = (r[nz] - l1 * torch.sign(p[nz])).abs()
        d_z = torch.clamp_min(r[~nz].abs() - l1, 0)
        return float(torch.cat([d_nz, d_z]).max()) if p.numel() else 0.0
    (t,) = norm_terms
    if isinstance(t, normreg.Linf):
        # subdifferential of l*max|p| at p != 0: l * conv{sign(p_i) e_i : |p_i| = max}
        m = p.abs().max()
        if m == 0:
            return max(float(r.abs().sum()) - t.strength, 0.0)
        on = p.abs() >= m - 1e-12
        off_err = float(r[~on].abs().max()) if (~on).any() else 0.0
        sign_err = float(torch.clamp_min(-(r[on] * torch.sign(p[on])), 0).max())
        return max(off_err, sign_err, abs(float(r.abs().sum()) - t.strength))
    dim = t.dim if isinstance(t, normreg.GroupLasso) else None
    if dim is None:
        pg, rg = [p.reshape(-1)], [r.reshape(-1)]
    else:
        o, G, i = ref.group_shape(p.shape, dim)
        pp, rr = p.reshape(o, G, i), r.reshape(o, G, i)
        pg = [pp[:, k, :].reshape(-1) for k in range(G)]
        rg = [rr[:, k, :].reshape(-1) for k in range(G)]
    worst = 0.0
    for a, b in zip(pg, rg):
        na = torch.linalg.vector_norm(a)
        if na == 0:
            # exists s in l1*[-1,1]^n with ||b - s|| <= l: min over s is ||soft(b, l1)||
            worst = max(worst, float(torch.linalg.vector_norm(ref.soft(b, l1))) - t.strength)
            continue
        nz = a != 0
        want = t.strength * a / na
        d_nz = (b[nz] - want[nz] - l1 * torch.sign(a[nz])).abs()
        d_z = torch.clamp_min(b[~nz].abs() - l1, 0)
        worst = max(worst, float(torch.cat([d_nz, d_z]).max()))
    return max(worst, 0.0)


@pytest.mark.parametrize("name", list(PENALTIES))
@pytest.mark.parametrize("step", [0.05, 0.5, 2.0])
def test_prox_optimality(name, step):
    pen = PENALTIES[name]
    for seed in range(3):
        w = make([(6, 5)], torch.float64, seed)[0]
        p = w.clone()
        pen.prox_([p], step)
        assert subgradient_distance(name, pen, p, (w - p) / step, step) <= 1e-6


@pytest.mark.parametrize("name", [n for n in PENALTIES])
def test_three_point_inequality(name):
    pen = PENALTIES[name]
    g = torch.Generator().manual_seed(5)
    step = 0.7
    for seed in range(3):
        w = make([(4, 6)], torch.float64, seed)[0]
        p = w.clone()
        pen.prox_([p], step)
        rp = float(pen.value([p]))
        for _ in range(10):
            z = torch.randn(w.shape, generator=g, dtype=torch.float64)
            rz = float(pen.value([z]))
            assert step * rz >= step * rp + float(((w - p) * (z - p)).sum()) - 1e-9


# Independently written duals: projections onto the dual-norm ball, by other algorithms.
def _dual_linf_ball(x, r):
    return torch.maximum(torch.minimum(x, torch.full_like(x, r)), torch.full_like(x, -r))


def _dual_l2_ball(x, r):
    n = math.sqrt(float((x * x).sum()))
    return x if n <= r else x * (r / n)


def _dual_l1_ball_bisection(x, r):
    a = np.abs(x.numpy())
    if a.sum() <= r:
        return x.clone()
    lo, hi = 0.0, float(a.max())
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if np.maximum(a - mid, 0).sum() > r:
            lo = mid
        else:
            hi = mid
    th = 0.5 * (lo + hi)
    return torch.from_numpy(np.sign(x.numpy()) * np.maximum(a - th, 0))


def _dual_group_balls(x, r, dim):
    o, G, i = ref.group_shape(x.shape, dim)
    xx = x.reshape(o, G, i).clone()
    for k in range(G):
        xx[:, k, :] = _dual_l2_ball(xx[:, k, :], r)
    return xx.reshape(x.shape)


@pytest.mark.parametrize(
    "pen,dual",
    [
        (normreg.L1(0.6), lambda x, s: _dual_linf_ball(x, s * 0.6)),
        (normreg.L2Norm(1.3), lambda x, s: _dual_l2_ball(x, s * 1.3)),
        (normreg.Linf(2.5), lambda x, s: _dual_l1_ball_bisection(x, s * 2.5)),
        (normreg.GroupLasso(0.9, dim=1), lambda x, s: _dual_group_balls(x, s * 0.9, 1)),
    ],
    ids=["l1", "l2norm", "linf", "group"],
)
@pytest.mark.parametrize("step", [0.1, 1.0])
def test_moreau_identity(pen, dual, step):
    # w = prox_{step R}(w) + P_{dual ball of radius step*l}(w)  for a norm R = l ||.||
    for seed in range(3):
        w = make([(5, 7)], torch.float64, seed)[0]
        p = w.clone()
        pen.prox_([p], step)
        torch.testing.assert_close(p + dual(w, step), w, rtol=1e-9, atol=1e-9)


def test_projection_moreau_pairs():
    # the L1-ball projection and the Linf prox are Moreau duals of each other
    w = make([(300,)], torch.float64, 9)[0]
    a, b = w.clone(), w.clone()
    prox.project_l1_ball_([a], 4.0)
    prox.linf_prox_([b], 1.0, 4.0)
    torch.testing.assert_close(a + b, w, rtol=0, atol=1e-12)


def test_sum_prox_is_exact_or_refused():
    x = make([(4, 5)], torch.float64, 1)
    y = clones(x)
    (normreg.L1(0.3) + normreg.SquaredL2(0.5)).prox_(x, 0.5)
    normreg.ElasticNet(0.3, 0.5).prox_(y, 0.5)
    torch.testing.assert_close(x, y, rtol=0, atol=0)
    a = make([(4, 5)], torch.float64, 2)
    a0 = clones(a)
    for bad in [
        normreg.L1(0.1) + normreg.L0(0.1),
        normreg.GroupLasso(1.0, 0) + normreg.GroupLasso(1.0, 1),
        normreg.Linf(1.0) + normreg.L1(0.1),
        normreg.L2Norm(1.0) + normreg.GroupLasso(1.0, 0),
    ]:
        with pytest.raises(ValueError, match="no exact closed form"):
            bad.prox_(a, 0.5)
        assert torch.equal(a[0], a0[0])
    # terms of one kind add up
    b, c = make([(4, 5)], torch.float64, 3), make([(4, 5)], torch.float64, 3)
    (normreg.GroupLasso(0.5, 0) + normreg.GroupLasso(0.7, 0)).prox_(b, 1.0)
    normreg.GroupLasso(1.2, 0).prox_(c, 1.0)
    torch.testing.assert_close(b, c, rtol=1e-14, atol=1e-14)


def test_l0_penalty_prox():
    x = make([(100,)], torch.float32, 4)
    y = clones(x)
    s = normreg.L0(0.125).prox_(x, 1.0)  # threshold 0.5
    prox.hard_threshold_(y, 1.0, 0.125)
    assert torch.equal(x[0], y[0]) and s.total_zeros == int((x[0] == 0).sum())


# ---- NaN ------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", list(ELEMENTWISE))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_nan_propagates(op, dtype):
    ours, oracle = ELEMENTWISE[op]
    x = make([(4, 6)], dtype, 7)
    x[0][1, 2] = float("nan")
    y = clones(x)
    s = ours(x)
    oracle(y)
    assert torch.isnan(x[0][1, 2])
    assert torch.equal(torch.isnan(x[0]), torch.isnan(y[0])), op
    assert s.zeros == counts(x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16], ids=IDS)
def test_zero_threshold_special_values(dtype):
    """t = 0 takes a one-multiply path in the kernel (ridge shrink, soft threshold at 0): the
    values must be those of c * soft(w, 0), zeros written as +0, NaN and infinities kept."""
    vals = [-0.0, 0.0, float("nan"), float("inf"), -float("inf"), -1e-30, 3.0, -2.5]
    for ours, c in (
        (lambda ts: prox.ridge_shrink_(ts, 0.5, 2.0), 0.5),
        (lambda ts: prox.soft_threshold_(ts, 1.0, 0.0), 1.0),
    ):
        x = [torch.tensor(vals, dtype=dtype)]
        y = [x[0].clone()]
        s = ours(x)
        ref.prox_shrink_(y, 0.0, c)
        torch.testing.assert_close(x[0], y[0], equal_nan=True, rtol=0, atol=0)
        zeros = x[0] == 0
        assert not torch.signbit(x[0][zeros]).any(), "a zero was written as -0"
        assert s.zeros == [int(zeros.sum())]


# ---- determinism ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "op",
    ["soft", "l2_norm", "group0", "l1_ball", "linf_prox", "l2_ball"],
)
def test_bitwise_identical_for_any_thread_count(op):
    ours, _ = ELEMENTWISE[op]
    base = make([(300_000,), (400, 500), (33,)], torch.float32, 11)
    outs = []
    try:
        for n in (1, 2, 3):
            normreg.set_num_threads(n)
            x = clones(base)
            s = ours(x)
            outs.append((x, s))
    finally:
        normreg.set_num_threads(0)
    for x, s in outs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(x, outs[0][0]))
        assert s == outs[0][1]


# ---- bad input ------------------------------------------------------------------------------


def _unchanged_after(fn, ts):
    before = clones(ts)
    fn()
    return all(torch.equal(a, b) for a, b in zip(ts, before))


@pytest.mark.parametrize(
    "call,exc,arg",
    [
        (lambda ts: prox.soft_threshold_(ts, -1.0), ValueError, "'step'"),
        (lambda ts: prox.soft_threshold_(ts, 1.0, -0.5), ValueError, "'strength'"),
        (lambda ts: prox.soft_threshold_(ts, 1.0, [0.1, -0.1]), ValueError, "'strength[1]'"),
        (lambda ts: prox.soft_threshold_(ts, 1.0, [0.1]), ValueError, "'strength'"),
        (lambda ts: prox.soft_threshold_(ts, float("nan")), ValueError, "'step'"),
        (lambda ts: prox.soft_threshold_(ts, "1"), TypeError, "'step'"),
        (lambda ts: prox.elastic_net_(ts, 1.0, 0.1, -2.0), ValueError, "'l2'"),
        (lambda ts: prox.hard_threshold_(ts, -0.1), ValueError, "'step'"),
        (lambda ts: prox.project_l2_ball_(ts, 0.0), ValueError, "'radius'"),
        (lambda ts: prox.project_l1_ball_(ts, -1.0), ValueError, "'radius'"),
        (lambda ts: prox.project_linf_ball_(ts, 0.0), ValueError, "'radius'"),
        (lambda ts: prox.project_box_(ts, 1.0, 0.0), ValueError, "'lo'"),
        (lambda ts: prox.group_soft_threshold_(ts, 1.0, 1.0, dim=2), ValueError, "'dim'"),
        (lambda ts: prox.group_soft_threshold_(ts, 1.0, 1.0, dim=1.0), TypeError, "'dim'"),
        (
            lambda ts: prox.soft_threshold_(ts, 1.0, weights=[torch.ones(3, 3), torch.ones(4)]),
            ValueError,
            "'weights'[0]",
        ),
        (lambda ts: prox.soft_threshold_(ts, 1.0, weights=[torch.ones(3, 4)]), ValueError, "'weights'"),
        (
            lambda ts: prox.soft_threshold_(ts, 1.0, weights=[-torch.ones(3, 4), torch.ones(4)]),
            ValueError,
            "'weights'[0]",
        ),
        (lambda ts: normreg.GroupLasso(1.0, dim=3).prox_(ts, 1.0), ValueError, "'dim'"),
        (lambda ts: normreg.L1(1.0).prox_(ts, -1.0), ValueError, "'step'"),
        (lambda ts: prox.penalty_prox_("l1", ts, 1.0), TypeError, "'penalty'"),
    ],
)
def test_bad_input_raises_before_modifying(call, exc, arg):
    ts = make([(3, 4), (4,)], torch.float32, 0)
    before = clones(ts)
    with pytest.raises(exc) as info:
        call(ts)
    assert arg in str(info.value)
    assert all(torch.equal(a, b) for a, b in zip(ts, before))


def test_bad_tensors():
    nc = torch.randn(4, 12)[:, ::2]  # gaps in memory (a transposed tensor is fine: dense)
    ok = torch.randn(5)
    ok0 = ok.clone()
    with pytest.raises(ValueError, match=r"'params'\[1\] .*has gaps"):
        prox.soft_threshold_([ok, nc], 0.1)
    assert torch.equal(ok, ok0)
    with pytest.raises(TypeError, match=r"'params'\[0\].*int64"):
        prox.soft_threshold_([torch.arange(4)], 0.1)
    with pytest.raises(TypeError, match=r"'params'\[0\].*complex"):
        prox.project_l1_ball_([torch.randn(4, dtype=torch.complex64)], 1.0)
    with pytest.raises(ValueError, match="soft_threshold_: 'params'"):
        prox.soft_threshold_([], 0.1)
    x = torch.randn(5)
    with pytest.raises(ValueError, match="shares memory"):
        prox.soft_threshold_([x, x], 0.1)
