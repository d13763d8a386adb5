"""Edge values of the kernels and of the pure-torch reference (issue 15, "Numbers").

Every case is checked in every dtype, on both implementations (the C++ kernels through the
public API, and ``normreg._reference``), against closed forms or exact decimal arithmetic.
docs/conventions.md, "Edge values", states what each op returns.
"""

from __future__ import annotations

import contextlib
import math
from decimal import Decimal, getcontext

import hypothesis.strategies as st
import pytest
import torch
from dist_util import register, shared_results
from hypothesis import given, settings
from torch import Tensor

from normreg import L1, ElasticNet, GroupLasso, L2Norm, Linf, SquaredL2, _ops
from normreg import _reference as ref
from normreg import prox as P
from normreg.optim import ProxAdam, ProxSGD

getcontext().prec = 60
INF = math.inf
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
# kernel: the public API on CPU tensors (C++); forced: the public API with every op on the
# reference (what non-CPU tensors run); reference: normreg._reference called directly.
BACKENDS = ["kernel", "forced", "reference"]


@pytest.fixture(autouse=True)
def _backend_mode(request):
    """Tests parametrized with backend="forced" run the public API on the reference."""
    params = getattr(getattr(request.node, "callspec", None), "params", {})
    with _mode(params.get("backend", "kernel")):
        yield


def _mode(backend):
    return _ops.force_reference() if backend == "forced" else contextlib.nullcontext()


# ---- the implementations behind one interface ----------------------------------------------


def _api(backend, public, direct):
    """public() through the public API (on the kernels or the forced reference), or direct()."""
    if backend == "reference":
        return direct()
    with _mode(backend):
        return public()


def linf_prox(backend, w, s):
    return _api(backend, lambda: P.linf_prox_(w, s).total_zeros, lambda: ref.prox_linf_([w], s)[0])


def project_l1(backend, w, r):
    return _api(
        backend, lambda: P.project_l1_ball_(w, r).total_zeros, lambda: ref.project_l1_ball_([w], r)[0]
    )


def project_l2(backend, w, r):
    return _api(
        backend, lambda: P.project_l2_ball_(w, r).total_zeros, lambda: ref.project_l2_ball_([w], r)[0]
    )


def l2_prox(backend, w, step, lam):
    return _api(
        backend,
        lambda: L2Norm(lam).prox_(w, step).total_zeros,
        lambda: ref.prox_l2_norm_([w], 0.0, step * lam, 1.0)[0],
    )


def hard(backend, w, step, lam):
    return _api(
        backend,
        lambda: P.hard_threshold_(w, step, lam).total_zeros,
        lambda: ref.prox_hard_([w], math.sqrt(2.0 * step * lam))[0],
    )


def grad(backend, penalty, kind, w, s1=0.0, s2=0.0):
    return _api(backend, lambda: penalty.grad(w)[0], lambda: ref.penalty_grad(kind, [w], s1, s2)[0])


def value(backend, penalty, kind, w, s1=0.0, s2=0.0) -> float:
    return _api(
        backend, lambda: float(penalty.value(w).detach()), lambda: float(ref.penalty_value(kind, [w], s1, s2))
    )


def t(values, dtype):
    return torch.tensor(values, dtype=dtype)


# ---- Inf in the Linf prox and the L1-ball projection ---------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_linf_prox_with_inf_is_the_limit(backend, dtype):
    # prox = w - P_{L1 ball}(w); P puts the whole radius on the Inf coordinate, so every
    # finite coordinate is unchanged and the Inf one stays Inf (Inf - s).
    for vals in ([1.0, INF, 3.0, 0.5], [1.0, -INF, 3.0, 0.5], [INF, -2.0, -INF]):
        w = t(vals, dtype)
        linf_prox(backend, w, 0.1)
        assert torch.equal(w, t(vals, dtype))
    # the limit agrees with large finite inputs in float64: [1, M - s, 3, .5] as M grows
    big = t([1.0, 1e300, 3.0, 0.5], torch.float64)
    linf_prox(backend, big, 0.1)
    assert big.tolist() == [1.0, 1e300 - 0.1, 3.0, 0.5]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_project_l1_ball_with_inf_shares_the_radius(backend, dtype):
    w = t([1.0, INF, 3.0, 0.5], dtype)
    zeros = project_l1(backend, w, 1.0)
    assert w.tolist() == [0.0, 1.0, 0.0, 0.0] and zeros == 3
    w = t([1.0, -INF, 3.0, INF], dtype)
    project_l1(backend, w, 1.0)
    assert w.tolist() == [0.0, -0.5, 0.0, 0.5]
    assert float(w.double().abs().sum()) <= 1.0
    if backend == "reference":  # the public API refuses radius 0; the reference gives the ball {0}
        w = t([1.0, -INF], dtype)
        project_l1(backend, w, 0.0)
        assert w.tolist() == [0.0, 0.0]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opt", ["sgd", "adam"])
@pytest.mark.parametrize("backend", ["kernel", "forced"])
def test_optimizer_with_linf_penalty_keeps_weights(backend, dtype, opt):
    w = torch.nn.Parameter(t([1.0, INF, 3.0, 0.5], dtype))
    w.grad = torch.zeros_like(w)
    o = ProxSGD([w], lr=0.1, penalty=Linf(1.0)) if opt == "sgd" else ProxAdam([w], lr=0.1, penalty=Linf(1.0))
    o.step()
    assert w.detach().tolist() == [1.0, INF, 3.0, 0.5]


# ---- the L1 gradient of an infinite weight ----------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_l1_grad_of_inf(backend, dtype):
    w = t([INF, 2.0, -INF], dtype)
    assert grad(backend, L1(1.0), "l1", w, 1.0).tolist() == [1.0, 1.0, -1.0]
    assert grad(backend, ElasticNet(1.0, 0.0), "elastic_net", w, 1.0, 0.0).tolist() == [1.0, 1.0, -1.0]
    assert grad(backend, ElasticNet(1.0, 2.0), "elastic_net", w, 1.0, 2.0).tolist() == [INF, 5.0, -INF]
    # the same as torch autograd of sum |w|
    x = w.double().requires_grad_()
    x.abs().sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, -1.0]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opt", ["sgd", "adam"])
@pytest.mark.parametrize("backend", ["kernel", "forced"])
def test_grad_mode_optimizer_with_inf_weight(backend, dtype, opt):
    w = torch.nn.Parameter(t([INF, 2.0, -INF], dtype))
    w.grad = torch.zeros_like(w)
    kw = dict(lr=0.1, penalty=L1(1.0), penalty_mode="grad")
    o = ProxSGD([w], **kw) if opt == "sgd" else ProxAdam([w], **kw)
    o.step()
    out = w.detach().double()
    assert out[0] == INF and out[2] == -INF and not torch.isnan(out).any()
    assert 1.5 < float(out[1]) < 2.0


# ---- zero counts of the stored values ------------------------------------------------------


def _min_subnormal(dtype) -> float:
    fi = torch.finfo(dtype)
    return fi.smallest_normal * fi.eps  # 2^(emin - mantissa bits)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_count_after_rounding(backend, dtype):
    # the case: float16 [1.19e-7, 1] / (1 + 3) stores [0, .25]; likewise in every dtype
    # with the dtype's two smallest subnormals (x / 4 is a tie that rounds to even: 0).
    tiny = 2 * _min_subnormal(dtype)
    w = t([tiny, 1.0], dtype)
    zeros = (
        SquaredL2(1.0).prox_(w, 3.0).total_zeros
        if backend != "reference"
        else ref.prox_shrink_([w], 0.0, 0.25)[0]
    )
    assert w.tolist() == [0.0, 0.25]
    assert zeros == int((w == 0).sum()) == 1


def _all_prox_ops(backend):
    if backend != "reference":
        return [
            lambda w: P.soft_threshold_(w, 0.5, 1e-3).total_zeros,
            lambda w: P.ridge_shrink_(w, 3.0, 1.0).total_zeros,
            lambda w: P.elastic_net_(w, 1.0, 1e-3, 3.0).total_zeros,
            lambda w: P.hard_threshold_(w, 1.0, 1e-8).total_zeros,
            lambda w: P.group_soft_threshold_(w, 1.0, 1e-3, dim=0).total_zeros,
            lambda w: P.l2_norm_prox_(w, 1.0, 1e-3).total_zeros,
            lambda w: P.linf_prox_(w, 1.0, 1e-3).total_zeros,
            lambda w: P.project_l2_ball_(w, 1e-3).total_zeros,
            lambda w: P.project_l1_ball_(w, 1e-3).total_zeros,
            lambda w: P.project_box_(w, -1e-3, 1e-3).total_zeros,
        ]
    return [
        lambda w: ref.prox_shrink_([w], 5e-4, 1.0)[0],
        lambda w: ref.prox_shrink_([w], 0.0, 0.25)[0],
        lambda w: ref.prox_shrink_([w], 1e-3, 0.25)[0],
        lambda w: ref.prox_hard_([w], math.sqrt(2e-8))[0],
        lambda w: ref.prox_group_([w], 0, 0.0, 1e-3, 1.0)[0],
        lambda w: ref.prox_l2_norm_([w], 0.0, 1e-3, 1.0)[0],
        lambda w: ref.prox_linf_([w], 1e-3)[0],
        lambda w: ref.project_l2_ball_([w], 1e-3)[0],
        lambda w: ref.project_l1_ball_([w], 1e-3)[0],
        lambda w: ref.project_box_([w], -1e-3, 1e-3)[0],
    ]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_prox_counts_stored_zeros(backend, dtype):
    g = torch.Generator().manual_seed(0)
    sub = _min_subnormal(dtype)
    base = torch.randn(64, generator=g, dtype=torch.float64) * 1e-3
    base[::4] = sub * torch.tensor([1.0, 2.0, 3.0, 0.5]).repeat(4).double()
    for op in _all_prox_ops(backend):
        w = base.to(dtype).reshape(8, 8)
        zeros = op(w)
        assert zeros == int((w == 0).sum()), op


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("opt", ["sgd", "adam"])
@pytest.mark.parametrize("backend", ["kernel", "forced"])
def test_optimizer_fused_prox_counts_stored_zeros(backend, dtype, opt):
    sub = _min_subnormal(dtype)
    w = torch.nn.Parameter(t([2 * sub, 1.0, 3 * sub, -2 * sub], dtype))
    w.grad = torch.zeros_like(w)
    # ridge prox: w / (1 + lr * l2) = w / 4 -> the tiny entries round to 0 on store
    o = (
        ProxSGD([w], lr=1.0, penalty=SquaredL2(3.0))
        if opt == "sgd"
        else ProxAdam([w], lr=1.0, penalty=SquaredL2(3.0))
    )
    o.step()
    assert o.last_stats.total_zeros == int((w.detach() == 0).sum())


# ---- the float32 L1-ball projection ----------------------------------------------------------


def _exact_l1_threshold(vals, r) -> Decimal:
    a = sorted((abs(Decimal(v)) for v in vals), reverse=True)
    r = Decimal(r)
    if sum(a) <= r:
        return Decimal(0)
    css = Decimal(0)
    theta = Decimal(0)
    for k, u in enumerate(a, 1):
        css += u
        if u * k > css - r:
            theta = (css - r) / k
    return theta


def _ulp(x: float, dtype) -> float:
    """Spacing of dtype at |x| (the gap to the next representable magnitude)."""
    v = torch.tensor(abs(x), dtype=torch.float64).to(dtype)
    if v == 0:
        return _min_subnormal(dtype)
    bits = {
        torch.float32: torch.int32,
        torch.float64: torch.int64,
        torch.float16: torch.int16,
        torch.bfloat16: torch.int16,
    }[dtype]
    up = (v.reshape(1).view(bits) + 1).view(dtype)
    return float(up.double() - v.double())


def _double_slack(vals) -> Decimal:
    """What the float64 threshold (computed in double from |w| sums) may be off by."""
    return Decimal(8 * len(vals) * 2.0**-53) * max(abs(Decimal(v)) for v in vals)


def _check_l1_projection(w_in, w_out, r, dtype, theta: Decimal):
    vals = w_in.double().tolist()
    slack = _double_slack(vals) + len(vals) * Decimal(_min_subnormal(torch.float64))  # float64 rounding
    total = sum(abs(Decimal(float(x))) for x in w_out.double().tolist())
    # inside the ball: strictly for the rounded-toward-zero dtypes, to float64 rounding in float64
    assert total <= Decimal(r) + (slack if dtype == torch.float64 else 0), (total, r)
    for x, y in zip(vals, w_out.double().tolist()):
        exact = max(abs(Decimal(x)) - theta, Decimal(0))
        exact = exact.copy_sign(Decimal(x)) if exact else Decimal(0)
        assert abs(Decimal(y) - exact) <= Decimal(_ulp(float(exact), dtype)) + slack, (x, y, exact)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_l1_ball_projection_inside_and_within_one_ulp(backend, dtype):
    vals = [-3.5, 2.7, -3.5, -1.2]
    w0 = t(vals, dtype)
    w = w0.clone()
    project_l1(backend, w, 1e-4)
    _check_l1_projection(w0, w, 1e-4, dtype, _exact_l1_threshold(w0.double().tolist(), 1e-4))
    if dtype == torch.float32:  # the case: L1 norm was 1.00136e-4
        assert float(w.double().abs().sum()) <= 1e-4
        w64 = w0.double()
        ref.project_l1_ball_([w64], 1e-4)  # the float64 projection, rounded to float32
        for y, e in zip(w.tolist(), w64.float().tolist()):
            assert abs(y - e) <= _ulp(e, dtype)


# ---- float64 L2 norms over the whole range ---------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_float64_l2_norm_cases(backend):
    d = torch.float64
    w = t([1e200, 1e200], d)
    assert value(backend, L2Norm(1.0), "l2_norm", w, 1.0) == pytest.approx(math.sqrt(2) * 1e200, rel=1e-15)
    project_l2(backend, w, 1.0)
    assert w.tolist() == pytest.approx([2**-0.5] * 2, rel=1e-15)
    g = grad(backend, L2Norm(3.0), "l2_norm", t([1e-200] * 2, d), 3.0)
    assert g.tolist() == pytest.approx([3 * 2**-0.5] * 2, rel=1e-15)
    w = t([1e-200], d)
    l2_prox(backend, w, 0.0, 1.0)
    assert w.tolist() == [1e-200]
    # the extremes: subnormal norms, norms near the largest double
    g = grad(backend, L2Norm(1.0), "l2_norm", t([5e-324, 0.0], d), 1.0)
    assert g.tolist() == [1.0, 0.0]
    big = t([1e308, -1e308], d)
    assert value(backend, L2Norm(1.0), "l2_norm", big, 1.0) == pytest.approx(math.sqrt(2) * 1e308, rel=1e-15)
    assert value(backend, SquaredL2(1e-300), "squared_l2", t([1e200], d), 0.0, 1e-300) == pytest.approx(
        0.5e100, rel=1e-15
    )
    w = t([1e300, 1e300], d)
    project_l2(backend, w, 1e-300)  # r / ||w|| = 7e-601 is not a double; the result is
    assert w.tolist() == pytest.approx([2**-0.5 * 1e-300] * 2, rel=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_low_precision_l2_norm_extremes(backend, dtype):
    sub = _min_subnormal(dtype)
    g = grad(backend, L2Norm(1.0), "l2_norm", t([sub, sub], dtype), 1.0)
    assert g.double().tolist() == pytest.approx([2**-0.5] * 2, rel=torch.finfo(dtype).eps)
    huge = torch.finfo(dtype).max
    w = t([huge, huge], dtype)
    project_l2(backend, w, 1.0)
    assert w.double().tolist() == pytest.approx([2**-0.5] * 2, rel=torch.finfo(dtype).eps)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_l2_norm_with_inf(backend, dtype):
    w = t([INF, 1.0, -INF], dtype)
    g = grad(backend, L2Norm(2.0), "l2_norm", w, 2.0)  # the limit of 2 w / ||w||
    assert g.double().tolist() == pytest.approx(
        [math.sqrt(2), 0.0, -math.sqrt(2)], rel=torch.finfo(dtype).eps
    )
    assert value(backend, L2Norm(1.0), "l2_norm", w, 1.0) == INF
    project_l2(backend, w, 1.0)
    assert w.double().tolist() == pytest.approx([2**-0.5, 0.0, -(2**-0.5)], rel=torch.finfo(dtype).eps)


@pytest.mark.parametrize("backend", BACKENDS)
def test_group_lasso_float64_range(backend):
    w = t([[1e200, 1e-200], [1e200, 1e-200]], torch.float64)  # groups are the columns (dim=1)
    expected = math.sqrt(2) * 1e200 + math.sqrt(2) * 1e-200
    if backend != "reference":
        v = float(GroupLasso(1.0, dim=1).value(w))
    else:
        v = float(ref.group_value([w], 1, 1.0))
    assert v == pytest.approx(expected, rel=1e-15)
    g = GroupLasso(1.0, dim=1).grad(w)[0] if backend != "reference" else ref.group_grad([w], 1, 1.0)[0]
    assert g.reshape(-1).tolist() == pytest.approx([2**-0.5] * 4, rel=1e-15)


# ---- hard threshold decided in double --------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_hard_threshold_decides_in_double(backend, dtype):
    step, lam = 1.0, 0.3
    thr = math.sqrt(2.0 * step * lam)
    near = t([thr], torch.float64).to(dtype)
    bits = {
        torch.float32: torch.int32,
        torch.float64: torch.int64,
        torch.float16: torch.int16,
        torch.bfloat16: torch.int16,
    }[dtype]
    cand = torch.cat([(near.view(bits) + k).view(dtype) for k in (-2, -1, 0, 1, 2)])
    w = cand.clone()
    hard(backend, w, step, lam)
    for x, y in zip(cand.double().tolist(), w.double().tolist()):
        assert y == (x if abs(x) > thr else 0.0), (x, y)
    if dtype == torch.float32:  # the case: float32(sqrt(0.6)) > sqrt(0.6) is kept
        w = t([math.sqrt(0.6)], dtype)
        hard(backend, w, 1.0, 0.3)
        assert w.item() != 0.0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", ["kernel", "forced"])
def test_optimizer_fused_hard_threshold_decides_in_double(backend, dtype):
    from normreg import L0

    thr = math.sqrt(2.0 * 0.3)
    x = t([math.sqrt(0.6)], dtype)
    w = torch.nn.Parameter(x.clone())
    w.grad = torch.zeros_like(w)
    ProxSGD([w], lr=1.0, penalty=L0(0.3)).step()
    assert w.detach().item() == (x.item() if abs(x.item()) > thr else 0.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_group_lasso_grad_of_subnormal_groups(backend):
    # groups: the rows; norms subnormal (rounded to the subnormal grid: 5e-14 relative at
    # 1e-310), the last one exact (5 * 2^-1070)
    w = t([[5e-324, 1e-310], [0.0, 1e-310], [math.ldexp(3, -1070), math.ldexp(-4, -1070)]], torch.float64)
    want = []
    for row in w.tolist():
        n = math.hypot(*row)
        want.append([2.0 * (v / n) for v in row])  # 2 w / ||w||: 2 / ||w|| is past the double range
    g = _api(backend, lambda: GroupLasso(2.0, dim=0).grad(w)[0], lambda: ref.group_grad([w], 0, 2.0)[0])
    assert g.tolist() == [pytest.approx(row, rel=1e-12) for row in want]


# ---- soft threshold decided in double ---------------------------------------------------------


def _around(x: float, dtype, k: int = 2) -> Tensor:
    """The dtype's values from k steps below fl(x) to k steps above."""
    near = t([x], torch.float64).to(dtype)
    bits = {
        torch.float32: torch.int32,
        torch.float64: torch.int64,
        torch.float16: torch.int16,
        torch.bfloat16: torch.int16,
    }[dtype]
    return torch.cat([(near.view(bits) + j).view(dtype) for j in range(-k, k + 1)])


def _check_soft(cand: Tensor, out: Tensor, thr: float, c: float = 1.0) -> None:
    """0 exactly where |x| <= thr (in double); elsewhere nonzero, of x's sign, and within
    |fl32(thr) - thr| + 2 ulps (+ the smallest subnormal) of c (|x| - thr): the subtraction
    may use the threshold rounded to float32 (as torch's softshrink does)."""
    eps = torch.finfo(out.dtype).eps
    slack = abs(float(torch.tensor(thr, dtype=torch.float32)) - thr)
    for x, y in zip(cand.double().tolist(), out.double().tolist()):
        if abs(x) <= thr:
            assert y == 0.0, (x, y)
        else:
            exact = math.copysign(c * (abs(x) - thr), x)
            assert y != 0.0 and math.copysign(1.0, y) == math.copysign(1.0, x), (x, y)
            tol = c * slack + 2 * eps * abs(exact) + _min_subnormal(out.dtype)  # (a subnormal result)
            assert abs(y - exact) <= tol, (x, y, exact)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("thr", [0.1, 1e-3, 0.7])  # not representable in any of the dtypes
def test_soft_threshold_decides_in_double(backend, dtype, thr):
    cand = torch.cat([_around(thr, dtype), -_around(thr, dtype)])
    w = cand.clone()
    _api(backend, lambda: P.soft_threshold_(w, 1.0, thr), lambda: ref.prox_shrink_([w], thr, 1.0))
    _check_soft(cand, w, thr)
    w = cand.clone()  # elastic net: step * l1 = thr, step * l2 = 0.5
    c = 1.0 / 1.5
    _api(backend, lambda: ElasticNet(thr, 0.5).prox_(w, 1.0), lambda: ref.prox_shrink_([w], thr, c))
    _check_soft(cand, w, thr, c)
    if dtype == torch.float32 and thr == 0.1:  # fl32(0.1) > 0.1: kept, as |w| > t
        w = t([0.1], dtype)
        _api(backend, lambda: P.soft_threshold_(w, 1.0, 0.1), lambda: ref.prox_shrink_([w], 0.1, 1.0))
        assert w.item() > 0.0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", ["kernel", "forced"])
@pytest.mark.parametrize("opt", [ProxSGD, ProxAdam])
def test_optimizer_fused_soft_threshold_decides_in_double(backend, dtype, opt):
    thr = 0.1
    cand = torch.cat([_around(thr, dtype), -_around(thr, dtype)])
    w = torch.nn.Parameter(cand.clone())
    w.grad = torch.zeros_like(w)  # the plain step leaves w as it is (Adam: 0 / eps)
    opt([w], lr=1.0, penalty=L1(thr)).step()  # lr * l1 = 0.1 exactly in double
    _check_soft(cand, w.detach(), thr)


# ---- GroupLasso gradient with infinities: the limit --------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_group_lasso_grad_with_inf(backend, dtype):
    w = t([[INF, 1.0, INF], [2.0, -INF, -INF], [1.0, 1.0, 3.0]], dtype)
    r = 1.5 * 2**-0.5
    cases = {  # dim: the limit 1.5 sign(w) / sqrt(k) on a group's k infinities, 0 elsewhere
        1: [[1.5, 0.0, r], [0.0, -1.5, -r], [0.0, 0.0, 0.0]],
        0: [[r, 0.0, r], [0.0, -r, -r], [1.5 / math.sqrt(11), 1.5 / math.sqrt(11), 4.5 / math.sqrt(11)]],
    }
    for dim, want in cases.items():
        pen = GroupLasso(1.5, dim=dim)
        g = _api(backend, lambda pen=pen: pen.grad(w)[0], lambda dim=dim: ref.group_grad([w], dim, 1.5)[0])
        assert g.double().tolist() == [pytest.approx(row, rel=2 * torch.finfo(dtype).eps) for row in want]
        if backend != "reference":  # add_grad_ keeps the gradient already there
            p = w.clone().requires_grad_()
            p.grad = torch.full_like(p, 0.25)
            with _mode(backend):
                pen.add_grad_([p])
            acc = [[0.25 + v for v in row] for row in want]
            assert p.grad.double().tolist() == [
                pytest.approx(row, rel=2 * torch.finfo(dtype).eps) for row in acc
            ]


# ---- property tests over the whole exponent range, against exact decimal arithmetic ----------

_EXP = {
    torch.float64: (-1074, 1015),
    torch.float32: (-149, 100),
    torch.bfloat16: (-133, 100),
    torch.float16: (-24, 13),
}


@st.composite
def vectors(draw):
    dtype = draw(st.sampled_from(DTYPES))
    lo, hi = _EXP[dtype]
    n = draw(st.integers(1, 6))
    e0 = draw(st.integers(lo, hi))  # a common scale, then a spread around it
    vals = []
    for _ in range(n):
        if draw(st.integers(0, 7)) == 0:
            vals.append(0.0)
            continue
        e = min(max(e0 + draw(st.integers(-40, 40)), lo), hi)
        m = draw(st.floats(1.0, 2.0, exclude_max=True))
        vals.append(draw(st.sampled_from([-1.0, 1.0])) * math.ldexp(m, e))
    w = torch.tensor(vals, dtype=torch.float64).to(dtype)
    return w, dtype, draw(st.sampled_from(BACKENDS))


def _dnorm(vals) -> Decimal:
    return sum(Decimal(v) ** 2 for v in vals).sqrt()


def _close(x: float, exact: Decimal, rel: float, atol: float = 0.0) -> bool:
    return abs(Decimal(x) - exact) <= Decimal(rel) * abs(exact) + Decimal(atol)


_REL = {torch.float64: 1e-12, torch.float32: 1e-6, torch.bfloat16: 2**-7, torch.float16: 2**-10}


@settings(derandomize=True, max_examples=80, deadline=None)
@given(vectors(), st.floats(1e-3, 1e3))
def test_property_norms_and_l2_ops(case, lam):
    w, dtype, backend = case
    vals = w.double().tolist()
    norm = _dnorm(vals)
    # value: float64 (or float32) result within 1e-6 relative of the exact norm
    v = value(backend, L2Norm(lam), "l2_norm", w, lam)
    # (a float32 value is rounded to float32: within half its subnormal spacing near 0)
    f64 = dtype == torch.float64
    exact_v = norm * Decimal(lam)
    vmax = Decimal(torch.finfo(torch.float64 if f64 else torch.float32).max)
    if exact_v > vmax * (1 + Decimal(2) ** -52):  # the real value is past the value dtype's range
        assert v == math.inf, (v, exact_v)
    elif exact_v <= vmax:
        assert _close(v, exact_v, 1e-12 if f64 else 1e-6, 0.0 if f64 else 2.0**-149), (v, norm)
    tiny = _min_subnormal(dtype)
    # gradient lam * w / ||w||: each entry within the dtype's rounding
    g = grad(backend, L2Norm(lam), "l2_norm", w, lam).double().tolist()
    for x, gi in zip(vals, g):
        exact = Decimal(lam) * Decimal(x) / norm if norm else Decimal(0)
        assert _close(gi, exact, _REL[dtype], tiny), (x, gi, exact)
    # projection onto the L2 ball of radius r: inside (to rounding), and w * min(1, r / ||w||)
    r = float(norm) * 0.37 if norm else 1.0
    y = w.clone()
    project_l2(backend, y, r)
    out = y.double().tolist()
    assert _dnorm(out) <= Decimal(r) * (1 + Decimal(4 * _REL[dtype])) + Decimal(tiny) * 4
    for x, yi in zip(vals, out):
        exact = Decimal(x) * min(Decimal(1), Decimal(r) / norm) if norm else Decimal(x)
        assert _close(yi, exact, _REL[dtype], tiny), (x, yi, exact)
    # L2-norm prox with step s: w * max(0, 1 - s / ||w||)
    s = float(norm) * 0.5
    y = w.clone()
    l2_prox(backend, y, s, 1.0)
    for x, yi in zip(vals, y.double().tolist()):
        exact = Decimal(x) * max(Decimal(0), 1 - Decimal(s) / norm) if norm else Decimal(0)
        assert _close(yi, exact, _REL[dtype], tiny), (x, yi, exact)


@settings(derandomize=True, max_examples=80, deadline=None)
@given(vectors(), st.floats(0.05, 0.95))
def test_property_l1_ball_and_linf_prox(case, frac):
    w, dtype, backend = case
    vals = w.double().tolist()
    l1 = sum(abs(Decimal(v)) for v in vals)
    r = float(l1 * Decimal(frac)) if l1 else 1.0
    if r == 0.0 or math.isinf(r):
        return
    theta = _exact_l1_threshold(vals, r)
    y = w.clone()
    zeros = project_l1(backend, y, r)
    _check_l1_projection(w, y, r, dtype, theta)
    assert zeros == int((y == 0).sum())
    # Linf prox with strength r: clamp(w, -theta, theta), theta the same exact threshold
    y = w.clone()
    linf_prox(backend, y, r)
    for x, yi in zip(vals, y.double().tolist()):
        exact = max(-theta, min(theta, Decimal(x)))
        assert abs(Decimal(yi) - exact) <= Decimal(_ulp(float(exact), dtype)) + _double_slack(vals), (
            x,
            yi,
            exact,
        )


@settings(derandomize=True, max_examples=60, deadline=None)
@given(vectors(), st.floats(1e-3, 1e3))
def test_property_hard_threshold(case, scale):
    w, dtype, backend = case
    vals = w.double().tolist()
    nz = [abs(v) for v in vals if v]
    if not nz:
        return
    # a threshold right at one of the values: sqrt(2 step l) = |w_k| (+- a little)
    thr = nz[0] * (1 + (scale - 500) * 1e-18)
    step = 1.0
    lam = thr * thr / 2.0
    if lam == 0.0 or math.isinf(lam):
        return
    dthr = math.sqrt(2.0 * step * lam)
    y = w.clone()
    hard(backend, y, step, lam)
    for x, yi in zip(vals, y.double().tolist()):
        assert yi == (x if abs(x) > dthr else 0.0)


# ---- sharded L2 norms over the float64 range (2 gloo processes, the shared spawn) -----------

# Logical float64 tensors, split along dim 0 between the 2 ranks (rank 0: the first CUT rows).
# big: norms past 1e300 (plain sums of squares overflow); tiny: below 1e-300 (they underflow);
# mixed: huge values on rank 0, ordinary ones on rank 1; sub: subnormal, strength / norm
# overflows; zero_half: rank 1's shard all zero.
_CUT = 2
_EDGE_SETS = {
    "big": [[3e200, -4e200, 1e200], [2e200, -5e199, 7e200], [1e200, 1e200, 1e200], [-2e200, 6e200, 3e200]],
    "tiny": [
        [3e-200, -4e-200, 1e-200],
        [2e-200, -5e-199, 7e-200],
        [1e-200, 1e-200, 1e-200],
        [-2e-200, 6e-200, 3e-200],
    ],
    "mixed": [[3e200, -4e200, 1e200], [2e200, -5e199, 7e200], [1.0, 2.0, 3.0], [-2.0, 6.0, 3.0]],
    "sub": [[5e-324, 1e-320, 0.0], [2e-322, 0.0, 1e-310], [0.0, 3e-315, 4e-318], [1e-323, 0.0, 0.0]],
    "zero_half": [[1e-200, 2e-200, 3e-200], [4e-200, 5e-200, 6e-200], [0.0] * 3, [0.0] * 3],
}


# Tensors holding Inf for the sharded prox: "inf" on both ranks; "inf_big": the Inf on rank 0
# and values ~1e200 (a scaled sum of squares) on rank 1, in the same groups.
_INF_PROX_SETS = {
    ("inf", torch.float64): [[INF, 1.0, 2.0], [3.0, 4.0, -INF], [1.0, -INF, 5.0], [2.0, 2.0, 2.0]],
    ("inf", torch.float32): [[INF, 1.0, 2.0], [3.0, 4.0, -INF], [1.0, -INF, 5.0], [2.0, 2.0, 2.0]],
    ("inf_big", torch.float64): [[INF, 1.0, 2.0], [3.0, 4.0, 5.0], [1e200, 2e200, 3.0], [1.0, -1.0, 1.0]],
}
_INF_PROX_PENS = {
    "l2": lambda: L2Norm(0.5),
    "g1": lambda: GroupLasso(0.5, dim=1),
    "g0": lambda: GroupLasso(0.5, dim=0),
    "linf": lambda: Linf(0.5),
    "sgl": lambda: GroupLasso(0.5, dim=1) + L1(0.25),
}


def _edge_shard(rows, rank):
    full = torch.tensor(rows, dtype=torch.float64)
    return (full[:_CUT] if rank == 0 else full[_CUT:]).clone()


@register
def _edge_work(rank, world, pg):
    out = {}
    for name, rows in _EDGE_SETS.items():
        for pen_name, pen in (
            ("l2", L2Norm(0.5)),
            ("g1", GroupLasso(0.5, dim=1)),
            ("g0", GroupLasso(0.5, dim=0)),
        ):
            w = _edge_shard(rows, rank)
            out[name, pen_name, "value"] = float(pen.value([w], process_group=pg))
            w.requires_grad_()
            pen.add_grad_([w], process_group=pg)
            out[name, pen_name, "grad"] = w.grad.clone()
            v = _edge_shard(rows, rank)
            pen.prox_([v], 0.0, process_group=pg)  # step 0: the identity
            out[name, pen_name, "prox0"] = v
            step = 0.25 * _hypot_ref(torch.tensor(rows, dtype=torch.float64))  # shrinks every norm by a part
            v = _edge_shard(rows, rank)
            pen.prox_([v], step, process_group=pg)
            out[name, pen_name, "prox"] = (v, step)
    inf = torch.tensor([[math.inf, 1.0, 2.0], [3.0, 4.0, -math.inf], [1.0, -math.inf, 5.0], [2.0, 2.0, 2.0]])
    for dtype in (torch.float64, torch.float32):
        for pen_name, pen in (
            ("l2", L2Norm(0.5)),
            ("g1", GroupLasso(0.5, dim=1)),
            ("g0", GroupLasso(0.5, dim=0)),
        ):
            w = (inf[:_CUT] if rank == 0 else inf[_CUT:]).to(dtype).requires_grad_()
            w.grad = torch.full_like(w, 0.25)
            pen.add_grad_([w], process_group=pg)
            out["inf", dtype, pen_name] = w.grad.clone()
    for (set_name, dtype), rows in _INF_PROX_SETS.items():  # the prox of tensors / groups holding an Inf
        for pen_name, make in _INF_PROX_PENS.items():
            v = _edge_shard(rows, rank).to(dtype)
            st = make().prox_([v], 1.0, process_group=pg)
            out["inf_prox", set_name, dtype, pen_name] = (v, st.zeros, st.total_zeros)
    big = torch.full((2,), 3e38, dtype=torch.float32)  # a float32 value past the range: inf
    out["f32_value"] = (
        float(L1(1.0).value([big], process_group=pg)),
        float(L2Norm(3.0).value([big], process_group=pg)),
    )
    return out


def _hypot_ref(x):
    """The exact-to-rounding L2 norm (math.hypot scales: no overflow or underflow)."""
    return math.hypot(*x.reshape(-1).tolist())


def _groups(full, pen_name):
    """The groups of the logical tensor (one tensor for L2Norm), as (index, values) pairs."""
    if pen_name == "l2":
        return [(slice(None), full)]
    if pen_name == "g1":
        return [((slice(None), j), full[:, j]) for j in range(full.shape[1])]
    return [((i,), full[i]) for i in range(full.shape[0])]


@pytest.fixture(scope="module")
def edge_results():
    return shared_results(_edge_work)


@pytest.mark.parametrize("name", list(_EDGE_SETS))
@pytest.mark.parametrize("pen_name", ["l2", "g1", "g0"])
def test_sharded_norms_over_the_float64_range(edge_results, name, pen_name):
    full = torch.tensor(_EDGE_SETS[name], dtype=torch.float64)
    r0, r1 = (r[name, pen_name, "value"] for r in edge_results)
    expected = 0.5 * sum(_hypot_ref(g) for _, g in _groups(full, pen_name))
    assert r0 == r1 == pytest.approx(expected, rel=1e-14)
    grad = torch.cat([r[name, pen_name, "grad"] for r in edge_results])
    want = torch.zeros_like(full)
    for idx, g in _groups(full, pen_name):
        n = _hypot_ref(g)
        if n > 0:  # 0.5 * w / ||w||, via the exact ratios (w / n is a double for these values)
            want[idx] = torch.tensor(
                [0.5 * (v / n) for v in g.reshape(-1).tolist()], dtype=torch.float64
            ).view(g.shape)
    torch.testing.assert_close(grad, want, rtol=1e-12, atol=0.0)
    assert torch.equal(torch.cat([r[name, pen_name, "prox0"] for r in edge_results]), full)
    got = torch.cat([r[name, pen_name, "prox"][0] for r in edge_results])
    step = edge_results[0][name, pen_name, "prox"][1]
    want = full.clone()
    for idx, g in _groups(full, pen_name):
        n = _hypot_ref(g)
        c = max(1.0 - 0.5 * step / n, 0.0) if n > 0 else 0.0
        want[idx] = g * c
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-323 if name == "sub" else 0.0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("pen_name", ["l2", "g1", "g0"])
def test_sharded_grad_with_inf_is_the_limit(edge_results, dtype, pen_name):
    """0.5 sign(w) / sqrt(k) on the k infinities of a tensor / group whose norm is inf, added
    to the .grad there (0.25); finite groups as usual. Against the unsharded reference."""
    full = torch.tensor(
        [[INF, 1.0, 2.0], [3.0, 4.0, -INF], [1.0, -INF, 5.0], [2.0, 2.0, 2.0]], dtype=torch.float64
    )
    if pen_name == "l2":
        want = ref.penalty_grad("l2_norm", [full], 0.5)[0]
    else:
        want = ref.group_grad([full], 1 if pen_name == "g1" else 0, 0.5)[0]
    got = torch.cat([r["inf", dtype, pen_name] for r in edge_results]).double()
    torch.testing.assert_close(got, want + 0.25, rtol=2 * torch.finfo(dtype).eps, atol=0.0)


# ---- the remaining thresholds decided in double (preconditioned, weighted, norm prox) ---------


def _exact_margin_ok(x: float, dtype, margin) -> bool:
    """Whether a float64 candidate is far enough from the threshold that a decision made in
    double (rounded products and quotients) must agree with the exact one: float32, bfloat16
    and float16 candidates always are (their products are exact in double)."""
    return dtype != torch.float64 or abs(margin) > 1e-14


def _zero_grad_adam_step(backend, cls, w, eps, penalty, kind, a, b):
    """One preconditioned ProxAdam / ProxAdamW step with a zero gradient (lr 1, no weight
    decay), on the kernels or on the reference (``_reference.adam_step_``); the zeros reported."""
    from normreg.optim import ProxAdamW

    if backend == "reference":
        z = torch.zeros_like(w)
        return ref.adam_step_(
            [w],
            [z],
            [z.clone()],
            [z.clone()],
            [],
            [1.0],
            lr=1.0,
            beta1=0.9,
            beta2=0.999,
            eps=eps,
            decoupled=cls == "adamw",
            prox_kind=kind,
            prox_a=a,
            prox_b=b,
            preconditioned=True,
        )[0]
    p = torch.nn.Parameter(w.clone())
    p.grad = torch.zeros_like(p)
    Opt = ProxAdam if cls == "adam" else ProxAdamW
    opt = Opt([p], lr=1.0, eps=eps, weight_decay=0.0, penalty=penalty, precondition_prox=True)
    opt.step()
    with torch.no_grad():
        w.copy_(p)
    return opt.last_stats.total_zeros


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", ["kernel", "reference"])
@pytest.mark.parametrize("cls", ["adam", "adamw"])
@pytest.mark.parametrize("l2", [0.0, 0.5])
def test_preconditioned_soft_threshold_decides_in_double(backend, dtype, cls, l2):
    from fractions import Fraction

    # a zero gradient leaves m = v = 0, so den = sqrt(v_hat) + eps = eps = 3 and the plain step
    # leaves w as it is; the prox is then soft(w, a / den) * den / (den + b), a = lr * l1 = 0.3,
    # b = lr * l2: a threshold of 0.1 (float32 decided |fl32(0.1)| - fl32(fl32(0.3) / 3) = 0).
    a, den = 0.3, 3.0
    thr = a / den
    cand = torch.cat([_around(thr, dtype), -_around(thr, dtype), t([0.0, 1.0, -2.0], dtype)])
    out = cand.clone()
    pen = L1(a) if l2 == 0.0 else ElasticNet(a, l2)
    zeros = _zero_grad_adam_step(backend, cls, out, den, pen, 1, a, l2)
    eps = torch.finfo(dtype).eps
    for x, y in zip(cand.double().tolist(), out.double().tolist()):
        margin = Fraction(abs(x)) * Fraction(den) - Fraction(a)  # sign of |x| - a / den, exact
        if not _exact_margin_ok(x, dtype, margin / Fraction(a)):
            continue
        if margin <= 0:
            assert y == 0.0, (x, y)
        else:
            exact = float(margin / (Fraction(den) + Fraction(l2)))  # (|x| den - a) / (den + b)
            assert y != 0.0 and math.copysign(1.0, y) == math.copysign(1.0, x), (x, y)
            assert abs(abs(y) - exact) <= 2 * eps * exact + _min_subnormal(dtype), (x, y, exact)
    assert zeros == int((out == 0).sum())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", ["kernel", "reference"])
@pytest.mark.parametrize("cls", ["adam", "adamw"])
def test_preconditioned_hard_threshold_decides_in_double(backend, dtype, cls):
    from fractions import Fraction

    from normreg import L0

    # den = eps = 3 (zero gradient), a = lr * l0 = 0.3: zero exactly where w^2 den <= 2a, i.e.
    # |w| <= sqrt(0.2); float32 decided fl32(0.44721362)^2 * 3 <= fl32(0.6) (which is wrong).
    a, den = 0.3, 3.0
    thr = math.sqrt(2 * a / den)
    cand = torch.cat([_around(thr, dtype), -_around(thr, dtype), t([0.0, 1.0], dtype)])
    w = cand.clone()
    zeros = _zero_grad_adam_step(backend, cls, w, den, L0(a), 2, a, 0.0)
    for x, y in zip(cand.double().tolist(), w.double().tolist()):
        margin = Fraction(x) ** 2 * Fraction(den) - 2 * Fraction(a)
        if _exact_margin_ok(x, dtype, margin):
            assert y == (x if margin > 0 else 0.0), (x, y)
    assert zeros == int((w == 0).sum())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nonneg", [False, True])
def test_weighted_soft_threshold_decides_in_double(backend, dtype, nonneg):
    # threshold t * u = 0.1 * 3 (in double: 0.30000000000000004); float32 computed
    # fl32(0.1) * 3 = fl32(0.3) > 0.3 and zeroed w = fl32(0.3)
    t1, u1 = 0.1, 3.0
    thr = t1 * u1
    cand = torch.cat([_around(0.3, dtype), -_around(0.3, dtype), t([0.0, 1.0, -1.0], dtype)])
    u = torch.full_like(cand, u1)
    for c in (1.0, 1.0 / 1.5):  # soft threshold; elastic net with step * l2 = 0.5
        w = cand.clone()
        if backend == "reference":
            zeros = ref.prox_shrink_([w], t1, c, weights=[u], nonneg=nonneg)[0]
        elif c == 1.0:
            zeros = _api(
                backend, lambda w=w: P.soft_threshold_(w, 1.0, t1, weights=u, nonneg=nonneg).total_zeros, None
            )
        else:
            zeros = _api(
                backend,
                lambda w=w: P.elastic_net_(w, 1.0, t1, 0.5, weights=u, nonneg=nonneg).total_zeros,
                None,
            )
        assert zeros == int((w == 0).sum())
        if nonneg:  # max(w - t u, 0): the negative entries go to 0, the others as the soft threshold
            assert (w[cand <= 0] == 0).all()
            keep = cand > 0
            _check_soft(cand[keep], w[keep], thr, c)
        else:
            _check_soft(cand, w, thr, c)


def _soft64(x: Tensor, thr: float) -> Tensor:
    return torch.sign(x) * torch.clamp_min(x.abs() - thr, 0.0)


def _norm_prox64(x: Tensor, thr: float, s: float, d: float) -> Tensor:
    """The float64 prox d * max(1 - s / ||soft(x, thr)||, 0) * soft(x, thr) of one group."""
    y = _soft64(x.double(), thr)
    n = math.hypot(*y.reshape(-1).tolist())
    return y * ((max(1.0 - s / n, 0.0) if n > 0 else 0.0) * d)


def _same_rounded(got: Tensor, want: Tensor) -> None:
    """float32 / bfloat16 / float16: bitwise the float64 answer rounded once (the norms may
    differ in the last float64 bit, far below these dtypes' rounding); float64: to rounding."""
    if got.dtype == torch.float64:
        torch.testing.assert_close(got, want, rtol=8 * 2.0**-53, atol=0.0)
    else:
        assert torch.equal(got, want), (got.double() - want.double()).abs().max()


def _boundary_and_random(dtype, thr: float, n: int = 40) -> Tensor:
    g = torch.Generator().manual_seed(3)
    rand = torch.randn(n, generator=g, dtype=torch.float64)
    return torch.cat([_around(thr, dtype), -_around(thr, dtype), rand.to(dtype)])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("l2", [0.0, 0.5])
def test_l2_norm_prox_decides_and_scales_in_double(backend, dtype, l2):
    # sparse L2-norm prox (L2Norm + ElasticNet): soft threshold at 0.1 decided in double, the
    # norm of the float64 soft-thresholded values, the scale d (1 - s / ||.||) applied in
    # float64: the result is the float64 prox rounded once on store (bitwise).
    thr, step = 0.1, 1.0
    w0 = _boundary_and_random(dtype, thr)
    s = 0.3 * math.hypot(*_soft64(w0.double(), thr).tolist())
    d = 1.0 / (1.0 + step * l2)
    want = _norm_prox64(w0, thr, s, d).to(dtype)
    w = w0.clone()
    pen = L2Norm(s) + ElasticNet(thr, l2)
    zeros = _api(
        backend, lambda: pen.prox_(w, step).total_zeros, lambda: ref.prox_l2_norm_([w], thr, s, d)[0]
    )
    _same_rounded(w, want)
    assert zeros == int((want == 0).sum())
    # the boundary case alone: w = fl32(0.1) > 0.1 has the tiny norm fl32(0.1) - 0.1
    if dtype == torch.float32:
        w = t([0.1], dtype)
        pen = L2Norm(1e-10) + L1(0.1)
        _api(backend, lambda: pen.prox_(w, 1.0), lambda: ref.prox_l2_norm_([w], 0.1, 1e-10, 1.0))
        exact = (float(t([0.1], dtype)) - 0.1) * (1 - 1e-10 / (float(t([0.1], dtype)) - 0.1))
        assert w.item() == pytest.approx(exact, rel=1e-6)
    # no soft part (L2Norm alone): the scale is applied in float64 too
    w = w0.clone()
    s = 0.3 * math.hypot(*w0.double().tolist())
    want = _norm_prox64(w0, 0.0, s, 1.0).to(dtype)
    _api(backend, lambda: L2Norm(s).prox_(w, 1.0), lambda: ref.prox_l2_norm_([w], 0.0, s, 1.0))
    _same_rounded(w, want)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [0, 1])
def test_group_prox_decides_and_scales_in_double(backend, dtype, dim):
    thr, l2 = 0.1, 0.5
    w0 = _boundary_and_random(dtype, thr, n=50).reshape(6, 10)
    d = 1.0 / (1.0 + l2)
    groups = [w0.select(dim, k) for k in range(w0.shape[dim])]
    s = 0.3 * min(
        math.hypot(*_soft64(g.double(), thr).tolist()) for g in groups if _soft64(g.double(), thr).any()
    )
    want = torch.stack([_norm_prox64(g, thr, s, d) for g in groups], dim=dim).to(dtype)
    w = w0.clone()
    pen = GroupLasso(s, dim=dim) + ElasticNet(thr, l2)
    zeros = _api(
        backend, lambda: pen.prox_(w, 1.0).total_zeros, lambda: ref.prox_group_([w], dim, thr, s, d)[0]
    )
    _same_rounded(w, want)
    assert zeros == int((want == 0).sum())
    w = w0.clone()  # GroupLasso alone (group_soft_threshold_)
    s = 0.3 * min(math.hypot(*g.double().tolist()) for g in groups)
    want = torch.stack([_norm_prox64(g, 0.0, s, 1.0) for g in groups], dim=dim).to(dtype)
    _api(
        backend,
        lambda: P.group_soft_threshold_(w, 1.0, s, dim=dim),
        lambda: ref.prox_group_([w], dim, 0.0, s, 1.0),
    )
    _same_rounded(w, want)


# ---- values past float32's range --------------------------------------------------------------


@pytest.mark.parametrize("backend", ["kernel", "forced", "dispatcher"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_value_past_float32_range_is_inf(backend, dtype):
    # float32 / bfloat16 / float16 params: the value is float32, the float64 accumulator
    # rounded as torch rounds it: past the range inf (as torch.sum in float32 gives), on the
    # direct path, the operator and the reference alike, with and without autograd.
    fmax = torch.finfo(torch.float32).max
    big = 6e4 if dtype == torch.float16 else 3e38
    k = 1e34 if dtype == torch.float16 else 1.0  # float16 values need a strength to get past 3.4e38
    w = t([big, -big], dtype)
    x = w.double().tolist()
    l1, sq, nrm = sum(map(abs, x)), sum(v * v for v in x), math.hypot(*x)
    cases = [
        (L1(k), k * l1),
        (SquaredL2(k * k), 0.5 * k * k * sq),
        (ElasticNet(k, k * k), k * l1 + 0.5 * k * k * sq),
        (L2Norm(k), k * nrm),
        (GroupLasso(k, dim=0), k * l1),
        (Linf(4 * k), 4 * k * big),
        (L1(k) + L2Norm(k), k * (l1 + nrm)),
    ]
    ctx = _ops.dispatcher_only() if backend == "dispatcher" else _mode(backend)
    with ctx:
        for pen, want in cases:
            assert want > fmax
            v = pen.value(w)
            assert v.dtype == torch.float32 and float(v) == math.inf, pen
            p = w.clone().requires_grad_()
            vg = pen.value(p)
            assert vg.dtype == torch.float32 and float(vg.detach()) == math.inf, pen
            vg.backward()
            assert p.grad is not None and p.grad.shape == p.shape
        if dtype == torch.float32:  # FLT_MAX + 1e30 is below FLT_MAX + half an ulp: rounds to FLT_MAX
            v = L1(1.0).value(t([fmax, 1e30], dtype))
            assert float(v) == fmax
    assert float(L1(1.0).value(t([3e38, 3e38], torch.float64))) == 6e38  # float64 params: float64


@pytest.mark.parametrize("case", [f"{n}-{str(d)[6:]}" for n, d in _INF_PROX_SETS])
@pytest.mark.parametrize("pen_name", list(_INF_PROX_PENS))
def test_sharded_prox_with_inf_is_the_unsharded(edge_results, case, pen_name):
    """The sharded prox (2 ranks, split along dim 0) of a tensor holding Inf: the unsharded
    prox of the whole tensor (Inf entries kept: a tensor / group whose norm is inf is not
    shrunk; Linf: w - P(w) leaves w), with the same zero counts."""
    set_name, dname = case.split("-")
    dtype = getattr(torch, dname)
    full = torch.tensor(_INF_PROX_SETS[set_name, dtype], dtype=torch.float64).to(dtype)
    want = full.clone()
    st = _INF_PROX_PENS[pen_name]().prox_(want, 1.0)
    got = torch.cat([r["inf_prox", set_name, dtype, pen_name][0] for r in edge_results])
    tol = 1e-12 if dtype == torch.float64 else 2 * torch.finfo(dtype).eps
    torch.testing.assert_close(got, want, rtol=tol, atol=0.0)
    assert torch.equal(torch.isinf(got), torch.isinf(full))
    for r in edge_results:
        assert r["inf_prox", set_name, dtype, pen_name][2] == st.total_zeros == int((want == 0).sum())


def test_sharded_float32_value_past_the_range_is_inf(edge_results):
    """1.2e39 (L1) and 1.8e39 (3 * L2 norm) over the two ranks' float32 shards: inf, as unsharded."""
    assert float(L1(1.0).value(torch.full((4,), 3e38))) == math.inf
    for r in edge_results:
        assert r["f32_value"] == (math.inf, math.inf)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("kind", ["l1", "mse"])
def test_loss_value_past_the_dtypes_range_is_inf_as_torch(kind, reduction):
    # float16 sums past 65504 (and a float32 sum past 3.4e38) round to inf as torch's do;
    # the kernels' float64 total must not make scalar_tensor raise
    from normreg import losses

    ours = {"l1": losses.l1_loss, "mse": losses.mse_loss}[kind]
    theirs = {"l1": torch.nn.functional.l1_loss, "mse": torch.nn.functional.mse_loss}[kind]
    for dtype, big in ((torch.float16, 6e4), (torch.float16, 300.0), (torch.float32, 3e38)):
        p, tgt = torch.full((4,), big, dtype=dtype), torch.zeros(4, dtype=dtype)
        want = theirs(p.double(), tgt.double(), reduction=reduction).to(dtype)
        got = ours(p, tgt, reduction=reduction)
        assert got.dtype == dtype and (torch.equal(got, want) or (torch.isinf(got) and torch.isinf(want))), (
            dtype,
            big,
        )


def test_add_grad_value_past_float32_range_is_the_float64_sum_on_both_paths():
    # add_grad_ returns the accumulator (a Python float, float64), so no float32 overflow
    want = 3 * float(torch.tensor(3e38, dtype=torch.float32).double())
    for ctx in (contextlib.nullcontext, _ops.dispatcher_only):
        w = torch.nn.Parameter(torch.full((3,), 3e38))
        w.grad = torch.zeros(3)
        with ctx():
            v = L1(1.0).add_grad_([w])
        assert isinstance(v, float) and v == want and torch.equal(w.grad, torch.ones(3))
