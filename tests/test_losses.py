"""normreg.losses against torch.nn.functional, the float64 reference and closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import num_threads
from hypothesis import given, settings
from hypothesis import strategies as st

from normreg import _ops
from normreg import _reference as ref
from normreg import losses as L

DTYPES = [torch.float32, torch.float64, torch.bfloat16]
DTYPE_IDS = ["f32", "f64", "bf16"]
REDUCTIONS = ["mean", "sum", "none"]
LOSSES = [(L.l1_loss, F.l1_loss, "l1"), (L.mse_loss, F.mse_loss, "mse")]
LOSS_IDS = ["l1", "mse"]

# Tolerances of a value / gradient in each dtype against a float64 computation.
TOL = {
    torch.float32: dict(rtol=1e-5, atol=1e-6),
    torch.float64: dict(rtol=1e-12, atol=1e-12),
    torch.bfloat16: dict(rtol=2e-2, atol=2e-2),
    torch.float16: dict(rtol=1e-2, atol=1e-2),
}


def _pair(shape, dtype, seed=0, grad=True):
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype).requires_grad_(grad)
    t = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype).requires_grad_(grad)
    return p, t


def _grads(out, inputs, seed=1):
    g = torch.Generator().manual_seed(seed)
    go = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.dtype)
    return torch.autograd.grad(out, inputs, go)


def _close(a, b, dtype):
    torch.testing.assert_close(a.double(), b.double(), **TOL[dtype])


# ---- pointwise losses vs torch.nn.functional ---------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("ours,theirs,kind", LOSSES, ids=LOSS_IDS)
@pytest.mark.parametrize("shape", [(3, 2, 5, 7), (70_001,)], ids=["nchw", "multi-chunk"])
def test_pointwise_matches_torch(ours, theirs, kind, reduction, dtype, shape):
    p, t = _pair(shape, dtype)
    a = ours(p, t, reduction=reduction)
    b = theirs(p, t, reduction=reduction)
    assert a.dtype == b.dtype and a.shape == b.shape
    _close(a, b, dtype)
    for ga, gb in zip(_grads(a, [p, t]), _grads(b, [p, t]), strict=True):
        _close(ga, gb, dtype)
    # and against the float64 reference, from the same (rounded) inputs
    r = ref.pointwise_loss(kind, p, t, reduction=reduction)
    _close(a, r.to(dtype), dtype)


@pytest.mark.parametrize("ours,theirs,kind", LOSSES, ids=LOSS_IDS)
def test_kink_and_equal_inputs(ours, theirs, kind):
    # pred == target: value 0, and L1's subgradient is 0 there, as in torch
    p = torch.tensor([1.0, -2.0, 0.5, 3.0], requires_grad=True)
    t = torch.tensor([1.0, 0.0, 0.5, 2.0])
    (ga,) = torch.autograd.grad(ours(p, t, reduction="sum"), p)
    (gb,) = torch.autograd.grad(theirs(p, t, reduction="sum"), p)
    assert torch.equal(ga, gb)
    assert ga[0] == 0 and ga[2] == 0


@pytest.mark.parametrize("ours,theirs,kind", LOSSES, ids=LOSS_IDS)
def test_nan_propagates(ours, theirs, kind):
    p = torch.tensor([1.0, float("nan"), 2.0], requires_grad=True)
    t = torch.zeros(3)
    v = ours(p, t)
    (g,) = torch.autograd.grad(v, p)
    assert torch.isnan(v)
    assert torch.isnan(g[1]) and not torch.isnan(g[0])


@pytest.mark.parametrize("ours,theirs,kind", LOSSES, ids=LOSS_IDS)
def test_non_contiguous_inputs(ours, theirs, kind):
    p, t = _pair((4, 6, 5), torch.float32)
    pt, tt = p.transpose(0, 2), t.transpose(0, 2)
    for reduction in REDUCTIONS:
        a, b = ours(pt, tt, reduction=reduction), theirs(pt, tt, reduction=reduction)
        _close(a, b, torch.float32)
        for ga, gb in zip(_grads(a, [p, t]), _grads(b, [p, t]), strict=True):
            _close(ga, gb, torch.float32)


@pytest.mark.parametrize("ours,theirs,kind", LOSSES, ids=LOSS_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_target_only_requires_grad(ours, theirs, kind, reduction):
    p, t = _pair((2, 3, 4, 4), torch.float64)
    p = p.detach()
    (ga,) = _grads(ours(p, t, reduction=reduction), [t])
    (gb,) = _grads(theirs(p, t, reduction=reduction), [t])
    _close(ga, gb, torch.float64)


def test_target_grad_is_negative_of_pred_grad():
    p, t = _pair((2, 3, 4, 4), torch.float32)
    gp, gt = torch.autograd.grad(L.l1_loss(p, t), [p, t])
    assert torch.equal(gt, -gp)


@pytest.mark.parametrize("dtype", DTYPES + [torch.float16], ids=DTYPE_IDS + ["f16"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("ours,theirs,kind", LOSSES, ids=LOSS_IDS)
def test_forward_gradient_equals_recomputed_gradient(ours, theirs, kind, reduction, dtype):
    """The first backward scales the direction the forward wrote; a second backward of the
    retained graph recomputes it from pred and target: the two must be bitwise equal, with
    a mask and weights, an incoming gradient that is not 1, and both inputs requiring grad."""
    p, t = _pair((2, 1, 70, 500), dtype)  # > one 64K chunk
    g = torch.Generator().manual_seed(5)
    m = torch.rand((2, 1, 70, 500), generator=g) > 0.3
    w = torch.rand((1, 1, 500), generator=g, dtype=torch.float64).to(dtype)
    for mask, weight in ((None, None), (m, w)):
        out = ours(p, t, mask=mask, weight=weight, reduction=reduction)
        go = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.dtype) * 3
        first = torch.autograd.grad(out, [p, t], go, retain_graph=True)
        second = torch.autograd.grad(out, [p, t], go, retain_graph=True)
        only_t = torch.autograd.grad(out, [t], go)  # the target alone: the negative
        for a, b in zip(first, second, strict=True):
            assert torch.equal(a, b)
        assert torch.equal(only_t[0], first[1]) and torch.equal(first[1], -first[0])
        b = _torch_masked(kind, p, t, None if mask is None else mask.to(dtype), weight, reduction)
        for x, y in zip(first, torch.autograd.grad(b, [p, t], go), strict=True):
            _close(x, y, dtype)


def test_retained_graph_accumulates_twice():
    # .backward twice on a retained graph: the forward's direction is used (and overwritten)
    # once; the second pass must still add the same gradient
    p, t = _pair((4, 5), torch.float32)
    v = L.mse_loss(p, t)
    v.backward(retain_graph=True)
    g1 = p.grad.clone()
    v.backward()
    (ref_g,) = torch.autograd.grad(F.mse_loss(p, t), p)
    _close(g1, ref_g, torch.float32)
    torch.testing.assert_close(p.grad, 2 * g1, rtol=0, atol=0)


def test_stale_graph_is_refused():
    # the gradient is computed in the forward, but pred changed in place afterwards: the
    # backward must refuse the stale graph as torch does, not return the old gradient
    # (a constant target: the shortest backward; a target that requires grad: the general one)
    p, t = _pair((4, 5), torch.float32)
    for target in (t.detach(), t):
        for change in ("pred", "target"):
            q, u = p * 1.0, target * 1.0
            v = L.l1_loss(q, u)
            with torch.no_grad():
                (q if change == "pred" else u).add_(1.0)
            with pytest.raises(RuntimeError, match="modified by an inplace operation"):
                v.backward()


@pytest.mark.parametrize("ours,theirs,kind", LOSSES, ids=LOSS_IDS)
def test_double_backward_through_the_reference(ours, theirs, kind):
    p, t = _pair((2, 3), torch.float64)
    w = torch.rand(2, 1, dtype=torch.float64) + 0.5
    for reduction in REDUCTIONS:
        assert torch.autograd.gradgradcheck(
            lambda a, b, r=reduction: ours(a, b, weight=w, reduction=r), (p, t)
        )
    # and the Hessian-vector product equals torch's (MSE: 2 / numel; L1: 0)
    (gp,) = torch.autograd.grad(ours(p, t), p, create_graph=True)
    (hv,) = torch.autograd.grad(gp.sum(), p)
    (gq,) = torch.autograd.grad(theirs(p, t), p, create_graph=True)
    (hq,) = torch.autograd.grad(gq.sum(), p)
    _close(hv, hq, torch.float64)


MIXED = [
    (torch.bfloat16, torch.float32),
    (torch.float32, torch.bfloat16),
    (torch.float16, torch.bfloat16),
    (torch.float32, torch.float64),
    (torch.float16, torch.float32),
]


@pytest.mark.parametrize("pd,td", MIXED, ids=str)
@pytest.mark.parametrize("ours,theirs,kind", LOSSES, ids=LOSS_IDS)
def test_mixed_dtypes_promote_as_torch(ours, theirs, kind, pd, td):
    p, t = _pair((3, 4, 5), torch.float64)
    p, t = p.detach().to(pd).requires_grad_(), t.detach().to(td).requires_grad_()
    for reduction in REDUCTIONS:
        a, b = ours(p, t, reduction=reduction), theirs(p, t, reduction=reduction)
        assert a.dtype == b.dtype == torch.promote_types(pd, td)
        _close(a, b, a.dtype)
        ga, gb = _grads(a, [p, t]), _grads(b, [p, t])
        for x, y, d in zip(ga, gb, (pd, td), strict=True):
            assert x.dtype == y.dtype == d
            _close(x, y, torch.bfloat16 if d in (torch.bfloat16, torch.float16) else d)


AUTOCAST_INPUTS = [
    (torch.bfloat16, torch.bfloat16),
    (torch.bfloat16, torch.float32),
    (torch.float32, torch.float32),
    (torch.float16, torch.float16),
    (torch.bfloat16, torch.float64),
    (torch.float64, torch.float64),
]


@pytest.mark.parametrize("cast", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
@pytest.mark.parametrize("pd,td", AUTOCAST_INPUTS, ids=str)
@pytest.mark.parametrize("ours,theirs,kind", LOSSES, ids=LOSS_IDS)
def test_autocast_follows_torch(ours, theirs, kind, pd, td, cast):
    """CPU autocast lists l1_loss and mse_loss as float32 ops: computed and returned in
    float32 (float64 stays float64); the gradients reach the inputs in their own dtypes."""
    p, t = _pair((2, 3, 4, 4), torch.float64)
    p, t = p.detach().to(pd).requires_grad_(), t.detach().to(td).requires_grad_()
    m = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(2)).to(cast)
    for reduction in REDUCTIONS:
        with torch.autocast("cpu", dtype=cast):
            a = ours(p, t, reduction=reduction)
            b = theirs(p, t, reduction=reduction)
            am = ours(p, t, mask=m, reduction=reduction)  # a low-precision mask is cast too
        assert a.dtype == b.dtype == am.dtype
        assert a.dtype == (torch.float64 if torch.float64 in (pd, td) else torch.float32)
        _close(a, b, a.dtype)
        bm = _torch_masked(kind, p.to(a.dtype), t.to(a.dtype), m.to(a.dtype), None, reduction)
        _close(am, bm, a.dtype)
        for x, y, d in zip(_grads(a, [p, t]), _grads(b, [p, t]), (pd, td), strict=True):
            assert x.dtype == y.dtype == d
            _close(x, y, torch.bfloat16 if d in (torch.bfloat16, torch.float16) else d)


@pytest.mark.parametrize("ours,theirs,kind", LOSSES, ids=LOSS_IDS)
def test_no_grad_and_empty(ours, theirs, kind):
    p, t = _pair((3, 4), torch.float32, grad=False)
    with torch.no_grad():
        _close(ours(p, t), theirs(p, t), torch.float32)
    e = torch.empty(0)
    assert torch.isnan(ours(e, e))  # mean of nothing, as torch
    assert ours(e, e, reduction="sum") == 0


# ---- mask and weights against a torch reference -----------------------------------------------


def _torch_masked(kind, p, t, m, w, reduction):
    d = p - t
    e = d.abs() if kind == "l1" else d * d
    if m is not None:
        e = m * e
    if w is not None:
        e = w * e
    if reduction == "none":
        return e
    if reduction == "sum":
        return e.sum()
    return e.sum() / (m.expand_as(p).sum() if m is not None else p.numel())


MASK_SHAPES = [(2, 3, 5, 6), (2, 1, 5, 6), (1, 1, 1, 6), (6,)]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("ours,theirs,kind", LOSSES, ids=LOSS_IDS)
@pytest.mark.parametrize("mask_shape", MASK_SHAPES, ids=str)
def test_mask_and_weight(ours, theirs, kind, reduction, dtype, mask_shape):
    p, t = _pair((2, 3, 5, 6), dtype)
    g = torch.Generator().manual_seed(3)
    m = torch.rand(mask_shape, generator=g) > 0.4
    w = torch.rand((3, 1, 6), generator=g, dtype=torch.float64).to(dtype)
    for mask, weight in ((m, None), (None, w), (m, w), (m.to(dtype) * 0.5, w)):
        a = ours(p, t, mask=mask, weight=weight, reduction=reduction)
        mm = None if mask is None else mask.to(dtype)
        b = _torch_masked(kind, p, t, mm, weight, reduction)
        assert a.shape == b.shape and a.dtype == dtype
        _close(a, b, dtype)
        for ga, gb in zip(_grads(a, [p, t]), _grads(b, [p, t]), strict=True):
            _close(ga, gb, dtype)


def test_mean_with_mask_divides_by_counted_elements():
    p = torch.arange(8.0).view(1, 2, 2, 2)
    t = torch.zeros(1, 2, 2, 2)
    m = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])  # (1, 1, 2, 2): broadcast over 2 channels
    # counted: channel 0 -> 0, 3; channel 1 -> 4, 7  => |.| sum 14 over 4 counted elements
    assert L.l1_loss(p, t, mask=m).item() == pytest.approx(14 / 4)
    assert L.l1_loss(p, t, mask=m, reduction="sum").item() == pytest.approx(14)
    assert torch.isnan(L.l1_loss(p, t, mask=torch.zeros(1, 1, 2, 2)))


def test_mask_requiring_grad_goes_through_reference():
    p, t = _pair((2, 3, 4), torch.float64)
    w = torch.rand(3, 4, dtype=torch.float64, requires_grad=True)
    a = L.mse_loss(p, t, weight=w)
    b = _torch_masked("mse", p, t, None, w, "mean")
    ga, gb = _grads(a, [p, t, w]), _grads(b, [p, t, w])
    for x, y in zip(ga, gb, strict=True):
        _close(x, y, torch.float64)


@pytest.mark.parametrize("kind", ["l1", "mse"])
def test_deterministic_across_threads(kind):
    fn = L.l1_loss if kind == "l1" else L.mse_loss
    p, t = _pair((300_000,), torch.float32, grad=False)
    m = torch.rand(300_000) > 0.5
    x = p.view(3, 1, 400, 250)
    runs = []
    for n in (1, 2):
        with num_threads(n):
            runs.append(
                [fn(p, t, reduction=r, mask=m) for r in ("mean", "sum")]
                + [L.total_variation(x, kind=k, reduction="none") for k in ("anisotropic", "isotropic")]
            )
    for x, y in zip(*runs, strict=True):
        assert torch.equal(x, y)


# ---- gradcheck ---------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("ours,theirs,kind", LOSSES, ids=LOSS_IDS)
def test_gradcheck_pointwise(ours, theirs, kind, reduction):
    p, t = _pair((2, 2, 3, 3), torch.float64)
    m = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64).view(1, 1, 1, 3)
    w = torch.rand(2, 1, 3, 3, dtype=torch.float64) + 0.5
    assert torch.autograd.gradcheck(lambda a, b: ours(a, b, reduction=reduction), (p, t))
    assert torch.autograd.gradcheck(lambda a, b: ours(a, b, mask=m, weight=w, reduction=reduction), (p, t))


def test_gradgradcheck_mse():
    p, t = _pair((2, 3, 3), torch.float64)
    assert torch.autograd.gradgradcheck(lambda a, b: L.mse_loss(a, b, reduction="sum"), (p, t))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", ["anisotropic", "isotropic"])
def test_gradcheck_tv(kind, reduction):
    x = torch.randn(
        2, 2, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True
    )
    assert torch.autograd.gradcheck(
        lambda a: L.total_variation(a, kind=kind, reduction=reduction, eps=1e-3), (x,)
    )


def test_gradgradcheck_tv_isotropic():
    x = torch.randn(
        1, 1, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True
    )
    assert torch.autograd.gradgradcheck(lambda a: L.total_variation(a, kind="isotropic", eps=1e-2), (x,))


# ---- total variation ---------------------------------------------------------------------------


def _torch_aniso(x, per_image=False):
    dims = (1, 2, 3) if per_image else None
    a, b = torch.diff(x, dim=-1).abs(), torch.diff(x, dim=-2).abs()
    return a.sum(dims) + b.sum(dims) if per_image else a.sum() + b.sum()


TV_SHAPES = [
    (2, 3, 6, 7),
    (1, 1, 1, 5),
    (1, 2, 5, 1),
    (1, 1, 1, 1),
    (2, 1, 2, 2),
    (1, 1, 9000, 9),
    (0, 3, 4, 4),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", ["anisotropic", "isotropic"])
@pytest.mark.parametrize("shape", TV_SHAPES, ids=str)
def test_tv_matches_reference(shape, kind, reduction, dtype):
    x = (
        torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        .to(dtype)
        .requires_grad_()
    )
    a = L.total_variation(x, kind=kind, reduction=reduction)
    b = ref.total_variation(x, kind, reduction)
    assert a.dtype == dtype and a.shape == b.shape
    tol = dict(TOL[dtype])
    if dtype != torch.float64:  # long sums of float terms
        tol["rtol"] = tol["rtol"] * 10
    torch.testing.assert_close(a.double(), b.double(), equal_nan=True, **tol)
    if x.numel():
        ga, gb = _grads(a, [x]), _grads(b, [x])
        torch.testing.assert_close(ga[0].double(), gb[0].double().to(dtype).double(), **tol)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_tv_anisotropic_is_the_torch_diff_expression(dtype):
    x = torch.randn(3, 2, 8, 9, dtype=torch.float64).to(dtype).requires_grad_()
    a = L.total_variation(x, kind="anisotropic", reduction="none")
    b = _torch_aniso(x, per_image=True)
    _close(a, b, dtype)
    _close(_grads(a, [x])[0], _grads(b, [x])[0], dtype)
    a, b = L.total_variation(x), _torch_aniso(x)
    _close(a, b, dtype)
    _close(_grads(a, [x])[0], _grads(b, [x])[0], dtype)


@pytest.mark.parametrize("kind", ["anisotropic", "isotropic"])
@pytest.mark.parametrize("w", [1, 7, 8, 9, 15, 16, 17, 24, 64, 65])
def test_tv_float32_rows_match_float64(kind, w):
    """float32 rows take 8-wide blocks with float partials: every width around a multiple
    of 8, against the float64 value of the same numbers, within 1e-6; per image too."""
    x = torch.randn(3, 2, 11, w, generator=torch.Generator().manual_seed(w)) * 3
    a = L.total_variation(x, kind=kind, reduction="none", eps=1e-3)
    b = ref.total_variation(x.double(), kind, "none", eps=1e-3)
    torch.testing.assert_close(a.double(), b, rtol=1e-6, atol=0)


@pytest.mark.parametrize("kind", ["anisotropic", "isotropic"])
@pytest.mark.parametrize("w", [8, 16, 64])
def test_tv_float32_past_the_last_column_is_not_a_term(kind, w):
    """The last 8-wide block of a row reads the first pixel of the next row; a NaN or Inf
    there belongs to that row's terms only. Per image, so a plane's value is checked alone."""
    x = torch.randn(2, 1, 4, w, generator=torch.Generator().manual_seed(0))
    y = x.clone()
    y[0, 0, 1, 0] = float("inf")  # first pixel of row 1: row 0's last block reads it
    a = L.total_variation(y, kind=kind, reduction="none", eps=1e-3)
    b = ref.total_variation(y.double(), kind, "none", eps=1e-3)
    torch.testing.assert_close(a.double(), b, rtol=1e-6, atol=0, equal_nan=True)
    assert torch.isinf(a[0]) and torch.isfinite(a[1])
    y[0, 0, 1, 0] = float("nan")
    a = L.total_variation(y, kind=kind, reduction="none", eps=1e-3)
    assert torch.isnan(a[0]) and torch.isfinite(a[1])
    # a large value there changes only the terms it belongs to
    y[0, 0, 1, 0] = 1e15  # (squared still finite in float32)
    torch.testing.assert_close(
        L.total_variation(y, kind=kind, reduction="none", eps=1e-3).double(),
        ref.total_variation(y.double(), kind, "none", eps=1e-3),
        rtol=1e-6,
        atol=0,
    )


@pytest.mark.parametrize("kind", ["anisotropic", "isotropic"])
@pytest.mark.parametrize("h,w", [(1, 16), (2, 16), (5, 17), (3, 24), (7, 64), (4, 65), (1100, 64)])
def test_tv_float32_gradient_rows(kind, h, w):
    """float32 anisotropic gradients run 8 pixels at a time, carrying each difference's sign
    to its other pixel (the next block, the next row, the next block of rows when H > 1024
    rows of 64): against the float64 gradient of the same numbers, with NaN and Inf pixels."""
    x = torch.randn(2, 1, h, w, generator=torch.Generator().manual_seed(h * w))
    if kind == "anisotropic":  # (isotropic: inf / inf in the direction, NaN either way)
        x[1, 0, h - 1, 0] = float("inf")
    x[1, 0, 0, w // 2] = 0.0
    x[1, 0, 0, w // 2 + 1] = 0.0  # a zero difference: subgradient 0

    def grad(t, fn, reduction):
        t = t.detach().requires_grad_()
        return _grads(fn(t, kind=kind, reduction=reduction, eps=1e-3), [t])[0]

    for reduction in ("sum", "none"):
        torch.testing.assert_close(
            grad(x, L.total_variation, reduction).double(),
            grad(x.double(), ref.total_variation, reduction),
            rtol=1e-6,
            atol=1e-6,
        )
    # NaN: the reference (torch's abs backward) drops it; normreg's convention propagates it
    # to the pixels of its differences, as its float64 (row-scratch) path does
    x[0, 0, h // 2, w - 1] = float("nan")
    torch.testing.assert_close(
        grad(x, L.total_variation, "sum").double(),
        grad(x.double(), L.total_variation, "sum"),
        rtol=1e-4,  # isotropic: float32 directions
        atol=1e-6,
        equal_nan=True,
    )


def test_tv_float32_large_batch_accuracy():
    """A batch as the GAN makes it (64x64 RGB): the float partials stay within 1e-6."""
    x = torch.rand(16, 3, 64, 64, generator=torch.Generator().manual_seed(3)) * 2 - 1
    for kind in ("anisotropic", "isotropic"):
        a = L.total_variation(x, kind=kind, eps=1e-8)
        b = ref.total_variation(x.double(), kind, eps=1e-8)
        assert abs(a.item() - b.item()) <= 1e-6 * abs(b.item()), kind


def test_tv_closed_forms():
    # a constant image has no variation; a unit step across the columns varies by H per plane
    c = torch.full((2, 3, 4, 5), 0.7)
    assert L.total_variation(c).item() == 0
    assert L.total_variation(c, kind="isotropic", eps=0.0).item() == 0
    step = torch.zeros(1, 1, 4, 6)
    step[..., 3:] = 1.0
    assert L.total_variation(step).item() == pytest.approx(4.0)
    assert L.total_variation(step, kind="isotropic", eps=0.0).item() == pytest.approx(4.0)
    # a diagonal ramp x(i,j) = i + j: every interior pixel has sqrt(2), the rest 1 or 0
    r = (torch.arange(3.0).view(3, 1) + torch.arange(4.0).view(1, 4)).view(1, 1, 3, 4)
    expected = 2 * 3 * np.sqrt(2) + 2 * 1 + 3 * 1 + 0
    assert L.total_variation(r, kind="isotropic", eps=0.0).item() == pytest.approx(expected)
    assert L.total_variation(r, kind="isotropic", reduction="mean", eps=0.0).item() == pytest.approx(
        expected / 12
    )


def test_tv_isotropic_eps_zero_kink_has_zero_gradient():
    x = torch.zeros(1, 1, 3, 3, requires_grad=True)
    (g,) = torch.autograd.grad(L.total_variation(x, kind="isotropic", eps=0.0), x)
    assert torch.equal(g, torch.zeros_like(g))


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 3),
    c=st.integers(1, 3),
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    kind=st.sampled_from(["anisotropic", "isotropic"]),
    eps=st.sampled_from([0.0, 1e-8, 0.1]),
    seed=st.integers(0, 2**16),
)
def test_tv_property_random_shapes(n, c, h, w, kind, eps, seed):
    x = torch.randn(
        n, c, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(seed), requires_grad=True
    )
    a = L.total_variation(x, kind=kind, reduction="none", eps=eps)
    b = ref.total_variation(x, kind, "none", eps=eps)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(_grads(a, [x])[0], _grads(b, [x])[0], rtol=1e-10, atol=1e-12)
    if kind == "isotropic" and eps == 0.0:  # isotropic TV never exceeds anisotropic TV
        assert (a <= L.total_variation(x, kind="anisotropic", reduction="none") + 1e-12).all()


@settings(max_examples=30, deadline=None)
@given(
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    kind=st.sampled_from(["l1", "mse"]),
    reduction=st.sampled_from(REDUCTIONS),
    masked=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_pointwise_property_random_shapes(shape, kind, reduction, masked, seed):
    p, t = _pair(tuple(shape), torch.float64, seed=seed)
    m = (
        (torch.rand((1,) + tuple(shape[1:]), generator=torch.Generator().manual_seed(seed)) > 0.3)
        if masked
        else None
    )
    fn = L.l1_loss if kind == "l1" else L.mse_loss
    a = fn(p, t, mask=m, reduction=reduction)
    b = ref.pointwise_loss(kind, p, t, m, None, reduction)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, equal_nan=True)
    if a.isfinite().all():
        for x, y in zip(_grads(a, [p, t]), _grads(b, [p, t]), strict=True):
            torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)


def test_other_devices_go_to_the_reference():
    p = torch.empty(2, 3, 4, 4, device="meta")
    assert L.l1_loss(p, p).device.type == "meta"
    assert L.mse_loss(p, p, reduction="none").shape == p.shape
    assert L.total_variation(p, reduction="none").shape == (2,)


# ---- SSIM --------------------------------------------------------------------------------------


def test_ssim_loss_matches_skimage():
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=g, dtype=torch.float64)
    y = (x + 0.1 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    per = L.ssim_loss(x, y, data_range=1.0, reduction="none")
    for i in range(2):
        s = structural_similarity(
            x[i].numpy(),
            y[i].numpy(),
            channel_axis=0,
            data_range=1.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        assert per[i].item() == pytest.approx(1 - s, abs=1e-6)
    assert L.ssim_loss(x, y).item() == pytest.approx(per.mean().item())
    assert L.ssim_loss(x, y, reduction="sum").item() == pytest.approx(per.sum().item())


def test_ssim_loss_small_images_and_gradient():
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    assert L.ssim_loss(x.detach(), x.detach(), win_size=3).item() == pytest.approx(0.0, abs=1e-10)
    v = L.ssim_loss(x, torch.rand(4, 1, 8, 8, dtype=torch.float64), win_size=3)
    assert 0 < v.item() < 2
    (gx,) = torch.autograd.grad(v, x)
    assert gx.shape == x.shape and torch.isfinite(gx).all()
    with pytest.raises(ValueError, match="win_size"):
        L.ssim_loss(x, x, win_size=11)  # larger than 8x8: an error, not a silent skip
    with pytest.raises(ValueError, match="win_size"):
        L.ssim_loss(x, x, win_size=4)


# ---- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [L.l1_loss, L.mse_loss], ids=LOSS_IDS)
def test_pointwise_errors(fn):
    p = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match="'target'"):
        fn(p, torch.randn(2, 3, 4, 5))
    with pytest.raises(TypeError, match="'target'"):
        fn(p, p.long())
    with pytest.raises(ValueError, match="'target'"):
        fn(p, torch.empty(2, 3, 4, 4, device="meta"))
    with pytest.raises(TypeError, match="'pred'"):
        fn(p.long(), p.long())
    with pytest.raises(TypeError, match="'pred'"):
        fn(p.numpy(), p)
    with pytest.raises(ValueError, match="'mask'"):
        fn(p, p, mask=torch.ones(2, 2, 1, 1))
    with pytest.raises(ValueError, match="'mask'"):
        fn(p, p, mask=torch.ones(5, 2, 3, 4, 4))  # broadcasts, but to a larger shape
    with pytest.raises(TypeError, match="'mask'"):
        fn(p, p, mask=torch.ones(4, dtype=torch.int64))
    with pytest.raises(ValueError, match="'weight'"):
        fn(p, p, weight=torch.ones(3, 3))
    with pytest.raises(ValueError, match="'reduction'"):
        fn(p, p, reduction="avg")
    with pytest.raises(TypeError, match="positional"):
        fn(p, p, "sum")  # the options are keyword-only
    # a factor must be finite and >= 0 (issue 15: a negative weight was accepted silently)
    for bad in (-1.0, float("nan"), float("inf")):
        w = torch.ones(3, 1, 1)
        w[1] = bad
        with pytest.raises(ValueError, match="'weight'.*finite and >= 0"):
            fn(p, p, weight=w)
        with pytest.raises(ValueError, match="'mask'.*finite and >= 0"):
            fn(p, p, mask=w)
        with pytest.raises(ValueError, match="'weight'"):  # the reference path checks too
            fn(p, p, weight=w.requires_grad_())
    # checked after the conversion to pred's dtype: a float64 1e300 is Inf in float32
    big = torch.ones(3, 1, 1, dtype=torch.float64)
    big[2] = 1e300
    with pytest.raises(ValueError, match="'mask'.*finite and >= 0"):
        fn(p.float(), p.float(), mask=big)
    with pytest.raises(ValueError, match="'weight'.*finite and >= 0"):
        fn(p.float(), p.float(), weight=big)


def test_tv_errors():
    x = torch.randn(3, 4, 4)
    with pytest.raises(ValueError, match="'images'"):
        L.total_variation(x)
    with pytest.raises(ValueError, match="'images'"):
        L.total_variation(torch.randn(1, 1, 1, 3, 4))
    with pytest.raises(TypeError, match="'images'"):
        L.total_variation(x.long().view(1, 3, 4, 4))
    with pytest.raises(ValueError, match="'kind'"):
        L.total_variation(x.view(1, 3, 4, 4), kind="l2")
    with pytest.raises(ValueError, match="'eps'"):
        L.total_variation(x.view(1, 3, 4, 4), kind="isotropic", eps=-1.0)
    with pytest.raises(ValueError, match="'reduction'"):
        L.total_variation(x.view(1, 3, 4, 4), reduction="avg")
    with pytest.raises(TypeError, match="positional"):
        L.total_variation(x.view(1, 3, 4, 4), "isotropic")


def test_ssim_errors():
    x = torch.rand(1, 1, 16, 16)
    with pytest.raises(ValueError, match="'pred'"):
        L.ssim_loss(x[0], x[0])
    with pytest.raises(ValueError, match="'target'"):
        L.ssim_loss(x, torch.rand(1, 1, 16, 15))
    with pytest.raises(ValueError, match="'data_range'"):
        L.ssim_loss(x, x, data_range=0)
    # issue 15: K is a pair of finite numbers > 0, named in the message
    with pytest.raises(TypeError, match="'K'"):
        L.ssim_loss(x, x, K="ab")
    with pytest.raises(TypeError, match="'K'"):
        L.ssim_loss(x, x, K=(0.01,))
    with pytest.raises(TypeError, match="'K'"):
        L.ssim_loss(x, x, K=(0.01, "a"))
    for k in ((float("nan"), float("nan")), (0.01, float("inf")), (0.0, 0.03), (-0.01, 0.03)):
        with pytest.raises(ValueError, match="'K'"):
            L.ssim_loss(x, x, K=k)
    assert L.ssim_loss(x, x, K=[0.01, 0.03]).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(TypeError, match="positional"):
        L.ssim_loss(x, x, 1.0)


def test_float16_runs_through_the_kernels():
    p, t = _pair((2, 3, 6, 5), torch.float16)
    for fn, kind in ((L.l1_loss, "l1"), (L.mse_loss, "mse")):
        a = fn(p, t, reduction="sum")
        assert a.dtype == torch.float16
        torch.testing.assert_close(
            a.double(), ref.pointwise_loss(kind, p, t, reduction="sum"), rtol=1e-3, atol=1e-3
        )
        (g,) = torch.autograd.grad(a, p)
        (r,) = torch.autograd.grad(ref.pointwise_loss(kind, p, t, reduction="sum"), p)
        torch.testing.assert_close(g.double(), r.to(torch.float16).double(), rtol=1e-3, atol=1e-3)
    for kind in ("anisotropic", "isotropic"):
        a = L.total_variation(p, kind=kind)
        torch.testing.assert_close(a.double(), ref.total_variation(p, kind), rtol=1e-3, atol=1e-2)
        (g,) = torch.autograd.grad(a, p)
        (r,) = torch.autograd.grad(ref.total_variation(p, kind), p)
        torch.testing.assert_close(g.double(), r.to(torch.float16).double(), rtol=1e-3, atol=1e-3)


# ---- the operators (normreg::pointwise_loss): dispatcher, reference, compile, func, meta ----


def _fwd_bwd(fn, p, t, go_seed=7, **kw):
    out = fn(p, t, **kw)
    go = torch.randn(out.shape, generator=torch.Generator().manual_seed(go_seed), dtype=torch.float64)
    go = go.to(out.dtype) * 3
    return (out, *torch.autograd.grad(out, [p, t], go))


def test_loss_ops_are_registered():
    assert hasattr(torch.ops.normreg, "pointwise_loss")
    assert hasattr(torch.ops.normreg, "pointwise_loss_backward")


@pytest.mark.parametrize("dtype", DTYPES + [torch.float16], ids=DTYPE_IDS + ["f16"])
@pytest.mark.parametrize("ours,theirs,kind", LOSSES, ids=LOSS_IDS)
def test_direct_and_dispatcher_bitwise_equal(ours, theirs, kind, dtype):
    """The eager direct path (forward writes the gradient, backward scales it in place) and
    the registered operator (new tensors) give bitwise-equal values and gradients."""
    p, t = _pair((2, 3, 5, 6), dtype)
    g = torch.Generator().manual_seed(4)
    m = torch.rand((2, 1, 5, 6), generator=g) > 0.3
    w = torch.rand((3, 1, 6), generator=g, dtype=torch.float64).to(dtype)
    for reduction in REDUCTIONS:
        for kw in ({}, {"mask": m}, {"mask": m.to(dtype) * 0.5, "weight": w}):
            direct = _fwd_bwd(ours, p, t, reduction=reduction, **kw)
            with _ops.dispatcher_only():
                op = _fwd_bwd(ours, p, t, reduction=reduction, **kw)
            for a, b in zip(direct, op, strict=True):
                assert a.dtype == b.dtype and a.shape == b.shape
                assert (
                    torch.equal(a, b)
                    or (a.isnan() == b.isnan()).all()
                    and torch.equal(a.nan_to_num(), b.nan_to_num())
                )
    # the default backward (incoming gradient 1: the forward's buffer returned as it is)
    (ga,) = torch.autograd.grad(ours(p, t), [p])
    with _ops.dispatcher_only():
        (gb,) = torch.autograd.grad(ours(p, t), [p])
    assert torch.equal(ga, gb)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("ours,theirs,kind", LOSSES, ids=LOSS_IDS)
def test_plain_pair_path_equals_general_path(ours, theirs, kind, dtype):
    """Contiguous float32/float64 pairs without mask or weights take the losses' shortest path
    (normreg._bridge.plain_pair); a transposed pred with the same values takes the general
    one. Values and gradients bitwise equal, for an incoming gradient of 1 (the forward's
    buffer returned), another scalar (scaled in place), pred alone and both inputs, and for
    torch.nn.Parameter inputs; and both equal torch's."""
    p, t = _pair((3, 4, 70, 300), dtype)  # > one 64K chunk
    q = p.detach().transpose(-1, -2).contiguous().transpose(-1, -2).requires_grad_(True)  # same values
    assert not q.is_contiguous() and torch.equal(p, q)
    for reduction in ("mean", "sum"):
        for go in (None, torch.tensor(-2.5, dtype=dtype)):
            for target, inputs in ((t.detach(), (p,)), (t, (p, t))):  # a constant target, or both
                a = ours(p, target, reduction=reduction)
                ga = torch.autograd.grad(a, inputs, go)
                b = ours(q, target, reduction=reduction)
                gb = torch.autograd.grad(b, (q, *inputs[1:]), go)
                if _ops.reference_forced():  # the pure-torch sums depend on the layout: close, not bitwise
                    _close(a, b, dtype)
                    for x, y in zip(ga, gb, strict=True):
                        _close(x, y, dtype)
                else:
                    assert torch.equal(a, b)
                    for x, y in zip(ga, gb, strict=True):
                        assert x.is_contiguous() and torch.equal(x, y)
                c = theirs(p, target, reduction=reduction)
                _close(a, c, dtype)
                for x, y in zip(ga, torch.autograd.grad(c, inputs, go), strict=True):
                    _close(x, y, dtype)
    w = torch.nn.Parameter(p.detach().clone())
    (gw,) = torch.autograd.grad(ours(w, t.detach()), [w])
    (gp,) = torch.autograd.grad(ours(p, t.detach()), [p])
    assert torch.equal(gw, gp)
    with torch.no_grad():  # no graph: the value alone, the same
        if _ops.reference_forced():
            _close(ours(p, t), ours(q, t), dtype)
        else:
            assert torch.equal(ours(p, t), ours(q, t))


@pytest.mark.parametrize("ours,theirs,kind", LOSSES, ids=LOSS_IDS)
def test_reference_backend_agrees_with_kernels(ours, theirs, kind):
    """The non-CPU implementation (pure torch), forced onto CPU tensors."""
    p, t = _pair((2, 3, 5, 6), torch.float64)
    m = torch.rand((2, 1, 5, 6), generator=torch.Generator().manual_seed(4)) > 0.3
    for reduction in REDUCTIONS:
        for kw in ({}, {"mask": m}, {"weight": m.double() + 0.5}):
            a = _fwd_bwd(ours, p, t, reduction=reduction, **kw)
            with _ops.force_reference():
                b = _fwd_bwd(ours, p, t, reduction=reduction, **kw)
            for x, y in zip(a, b, strict=True):
                torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-14)
    with _ops.force_reference(), pytest.raises(ValueError, match="'weight'"):
        ours(p, t, weight=-torch.ones(6, dtype=torch.float64))
    with _ops.force_reference():  # NaN propagates to the gradient, as on the kernels
        q = torch.tensor([1.0, float("nan"), -2.0], requires_grad=True)
        (gq,) = torch.autograd.grad(ours(q, torch.zeros(3)), q)
        assert gq[1].isnan() and not gq[0].isnan()


def test_loss_meta_tensors_and_autocast_through_the_operator():
    p = torch.empty(2, 3, 4, 4, device="meta", requires_grad=True)
    v = L.l1_loss(p, p.detach())
    assert v.device.type == "meta" and v.shape == () and v.dtype == torch.float32
    (g,) = torch.autograd.grad(v, p)
    assert g.shape == p.shape and g.device.type == "meta"
    assert L.mse_loss(p.double(), p, reduction="none").dtype == torch.float64
    x, y = _pair((3, 4), torch.bfloat16)
    with _ops.dispatcher_only(), torch.autocast("cpu", dtype=torch.bfloat16):
        a = L.mse_loss(x, y.float())
        b = F.mse_loss(x, y.float())
    assert a.dtype == b.dtype == torch.float32
    _close(a, b, torch.float32)


@pytest.mark.parametrize("ours,theirs,kind", LOSSES, ids=LOSS_IDS)
def test_torch_func_grad_matches_autograd(ours, theirs, kind):
    p, t = _pair((3, 4, 5), torch.float64, grad=False)
    m = torch.rand(1, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    g_func = torch.func.grad(lambda a: ours(a, t, mask=m))(p)
    (g_auto,) = torch.autograd.grad(ours(p.requires_grad_(), t, mask=m), p)
    torch.testing.assert_close(g_func, g_auto, rtol=1e-12, atol=1e-14)
    _, vjp = torch.func.vjp(lambda a, b: ours(a, b, reduction="none"), p.detach(), t)
    go = torch.randn(p.shape, dtype=torch.float64)
    gp, gt = vjp(go)
    gp2, gt2 = torch.autograd.grad(theirs(p, t.requires_grad_(), reduction="none"), [p, t], go)
    torch.testing.assert_close(gp, gp2, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(gt, gt2, rtol=1e-12, atol=1e-14)


def test_compile_fullgraph_loss_forward_backward():
    torch._dynamo.reset()
    net = torch.nn.Conv2d(3, 3, 3, padding=1)
    x, y = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    w = torch.rand(1, 1, 8, 8) + 0.5

    def step(x):
        out = net(x)
        return 100 * L.l1_loss(out, y) + L.mse_loss(out, y, weight=w, reduction="sum")

    eager = step(x)
    g_eager = torch.autograd.grad(eager, list(net.parameters()))
    out = torch.compile(step, fullgraph=True, backend="aot_eager")(x)
    g_comp = torch.autograd.grad(out, list(net.parameters()))
    torch.testing.assert_close(out, eager)
    for a, b in zip(g_comp, g_eager, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("ours,theirs,kind", LOSSES, ids=LOSS_IDS)
def test_large_terms_sum_without_overflow(ours, theirs, kind):
    """float inputs are summed in float partials of a few rows before double: where those
    partials overflow but the terms do not (squares near float32's max), the kernel sums the
    chunk again in double, so a finite mean stays finite and equals the float64 reference."""
    big = 1e19 if kind == "mse" else 1e38  # a term near 1e38: four of them overflow float32
    g = torch.Generator().manual_seed(3)
    p = (torch.rand(3, 70_000, generator=g, dtype=torch.float64) * big).to(torch.float32)  # > one chunk
    t = torch.zeros_like(p)
    m = torch.rand(3, 70_000, generator=g) > 0.5
    for kw in ({}, {"mask": m}):
        for reduction in ("mean", "sum"):
            v = ours(p, t, reduction=reduction, **kw)
            r = _torch_masked(kind, p.double(), t.double(), kw.get("mask"), None, reduction)
            expect = r.to(torch.float32)  # the float64 value rounded once (inf past float32's max)
            assert torch.isfinite(expect).item() == (reduction == "mean")
            torch.testing.assert_close(v, expect, rtol=1e-6, atol=0)
