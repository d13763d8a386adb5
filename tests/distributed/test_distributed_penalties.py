"""Penalties on parameters sharded across 2 gloo processes, against the unsharded reference.

Every rank holds a slice along dim 0 of each logical tensor (normreg.distributed's layout);
the value on every rank must be the value of the whole, and the gradients, put back
together, the gradient of the whole (normreg._reference, float64). One spawn runs every
case; the parent compares.
"""

from __future__ import annotations

import math

import pytest
import torch
from dist_util import register, shared_results

import normreg
from normreg import _reference as ref

SCALE = 2.5  # backward of SCALE * value


def _sets() -> dict:
    g = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    a = [r(5, 3, 2), r(4, 6), r(6, 2, 2)]
    a[0][4, 1, 0] = -8.0  # Linf max on rank 1
    a[1][0, 1], a[1][3, 2] = 9.0, -9.0  # Linf tie across ranks: rank 0 (first) wins
    b = [r(7), torch.zeros(4, 3, dtype=torch.float64), r(3), r(2, 5)]
    c = [r(4, 3), r(5, 2)]
    c[0][3, 1] = float("nan")  # NaN only on rank 1
    return {
        "a": (a, [2, 3, 6]),  # third tensor: rank 1 holds an empty (0, 2, 2) shard
        "b": (b, [3, 2, 3, 1]),
        "c": (c, [2, 2]),
        "f32": ([t.float() for t in a], [2, 3, 6]),
    }


def _penalties(name: str) -> list:
    if name == "c":
        return [
            normreg.L1(0.3),
            normreg.L2Norm(0.5),
            normreg.GroupLasso(0.4, 1),
            normreg.GroupLasso(0.4, 0),
            normreg.Linf(0.7),
        ]
    if name == "f32":
        return [normreg.L1(0.1) + normreg.L2Norm(0.2) + normreg.GroupLasso(0.3, 1) + normreg.Linf(0.2)]
    common = [
        normreg.L1(0.3),
        normreg.SquaredL2(0.2),
        normreg.ElasticNet(0.1, 0.2),
        normreg.L2Norm(0.5),
        normreg.GroupLasso(0.4, 0),
        normreg.GroupLasso(0.4, -1),
        normreg.Linf(0.7),
        normreg.L0(0.1),
        normreg.L1(0.1)
        + normreg.SquaredL2(0.05)
        + normreg.L2Norm(0.2)
        + normreg.GroupLasso(0.3, -1)
        + normreg.Linf(0.2),
    ]
    return common + ([normreg.GroupLasso(0.4, 1)] if name == "a" else [])


STEP = 0.8


def _has_prox() -> bool:
    try:
        import normreg.prox  # noqa: F401
    except ImportError:
        return False
    return True


def _prox_penalties() -> list:
    return [
        normreg.L1(0.3),
        normreg.SquaredL2(0.2),
        normreg.ElasticNet(0.1, 0.2),
        normreg.L0(0.5),
        normreg.L2Norm(0.5),
        normreg.GroupLasso(0.4, 0),
        normreg.GroupLasso(0.4, 1),
        normreg.L1(0.2) + normreg.GroupLasso(0.3, 1),  # sparse group lasso
        normreg.ElasticNet(0.1, 0.3) + normreg.L2Norm(0.6),
        normreg.Linf(0.7),
    ]


def _shard(full: list, cuts: list, rank: int) -> list:
    return [(t[:c] if rank == 0 else t[c:]).clone() for t, c in zip(full, cuts, strict=True)]


def _grad0(full: list) -> list:
    return [torch.full_like(t, 0.125) for t in full]


def _err(fn):
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - recorded for the parent to check
        return type(exc).__name__, str(exc)
    return None


@register
def _work(rank, world, pg):
    out = {}
    for name, (full, cuts) in _sets().items():
        for i, pen in enumerate(_penalties(name)):
            with torch.no_grad():
                out[name, i, "value"] = pen.value(_shard(full, cuts, rank), process_group=pg)
            if isinstance(pen, normreg.L0):
                continue
            shards = [s.requires_grad_() for s in _shard(full, cuts, rank)]
            v = pen.value(shards, process_group=pg)
            (SCALE * v).backward()
            out[name, i, "autograd"] = (v.item(), [s.grad for s in shards])
            shards = _shard(full, cuts, rank)
            for j, (s, g) in enumerate(zip(shards, _shard(_grad0(full), cuts, rank), strict=True)):
                s.requires_grad_()
                s.grad = None if j == 1 else g  # one .grad allocated by add_grad_
            total = pen.add_grad_(shards, process_group=pg)
            out[name, i, "add_grad"] = (total, [s.grad for s in shards])
    if _has_prox():
        for name in ("a", "f32"):
            full, cuts = _sets()[name]
            for i, pen in enumerate(_prox_penalties()):
                shards = _shard(full, cuts, rank)
                stats = pen.prox_(shards, STEP, process_group=pg)
                out[name, i, "prox"] = (shards, stats.zeros, stats.total_zeros, stats.numel)
    a, cuts = _sets()["a"]
    mine = _shard(a, cuts, rank)
    pen = normreg.L1(0.1)
    out["count"] = _err(lambda: pen.value(mine if rank == 0 else mine[:2], process_group=pg))
    out["one_bad"] = _err(
        lambda: pen.value(mine if rank == 0 else [torch.ones(3, dtype=torch.int64)], process_group=pg)
    )
    groups = torch.ones(2, 3 + rank, dtype=torch.float64)
    out["groups"] = _err(lambda: normreg.GroupLasso(0.1, 1).value([groups], process_group=pg))
    out["dim"] = _err(lambda: normreg.GroupLasso(0.1, 3).value(mine, process_group=pg))
    out["type"] = _err(lambda: pen.value(mine, process_group="world"))
    out["l0_grad"] = _err(lambda: normreg.L0(0.1).add_grad_(mine, process_group=pg))
    if _has_prox():  # no exact prox for L0 + L1: raised on every rank, before any collective
        out["prox_combo"] = _err(
            lambda: (normreg.L0(0.1) + normreg.L1(0.1)).prox_(mine, 0.1, process_group=pg)
        )
        out["prox_step"] = _err(
            lambda: normreg.L2Norm(0.1).prox_(mine, -1.0 if rank else 0.1, process_group=pg)
        )
    out["after"] = float(pen.value(mine, process_group=pg))  # the group is still in step
    return out


@pytest.fixture(scope="module")
def results():
    return shared_results(_work)


def _ref_value(pen, full) -> float:
    if isinstance(pen, normreg.Sum):
        return sum(_ref_value(t, full) for t in pen.terms)
    if isinstance(pen, normreg.GroupLasso):
        return float(ref.group_value(full, pen.dim, pen.strength))
    return float(ref.penalty_value(pen.kind, full, pen._s1(), pen._s2()))


CASES = [(name, i) for name in _sets() for i in range(len(_penalties(name)))]


def _tol(name):
    return {"rtol": 1e-5, "atol": 1e-6} if name == "f32" else {"rtol": 1e-12, "atol": 1e-12}


@pytest.mark.parametrize(("name", "i"), CASES, ids=[f"{n}-{_penalties(n)[i]!r}" for n, i in CASES])
def test_sharded_matches_unsharded(results, name, i):
    full, _cuts = _sets()[name]
    pen = _penalties(name)[i]
    want = _ref_value(pen, full)
    values = [r[name, i, "value"] for r in results]
    assert values[0].dtype == full[0].dtype and values[0].dim() == 0
    assert values[0].item() == values[1].item() or (
        math.isnan(want) and values[0].isnan() and values[1].isnan()
    )
    torch.testing.assert_close(
        values[0], torch.tensor(want, dtype=full[0].dtype), equal_nan=True, **_tol(name)
    )
    if isinstance(pen, normreg.L0):
        return
    want_g = pen._reference_grad(full)
    for mode, base in (("autograd", None), ("add_grad", _grad0(full))):
        for r in results:
            v = r[name, i, mode][0]
            assert (math.isnan(v) and math.isnan(want)) or v == pytest.approx(
                want, rel=1e-6 if name == "f32" else 1e-12
            )
        got = [
            torch.cat([results[0][name, i, mode][1][k], results[1][name, i, mode][1][k]])
            for k in range(len(full))
        ]
        for k, (gk, wk) in enumerate(zip(got, want_g, strict=True)):
            if mode == "autograd":
                expect = SCALE * wk
            else:
                expect = wk if k == 1 else base[k] + wk
            torch.testing.assert_close(
                gk, expect, equal_nan=True, **_tol(name), msg=f"{mode} grad of tensor {k}"
            )


def test_linf_grad_goes_to_first_global_arg_max(results):
    i = next(i for i, p in enumerate(_penalties("a")) if isinstance(p, normreg.Linf))
    g0, g1 = (r["a", i, "autograd"][1][1] for r in results)  # tensor 1: the tie 9 / -9
    assert g0.count_nonzero() == 1 and g0[0, 1] == SCALE * 0.7
    assert g1.count_nonzero() == 0


def test_rank_mismatch_raises_on_every_rank(results):
    for r in results:
        kind, msg = r["count"]
        assert kind == "ValueError" and "process_group" in msg and "number of shards" in msg
        kind, msg = r["groups"]
        assert kind == "ValueError" and "groups" in msg


def test_bad_params_on_one_rank_do_not_hang_the_others(results):
    kind, msg = results[1]["one_bad"]
    assert kind == "TypeError" and "'params'[0]" in msg
    kind, msg = results[0]["one_bad"]
    assert kind == "ValueError" and "another rank" in msg and "process_group" in msg
    for r in results:
        assert r["dim"][0] == "ValueError" and "'dim'" in r["dim"][1]
        assert r["type"][0] == "TypeError" and "process_group" in r["type"][1]
        assert r["l0_grad"][0] == "ValueError" and "L0" in r["l0_grad"][1]
    a, _ = _sets()["a"]
    assert results[0]["after"] == results[1]["after"] == pytest.approx(float(ref.penalty_value("l1", a, 0.1)))


def test_process_group_without_init_process_group():
    assert not torch.distributed.is_initialized()
    with pytest.raises(ValueError, match="process_group.*init_process_group"):
        normreg.L1(0.1).value([torch.ones(3)], process_group=object())
    with pytest.raises(ValueError, match="process_group"):
        normreg.L2Norm(0.1).add_grad_([torch.ones(3, requires_grad=True)], process_group=object())


PROX = [(name, i) for name in ("a", "f32") for i in range(len(_prox_penalties()))]


@pytest.mark.parametrize(("name", "i"), PROX, ids=[f"{n}-{_prox_penalties()[i]!r}" for n, i in PROX])
def test_sharded_prox_matches_unsharded(results, name, i):
    pytest.importorskip("normreg.prox")
    full, _cuts = _sets()[name]
    pen = _prox_penalties()[i]
    want = [t.clone() for t in full]
    stats = pen.prox_(want, STEP)  # one process, whole tensors
    r0, r1 = (r[name, i, "prox"] for r in results)
    assert r0[1:] == r1[1:] == (stats.zeros, stats.total_zeros, stats.numel)
    for k, w in enumerate(want):
        got = torch.cat([r0[0][k], r1[0][k]])
        torch.testing.assert_close(got, w, **_tol(name), msg=f"tensor {k}")
        if pen.affine or isinstance(pen, (normreg.L0, normreg.Linf)):
            assert torch.equal(got, w)  # elementwise, or the same kernel on the gathered tensor


def test_sharded_prox_errors(results):
    pytest.importorskip("normreg.prox")
    for r in results:
        assert r["prox_combo"][0] == "ValueError" and "closed form" in r["prox_combo"][1]
    assert results[1]["prox_step"][0] == "ValueError" and "'step'" in results[1]["prox_step"][1]
    assert results[0]["prox_step"][0] == "ValueError" and "another rank" in results[0]["prox_step"][1]
