"""DTensor parameters on 2 gloo processes: ``distribute_tensor`` (Shard / Replicate) and
FSDP2 (``fully_shard``), against the unsharded tensors and model.

One spawn runs every case (DTensor calls in the ranks, the plain reference in the same
ranks or in the parent); the parent compares. Values and gradients of the logical tensors
must equal the float64 reference, gradients must land in the DTensor's ``.grad`` as a
DTensor with its placements, replicas must agree bitwise, and FSDP2 training with
ProxAdam / ProxSGD (and torch.optim.Adam as a sanity reference) must follow the unsharded
model.
"""

from __future__ import annotations

import pytest
import torch
from dist_util import register, shared_results

import normreg
from normreg import _reference as ref

pytest.importorskip("torch.distributed.tensor")
pytest.importorskip("torch.distributed.fsdp")

SCALE = 2.5  # backward of SCALE * value
STEP = 0.8


def _full() -> list[torch.Tensor]:
    """The logical tensors: a (Shard(1)), b (Replicate), c (Shard(0), uneven), e (Shard(0), rank 1 empty)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 4, generator=g, dtype=torch.float64)
    # Linf tie: (0, 3) on rank 1 comes first in the logical tensor, (1, 0) on rank 0 after it;
    # a first-rank rule would pick the wrong one
    a[0, 3], a[1, 0] = 9.0, -9.0
    b = torch.randn(3, generator=g, dtype=torch.float64)
    c = torch.randn(3, 2, generator=g, dtype=torch.float64)
    e = torch.randn(1, 3, generator=g, dtype=torch.float64)
    return [a, b, c, e]


def _placements():
    from torch.distributed.tensor import Replicate, Shard

    return [Shard(1), Replicate(), Shard(0), Shard(0)]


def _penalties() -> list:
    return [
        normreg.L1(0.3),
        normreg.SquaredL2(0.2),
        normreg.ElasticNet(0.1, 0.2),
        normreg.L2Norm(0.5),
        normreg.GroupLasso(0.4, 0),  # a: groups span the ranks; c, e: local groups
        normreg.GroupLasso(0.4, -1),  # a: local groups; c, e: groups span the ranks
        normreg.Linf(0.7),
        normreg.L0(0.1),
        normreg.L1(0.1)
        + normreg.SquaredL2(0.05)
        + normreg.L2Norm(0.2)
        + normreg.GroupLasso(0.3, -1)
        + normreg.Linf(0.2),
    ]


def _prox_penalties() -> list:
    return [
        normreg.L1(0.3),
        normreg.L0(0.5),
        normreg.L2Norm(0.5),
        normreg.GroupLasso(0.4, 0),
        normreg.GroupLasso(0.4, -1),
        normreg.L1(0.2) + normreg.GroupLasso(0.3, -1),  # sparse group lasso
        normreg.Linf(0.7),
    ]


def _model() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)).double()


def _batch():
    g = torch.Generator().manual_seed(2)
    return torch.randn(6, 4, generator=g, dtype=torch.float64), torch.randn(
        6, 3, generator=g, dtype=torch.float64
    )


def _groups(model, pen_w, pen_b) -> list[dict]:
    ps = dict(model.named_parameters())
    w = [p for n, p in ps.items() if n.endswith("weight")]
    b = [p for n, p in ps.items() if n.endswith("bias")]
    return [{"params": w, "penalty": pen_w}, {"params": b, "penalty": pen_b}]


OPTIMIZERS = {
    # sparse group lasso along dim 1 of Shard(0) weights: its prox runs over the mesh
    "adam": lambda groups: normreg.optim.ProxAdam(groups, lr=0.05),
    "sgd_grad": lambda groups: normreg.optim.ProxSGD(groups, lr=0.1, momentum=0.9, penalty_mode="grad"),
    "adamw_linf": lambda groups: normreg.optim.ProxAdamW(
        groups, lr=0.05, weight_decay=0.1, penalty_schedule=normreg.optim.LinearWarmup(2, start=0.5)
    ),
}


def _opt_penalties(name):
    if name == "adam":
        return normreg.L1(0.5) + normreg.GroupLasso(0.5, 1), normreg.L1(1.0)
    if name == "sgd_grad":
        return normreg.GroupLasso(0.05, 1), normreg.L2Norm(0.1)
    return normreg.Linf(0.05), normreg.L2Norm(0.1)


def _extra() -> torch.Tensor:
    """A plain (not distributed) tensor in a param group of its own, beside the DTensor groups."""
    return torch.linspace(-1, 1, 7, dtype=torch.float64).requires_grad_()


def _train(model, opt, steps=3, extra=None):
    x, y = _batch()
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        if extra is not None:
            loss = loss + (extra - 0.3).square().sum()
        loss.backward()
        opt.step()


def _err(fn):
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - recorded for the parent to check
        return type(exc).__name__, str(exc)
    return None


@register
def _work(rank, world, pg):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor, Partial, distribute_tensor

    mesh = init_device_mesh("cpu", (world,))
    out = {}

    def dts(requires_grad=False):
        return [
            distribute_tensor(t.clone(), mesh, [p]).requires_grad_(requires_grad)
            for t, p in zip(_full(), _placements(), strict=True)
        ]

    def info(t):  # placements, local tensor, logical tensor
        return tuple(t.placements), t.to_local().clone(), t.full_tensor()

    for i, pen in enumerate(_penalties()):
        with torch.no_grad():
            out[i, "value"] = pen.value(dts())
        if isinstance(pen, normreg.L0):
            continue
        ps = dts(True)
        v = pen.value(iter(ps))  # a generator, as model.parameters()
        (SCALE * v).backward()
        out[i, "autograd"] = (v.item(), [info(p.grad) for p in ps])
        ps = dts(True)
        for j, p in enumerate(ps):
            p.grad = None if j == 1 else torch.full_like(p, 0.125)  # one .grad allocated by add_grad_
        total = pen.add_grad_(ps)
        out[i, "add_grad"] = (total, [info(p.grad) for p in ps])
        out[i, "grad"] = (out[i, "value"].item(), [info(g) for g in pen.grad(dts())])
    for i, pen in enumerate(_prox_penalties()):
        ps = dts()
        stats = pen.prox_(ps, STEP)
        out[i, "prox"] = ([info(p) for p in ps], stats.zeros, stats.total_zeros, stats.numel)

    # FSDP2: the same model sharded, and unsharded in this process
    x, y = _batch()
    pen = normreg.L1(0.02) + normreg.GroupLasso(0.1, -1)
    plain = _model()
    model = fully_shard(_model(), mesh=mesh)
    for m in (plain, model):
        v = pen.value(m.parameters())  # on the sharded params (DTensors) for the FSDP2 model
        (torch.nn.functional.mse_loss(m(x), y) + v).backward()
        out["fsdp_value", m is model] = v.item()
        out["fsdp_grad", m is model] = [
            p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad.clone() for p in m.parameters()
        ]
        out["fsdp_add_grad", m is model] = pen.add_grad_(m.parameters())
        out["fsdp_grad2", m is model] = [
            p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad.clone() for p in m.parameters()
        ]
    out["fsdp_placements"] = [(type(p).__name__, tuple(p.grad.placements)) for p in model.parameters()]
    plain = _model()
    model = fully_shard(_model(), mesh=mesh)
    for m in (plain, model):  # the penalty after the forward: FSDP2 keeps the root's params unsharded
        pred = m(x)
        out["after_forward_types", m is model] = sorted({type(p).__name__ for p in m.parameters()})
        (torch.nn.functional.mse_loss(pred, y) + pen.value(m.parameters())).backward()
        out["after_forward_grad", m is model] = [
            p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad.clone() for p in m.parameters()
        ]
    plain = _model()
    model = fully_shard(_model(), mesh=mesh)
    for m in (plain, model):  # the docs' recipe: the list taken before the forward holds the DTensors
        weights = normreg.param_groups(m, pen)[0]["params"]
        loss = torch.nn.functional.mse_loss(m(x), y) + pen.value(weights)
        out["captured_types", m is model] = sorted({type(p).__name__ for p in weights})
        loss.backward()
        out["captured_grad", m is model] = [
            p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad.clone() for p in m.parameters()
        ]
    for name, make in OPTIMIZERS.items():
        pw, pb = _opt_penalties(name)
        plain = _model()
        model = fully_shard(_model(), mesh=mesh)
        extras = [_extra(), _extra()]
        opts = [
            make(_groups(m, pw, pb) + [{"params": [e], "penalty": normreg.L1(0.3)}])
            for m, e in zip((plain, model), extras, strict=True)
        ]
        for m, opt, e in zip((plain, model), opts, extras, strict=True):
            _train(m, opt, extra=e)
        out["opt_extra", name] = [e.detach().clone() for e in extras]
        out["opt", name] = (
            [p.detach().clone() for p in plain.parameters()],
            [p.full_tensor() for p in model.parameters()],
            [p.to_local().clone() for p in model.parameters()],
            opts[0].last_stats,
            opts[1].last_stats,
            [[s.zeros if s else None for s in o.group_stats] for o in opts],
        )
        st = opts[1].state[next(model.parameters())]
        out["opt_state", name] = sorted(
            (k, type(v).__name__, tuple(v.placements) if isinstance(v, DTensor) else None)
            for k, v in st.items()
        )
        sd = opts[1].state_dict()
        out["opt_state_dict", name] = sorted(sd["state"][0])
    plain = _model()
    model = fully_shard(_model(), mesh=mesh)
    for m in (plain, model):  # torch's Adam: the reference this must behave like
        _train(m, torch.optim.Adam(m.parameters(), lr=0.05))
    out["torch_adam"] = (
        [p.detach().clone() for p in plain.parameters()],
        [p.full_tensor() for p in model.parameters()],
    )

    # 2-D meshes (HSDP-like): combined over the Shard mesh dim's group only, not over Replicate
    from torch.distributed.tensor import Replicate, Shard

    a = _full()[0]
    for shape, placements in (((1, world), [Replicate(), Shard(0)]), ((world, 1), [Shard(1), Replicate()])):
        mesh2 = init_device_mesh("cpu", shape)
        for j, pen in enumerate(_penalties()[3:7]):  # L2Norm, GroupLasso(0), GroupLasso(-1), Linf
            d = distribute_tensor(a.clone(), mesh2, placements).requires_grad_()
            v = pen.value([d])
            v.backward()
            out["mesh2", shape, j] = (v.item(), info(d.grad))
    out["two_shards"] = _err(
        lambda: normreg.L1(0.1).value(
            [distribute_tensor(a.clone(), init_device_mesh("cpu", (1, world)), [Shard(0), Shard(1)])]
        )
    )

    # what raises (on every rank, before any collective)
    a, b = dts()[:2]
    out["mixed"] = _err(lambda: normreg.L1(0.1).value([a, torch.ones(3)]))
    out["pg"] = _err(lambda: normreg.L2Norm(0.1).value([a], process_group=pg))
    part = DTensor.from_local(torch.ones(2, 2, dtype=torch.float64), mesh, [Partial()])
    out["partial"] = _err(lambda: normreg.L2Norm(0.1).value([part]))
    out["dim"] = _err(lambda: normreg.GroupLasso(0.1, 1).prox_([a, b], 0.1))
    out["dim_untouched"] = torch.equal(a.full_tensor(), _full()[0])
    a.requires_grad_()
    a.grad = torch.ones(5, 4, dtype=torch.float64)  # a plain grad on a DTensor
    out["plain_grad"] = _err(lambda: normreg.L1(0.1).add_grad_([a]))
    out["l0_grad"] = _err(lambda: normreg.L0(0.1).add_grad_([a]))
    out["opt_plain_grad"] = _err(lambda: normreg.optim.ProxAdam([b, a], penalty=normreg.L2Norm(0.1)).step())
    out["opt_plain_grad_untouched"] = torch.equal(a.full_tensor(), _full()[0])
    c, e = dts(True)[2:]
    c.grad = torch.zeros_like(c)
    out["grad_first"] = _err(lambda: normreg.L1(0.1).add_grad_([c, b.requires_grad_(), a]))  # a's grad is bad
    out["grad_first_untouched"] = bool((c.grad.full_tensor() == 0).all())
    w = torch.ones(3, dtype=torch.float64, requires_grad=True)
    e.grad, w.grad = torch.zeros_like(e), torch.zeros_like(w)
    out["opt_mixed"] = _err(lambda: normreg.optim.ProxAdam([e, w], penalty=normreg.L1(0.1)).step())
    out["after"] = normreg.L1(0.1).value(dts()).item()  # the group is still in step
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


TOL = {"rtol": 1e-12, "atol": 1e-12}


@pytest.mark.parametrize("i", range(len(_penalties())), ids=[repr(p) for p in _penalties()])
def test_dtensor_value_and_grads_match_unsharded(results, i):
    full = _full()
    pen = _penalties()[i]
    want = _ref_value(pen, full)
    for r in results:
        v = r[i, "value"]
        assert type(v) is torch.Tensor and v.dim() == 0 and v.dtype == torch.float64
        assert v.item() == pytest.approx(want, rel=1e-12)
    assert results[0][i, "value"].item() == results[1][i, "value"].item()
    if isinstance(pen, normreg.L0):
        return
    want_g = pen._reference_grad(full)
    for mode in ("autograd", "add_grad", "grad"):
        for r in results:
            assert r[i, mode][0] == pytest.approx(want, rel=1e-12)
            for k, (placements, _local, logical) in enumerate(r[i, mode][1]):
                assert placements == tuple(_placements()[k : k + 1]), f"{mode}: placements of grad {k}"
                expect = {
                    "autograd": SCALE * want_g[k],
                    "add_grad": want_g[k] + (0 if k == 1 else 0.125),
                    "grad": want_g[k],
                }[mode]
                torch.testing.assert_close(logical, expect, **TOL, msg=f"{mode} grad of tensor {k}")
        rep0, rep1 = (r[i, mode][1][1][1] for r in results)  # the Replicate tensor's local grads
        assert torch.equal(rep0, rep1)


def test_linf_tie_goes_to_the_first_logical_arg_max(results):
    i = next(i for i, p in enumerate(_penalties()) if isinstance(p, normreg.Linf))
    _pl, local0, _ = results[0][i, "autograd"][1][0]
    _pl, local1, logical = results[1][i, "autograd"][1][0]
    assert logical.count_nonzero() == 1 and logical[0, 3] == SCALE * 0.7
    assert local0.count_nonzero() == 0 and local1.count_nonzero() == 1


@pytest.mark.parametrize("i", range(len(_prox_penalties())), ids=[repr(p) for p in _prox_penalties()])
def test_dtensor_prox_matches_unsharded(results, i):
    pytest.importorskip("normreg.prox")
    pen = _prox_penalties()[i]
    want = [t.clone() for t in _full()]
    stats = pen.prox_(want, STEP)
    r0, r1 = (r[i, "prox"] for r in results)
    assert r0[1:] == r1[1:] == (stats.zeros, stats.total_zeros, stats.numel)
    for k, w in enumerate(want):
        assert r0[0][k][0] == tuple(_placements()[k : k + 1])
        torch.testing.assert_close(r0[0][k][2], w, **TOL, msg=f"tensor {k}")
        assert torch.equal(r0[0][k][2], r1[0][k][2])
    assert torch.equal(r0[0][1][1], r1[0][1][1])  # replicas agree bitwise


def test_fsdp2_value_and_grads_match_unsharded(results):
    for r in results:
        assert r["fsdp_value", True] == pytest.approx(r["fsdp_value", False], rel=1e-12)
        for key in ("fsdp_grad", "fsdp_grad2"):
            for g, w in zip(r[key, True], r[key, False], strict=True):
                torch.testing.assert_close(g, w, **TOL)
        assert r["fsdp_add_grad", True] == pytest.approx(r["fsdp_add_grad", False], rel=1e-12)
        assert all(t == "DTensor" and len(pl) == 1 and pl[0].is_shard(0) for t, pl in r["fsdp_placements"])


def test_fsdp2_penalty_after_forward(results):
    for r in results:
        assert r["after_forward_types", True] == ["Parameter"]  # FSDP2's unsharded root params
        assert r["captured_types", True] == ["DTensor"]
        for key in ("after_forward_grad", "captured_grad"):
            for g, w in zip(r[key, True], r[key, False], strict=True):
                torch.testing.assert_close(g, w, **TOL)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_fsdp2_prox_optimizers_match_unsharded(results, name):
    for r in results:
        plain, sharded, _local, stats_plain, stats_sharded, group_zeros = r["opt", name]
        for k, (p, s) in enumerate(zip(plain, sharded, strict=True)):
            torch.testing.assert_close(s, p, rtol=1e-10, atol=1e-12, msg=f"param {k}")
        assert (stats_sharded.zeros, stats_sharded.total_zeros, stats_sharded.numel) == (
            stats_plain.zeros,
            stats_plain.total_zeros,
            stats_plain.numel,
        )
        assert group_zeros[0] == group_zeros[1]
        torch.testing.assert_close(r["opt_extra", name][1], r["opt_extra", name][0], rtol=1e-12, atol=1e-14)
        for k, kind, placements in r["opt_state", name]:
            if k != "step":
                assert kind == "DTensor" and len(placements) == 1 and placements[0].is_shard(0)
        assert "exp_avg" in r["opt_state_dict", name] or "momentum_buffer" in r["opt_state_dict", name]
    for a, b in zip(results[0]["opt", name][1], results[1]["opt", name][1], strict=True):
        assert torch.equal(a, b)  # both ranks see the same logical params
    if name == "adam":
        assert results[0]["opt", name][4].total_zeros > 0  # the prox made some exact zeros


def test_fsdp2_torch_adam_reference(results):
    for r in results:
        plain, sharded = r["torch_adam"]
        for p, s in zip(plain, sharded, strict=True):
            torch.testing.assert_close(s, p, rtol=1e-10, atol=1e-12)


def test_dtensor_on_2d_meshes(results):
    a = _full()[0]
    for shape in ((1, 2), (2, 1)):
        for j, pen in enumerate(_penalties()[3:7]):
            want = _ref_value(pen, [a])
            want_g = pen._reference_grad([a])[0]
            for r in results:
                v, (placements, _local, logical) = r["mesh2", shape, j]
                assert v == pytest.approx(want, rel=1e-12)
                assert len(placements) == 2
                torch.testing.assert_close(logical, want_g, **TOL)
    for r in results:
        kind, msg = r["two_shards"]
        assert kind == "ValueError" and "sharded over 2 mesh dims" in msg and "at most one" in msg


def test_dtensor_errors(results):
    for r in results:
        kind, msg = r["mixed"]
        assert kind == "TypeError" and "DTensor" in msg and "'params'[1]" in msg
        kind, msg = r["pg"]
        assert kind == "ValueError" and "process_group" in msg and "DTensor" in msg
        kind, msg = r["partial"]
        assert kind == "ValueError" and "Partial" in msg and "Replicate" in msg
        kind, msg = r["dim"]
        assert kind == "ValueError" and "'dim'" in msg
        assert r["dim_untouched"]
        kind, msg = r["plain_grad"]
        assert kind == "TypeError" and ".grad" in msg and "DTensor" in msg
        kind, msg = r["l0_grad"]
        assert kind == "ValueError" and "L0" in msg
        kind, msg = r["grad_first"]
        assert kind == "TypeError" and "'params'[2]" in msg and ".grad" in msg
        assert r["grad_first_untouched"]
        kind, msg = r["opt_plain_grad"]
        assert kind == "ValueError" and "param_groups[0]['params'][1]" in msg and ".grad" in msg
        assert r["opt_plain_grad_untouched"]
        kind, msg = r["opt_mixed"]
        assert kind == "TypeError" and "DTensors and regular tensors" in msg
        assert r["after"] == pytest.approx(float(ref.penalty_value("l1", _full(), 0.1)), rel=1e-12)
