"""Penalty values and gradients against the float64 pure-torch reference."""

from __future__ import annotations

import math

import hypothesis.strategies as st
import pytest
import torch
from conftest import DTYPE_IDS, DTYPES, ELEM_TOL, VALUE_RTOL
from hypothesis import given, settings

import normreg
from normreg import _reference as ref

PENALTIES = {
    "l1": lambda: normreg.L1(0.3),
    "squared_l2": lambda: normreg.SquaredL2(0.7),
    "elastic_net": lambda: normreg.ElasticNet(0.3, 0.7),
    "l2_norm": lambda: normreg.L2Norm(0.5),
    "linf": lambda: normreg.Linf(0.9),
    "l0": lambda: normreg.L0(0.2),
    "group_lasso": lambda: normreg.GroupLasso(0.4, dim=0),
}
DIFFERENTIABLE = [k for k in PENALTIES if k != "l0"]


def ref_value(pen, tensors):
    if isinstance(pen, normreg.GroupLasso):
        return float(ref.group_value(tensors, pen.dim, pen.strength))
    return float(ref.penalty_value(pen.kind, tensors, pen._s1(), pen._s2()))


def ref_grad(pen, tensors, dtype=None):
    if isinstance(pen, normreg.GroupLasso):
        return ref.group_grad(tensors, pen.dim, pen.strength, dtype=dtype)
    return ref.penalty_grad(pen.kind, tensors, pen._s1(), pen._s2(), dtype=dtype)


def shapes_list():
    # odd sizes, sizes straddling the 64K chunk, an empty tensor
    return [(3, 5, 7), (65536 + 17,), (1,), (0, 4), (130, 1031), (2, 3)]


def make(shapes, dtype, scale=1.0):
    return [(torch.randn(s, dtype=torch.float64) * scale).to(dtype) for s in shapes]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("kind", list(PENALTIES))
def test_value_matches_reference(kind, dtype):
    pen = PENALTIES[kind]()
    ts = make(shapes_list(), dtype)
    got = pen.value(ts)
    assert got.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    want = ref_value(pen, ts)
    assert math.isclose(float(got), want, rel_tol=VALUE_RTOL[dtype] * 10, abs_tol=0)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("kind", DIFFERENTIABLE)
def test_add_grad_matches_reference(kind, dtype):
    pen = PENALTIES[kind]()
    ts = [t.requires_grad_() for t in make(shapes_list(), dtype)]
    base = [torch.randn(t.shape, dtype=torch.float64).to(dtype) for t in ts]
    for t, b in zip(ts, base):
        t.grad = b.clone()
    value = pen.add_grad_(ts)
    want = ref_grad(pen, [t.detach() for t in ts], dtype=torch.float64)
    assert math.isclose(value, ref_value(pen, [t.detach() for t in ts]), rel_tol=VALUE_RTOL[dtype] * 10)
    for t, b, g in zip(ts, base, want):
        expect = (b.double() + g).to(dtype)  # kernel adds in compute precision, rounds once
        torch.testing.assert_close(t.grad.double(), expect.double(), **ELEM_TOL[dtype])


@pytest.mark.parametrize("kind", DIFFERENTIABLE)
def test_add_grad_allocates_missing_grads(kind):
    pen = PENALTIES[kind]()
    ts = [torch.randn(4, 3, requires_grad=True), torch.randn(5, requires_grad=True)]
    if kind == "group_lasso":
        ts = ts[:1]
    pen.add_grad_(ts)
    for t, g in zip(ts, ref_grad(pen, [t.detach() for t in ts])):
        torch.testing.assert_close(t.grad, g)


def test_add_grad_skips_frozen_params():
    a = torch.randn(10, requires_grad=True)
    b = torch.randn(10)  # frozen
    v = normreg.L1(1.0).add_grad_([a, b])
    assert b.grad is None
    assert math.isclose(v, float(a.detach().abs().sum()), rel_tol=1e-6)


@pytest.mark.parametrize("kind", DIFFERENTIABLE)
def test_value_autograd_matches_reference(kind):
    pen = PENALTIES[kind]()
    ts = [torch.randn(s, dtype=torch.float64, requires_grad=True) for s in [(6, 4), (3, 2, 2)]]
    (2.5 * pen.value(ts)).backward()
    for t, g in zip(ts, ref_grad(pen, [t.detach() for t in ts])):
        torch.testing.assert_close(t.grad, 2.5 * g)


@pytest.mark.parametrize("kind", DIFFERENTIABLE)
def test_gradcheck(kind):
    pen = PENALTIES[kind]()
    g = torch.Generator().manual_seed(1)
    # away from kinks: |w| bounded away from 0, distinct magnitudes for Linf
    ts = [
        (torch.rand(5, 3, generator=g, dtype=torch.float64) + 0.5)
        * torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64),
        (
            torch.linspace(0.3, 2.0, 4, dtype=torch.float64)
            * torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64)
        ).reshape(4, 1),
    ]
    for t in ts:
        t.requires_grad_()
    assert torch.autograd.gradcheck(lambda *xs: pen.value(list(xs)), ts)


@pytest.mark.parametrize("kind", ["squared_l2", "l2_norm"])
def test_double_backward(kind):
    pen = PENALTIES[kind]()
    ts = [
        torch.randn(4, 3, dtype=torch.float64, requires_grad=True),
        torch.randn(5, dtype=torch.float64, requires_grad=True),
    ]
    assert torch.autograd.gradgradcheck(lambda *xs: pen.value(list(xs)), ts)
    # gradient-penalty use: || d R / d w ||^2 differentiated again
    v = pen.value(ts)
    gs = torch.autograd.grad(v, ts, create_graph=True)
    gp = sum((g * g).sum() for g in gs)
    gp.backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in ts)


def test_subgradient_zero_at_zero_and_no_nan_for_zero_groups():
    w = torch.zeros(4, 3, requires_grad=True)
    for pen in [normreg.L1(1.0), normreg.ElasticNet(1.0, 1.0), normreg.L2Norm(1.0), normreg.GroupLasso(1.0)]:
        w.grad = None
        pen.add_grad_([w])
        assert torch.equal(w.grad, torch.zeros(4, 3)), pen
    # one all-zero group among nonzero ones
    w = torch.randn(4, 3)
    w[1] = 0
    w.requires_grad_()
    normreg.GroupLasso(1.0, dim=0).add_grad_([w])
    assert torch.isfinite(w.grad).all()
    assert torch.equal(w.grad[1], torch.zeros(3))


@pytest.mark.parametrize("dim", [0, 1, -1, 2])
def test_group_lasso_dims(dim):
    ts = [torch.randn(5, 4, 3, dtype=torch.float64, requires_grad=True)]
    pen = normreg.GroupLasso(0.7, dim=dim)
    norms = ts[0].detach().movedim(dim, 0).reshape(ts[0].shape[dim], -1).norm(dim=1)
    assert math.isclose(pen.value(ts).item(), 0.7 * float(norms.sum()), rel_tol=1e-12)
    pen.add_grad_(ts)
    torch.testing.assert_close(ts[0].grad, ref.group_grad([ts[0].detach()], dim, 0.7)[0])


def test_linf_gradient_at_first_argmax():
    w = torch.tensor([1.0, -3.0, 3.0, 2.0], requires_grad=True)
    normreg.Linf(2.0).add_grad_([w])
    assert torch.equal(w.grad, torch.tensor([0.0, -2.0, 0.0, 0.0]))


@pytest.mark.parametrize("kind", list(PENALTIES))
def test_nan_and_inf_propagate(kind):
    pen = PENALTIES[kind]()
    w = torch.randn(6, 5)
    w[2, 3] = float("nan")
    assert math.isnan(float(pen.value([w])))
    w2 = torch.randn(6, 5)
    w2[0, 0] = float("inf")
    v = float(pen.value([w2]))
    assert math.isinf(v) or (kind == "l0" and math.isfinite(v))
    if kind in DIFFERENTIABLE:
        w.requires_grad_()
        pen.add_grad_([w])
        assert torch.isnan(w.grad).any()  # never silently turned into 0
        if kind in ("l1", "squared_l2", "elastic_net"):
            assert torch.isnan(w.grad[2, 3])


def test_zero_size_tensors_have_value_zero():
    assert float(normreg.L1(1.0).value([torch.empty(0), torch.empty(3, 0)])) == 0.0
    t = torch.empty(0, requires_grad=True)
    assert normreg.ElasticNet(1.0, 1.0).add_grad_([t]) == 0.0
    assert t.grad.shape == (0,)


def test_sum_of_penalties_adds_values_and_gradients():
    ts = [torch.randn(7, 3, dtype=torch.float64, requires_grad=True)]
    parts = [normreg.L1(0.1), normreg.SquaredL2(0.2), normreg.L2Norm(0.3), normreg.GroupLasso(0.4)]
    total = sum(parts[1:], parts[0])
    assert isinstance(total, normreg.Sum) and len(total.terms) == 4
    want = sum(ref_value(p, [ts[0].detach()]) for p in parts)
    assert math.isclose(total.value(ts).item(), want, rel_tol=1e-12)
    v = total.add_grad_(ts)
    assert math.isclose(v, want, rel_tol=1e-12)
    g = sum(ref_grad(p, [ts[0].detach()])[0] for p in parts)
    torch.testing.assert_close(ts[0].grad, g)


def test_squared_l2_gradient_equals_sgd_weight_decay():
    torch.manual_seed(3)
    a = torch.nn.Linear(6, 4)
    b = torch.nn.Linear(6, 4)
    b.load_state_dict(a.state_dict())
    x = torch.randn(8, 6)
    opt_a = torch.optim.SGD(a.parameters(), lr=0.1, weight_decay=0.01)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.1)
    for _ in range(5):
        opt_a.zero_grad()
        opt_b.zero_grad()
        a(x).square().mean().backward()
        b(x).square().mean().backward()
        normreg.SquaredL2.from_weight_decay(0.01).add_grad_(b.parameters())
        opt_a.step()
        opt_b.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_converters():
    en = normreg.ElasticNet.from_sklearn(alpha=0.5, l1_ratio=0.2)
    assert math.isclose(en.l1, 0.1) and math.isclose(en.l2, 0.4)
    gl = normreg.ElasticNet.from_glmnet(0.5, alpha=0.2)
    assert math.isclose(gl.l1, 0.1) and math.isclose(gl.l2, 0.4)
    src = normreg.ElasticNet.from_sources(lam=2.0, alpha=0.5, beta=0.25, m=10)
    # lam/(2m) (alpha sum|w| + beta sum w^2) == l1 sum|w| + (l2/2) sum w^2
    w = [torch.randn(20, dtype=torch.float64)]
    direct = 2.0 / 20 * (0.5 * w[0].abs().sum() + 0.25 * (w[0] ** 2).sum())
    assert math.isclose(float(src.value(w)), float(direct), rel_tol=1e-12)
    # sklearn's ElasticNet objective evaluated directly equals data term + our penalty
    from sklearn.linear_model import ElasticNet as SkEN

    X = torch.randn(30, 5, dtype=torch.float64)
    y = X @ torch.tensor([1.0, 0.0, -2.0, 0.0, 0.5], dtype=torch.float64)
    sk = SkEN(alpha=0.05, l1_ratio=0.7, fit_intercept=False, tol=1e-12, max_iter=100000).fit(
        X.numpy(), y.numpy()
    )
    coef = torch.tensor(sk.coef_, requires_grad=True)
    loss = 0.5 * ((y - X @ coef) ** 2).mean() + normreg.ElasticNet.from_sklearn(0.05, 0.7).value([coef])
    loss.backward()
    # at sklearn's optimum the subgradient contains 0: on nonzero coefficients the gradient vanishes
    nz = coef.detach() != 0
    assert nz.any()
    assert coef.grad[nz].abs().max() < 1e-6


def test_param_groups_exclude_biases_and_norm_layers():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.Conv2d(4, 2, 1, bias=False),
        torch.nn.LayerNorm(2),
    )
    pen = normreg.L1(1e-3)
    groups = normreg.param_groups(model, pen)
    assert groups[0]["penalty"] is pen and groups[1]["penalty"] is None
    assert groups[0]["param_names"] == ["0.weight", "2.weight"]
    assert set(groups[1]["param_names"]) == {"0.bias", "1.weight", "1.bias", "3.weight", "3.bias"}
    assert normreg.param_groups(model, pen, exclude=["2.*"])[1]["param_names"] == ["2.weight"]
    opt = torch.optim.SGD(groups, lr=0.1)  # torch.optim accepts them
    assert len(opt.param_groups) == 2


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=6),
    l1=st.one_of(st.just(0.0), st.floats(1e-6, 10)),
    l2=st.one_of(st.just(0.0), st.floats(1e-6, 10)),
    scale=st.floats(1e-3, 1e3),
    dtype=st.sampled_from(DTYPES),
)
def test_elastic_net_hypothesis(sizes, l1, l2, scale, dtype):
    ts = make([(n,) for n in sizes], dtype, scale)
    pen = normreg.ElasticNet(l1, l2)
    want = ref_value(pen, ts)
    got = float(pen.value(ts))
    assert math.isclose(got, want, rel_tol=VALUE_RTOL[dtype] * 10, abs_tol=1e-300)
    grads = pen.grad(ts)
    for g, r in zip(grads, ref_grad(pen, ts)):
        torch.testing.assert_close(g.double(), r.double(), **ELEM_TOL[dtype])


def test_functional_against_float64_formulas():
    # an independent reference per function (not the penalty object it calls)
    ts = [torch.randn(5, 4), torch.randn(3)]
    d = [t.double() for t in ts]
    F = normreg.functional
    want = {
        "l1": (F.l1(ts, 0.5), 0.5 * sum(float(t.abs().sum()) for t in d)),
        "squared_l2": (F.squared_l2(ts, 0.5), 0.25 * sum(float((t * t).sum()) for t in d)),
        "elastic_net": (
            F.elastic_net(ts, 0.5, 0.2),
            sum(0.5 * float(t.abs().sum()) + 0.1 * float((t * t).sum()) for t in d),
        ),
        "l2_norm": (F.l2_norm(ts, 0.5), 0.5 * sum(float(t.norm()) for t in d)),
        "linf": (F.linf(ts, 0.5), 0.5 * sum(float(t.abs().max()) for t in d)),
        "l0": (F.l0(ts, 0.5), 0.5 * sum(int((t != 0).sum()) for t in d)),
        "group_lasso": (F.group_lasso(ts[:1], 0.5, dim=1), 0.5 * float(d[0].norm(dim=0).sum())),
    }
    for name, (got, expected) in want.items():
        assert math.isclose(float(got), expected, rel_tol=1e-6), name
    # and autograd through a function: d/dw of l1 is weight * sign(w)
    w = torch.randn(6, requires_grad=True)
    F.l1([w], 0.5).backward()
    assert torch.equal(w.grad, 0.5 * torch.sign(w.detach()))


def test_model_and_generator_inputs():
    model = torch.nn.Linear(3, 2)
    want = float(sum(p.detach().abs().sum() for p in model.parameters()))
    assert math.isclose(float(normreg.L1(1.0).value(model).detach()), want, rel_tol=1e-6)
    assert math.isclose(float(normreg.L1(1.0).value(model.parameters()).detach()), want, rel_tol=1e-6)


def test_non_contiguous_read_is_fine():
    w = torch.randn(8, 6).t()
    assert not w.is_contiguous()
    assert math.isclose(float(normreg.L1(1.0).value([w])), float(w.abs().sum()), rel_tol=1e-6)
