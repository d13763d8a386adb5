"""normreg.optim as a drop-in for torch.optim: bitwise-equal steps without a penalty, state
dicts of plain data (weights_only loading, torch <-> normreg), torch's implementation
switches, argument errors that name the argument, version counters, the penalty scheduler
next to an lr scheduler, and zero counts of stored low-precision values."""

from __future__ import annotations

import copy
import io
import itertools

import pytest
import torch

import normreg
from normreg.optim import (
    Cosine,
    LinearWarmup,
    PenaltyScheduler,
    ProxAdam,
    ProxAdamW,
    ProxSGD,
    SparsityController,
    penalty_from_spec,
    penalty_spec,
)

# sizes with vector bodies and scalar tails, one above ATen's parallel grain (32768)
SHAPES = [(37,), (16, 33), (3, 3, 5, 5), (1,), (4099,)]


def _params(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=dtype) for s in SHAPES]


def _run_both(ours_cls, torch_cls, kw, dtype, steps=30, ours_kw=None):
    a, b = _params(dtype), _params(dtype)
    oa, ob = ours_cls(a, **kw, **(ours_kw or {})), torch_cls(b, **kw)
    gen = torch.Generator().manual_seed(1)
    for k in range(steps):
        for x, y in zip(a, b):
            g = torch.randn(x.shape, dtype=dtype, generator=gen) * (0.1 if k % 3 else 3.0)
            x.grad, y.grad = g.clone(), g.clone()
        oa.step()
        ob.step()
    return a, b, oa, ob


def _sgd_variants():
    for mom, nest, wd, damp, mx in itertools.product(
        [0.0, 0.9], [False, True], [0.0, 1e-2], [0.0, 0.1], [False, True]
    ):
        if nest and (mom == 0 or damp) or (mx and wd and damp):
            continue
        yield dict(lr=0.05, momentum=mom, nesterov=nest, weight_decay=wd, dampening=damp, maximize=mx)


def _adam_variants():
    for ams, wd, mx, b1 in itertools.product([False, True], [0.0, 1e-2], [False, True], [0.9, 0.3]):
        if ams and mx and b1 == 0.3:
            continue
        yield dict(lr=1e-2, betas=(b1, 0.999), amsgrad=ams, weight_decay=wd, maximize=mx)


def _assert_bitwise(a, b):
    for x, y in zip(a, b):
        assert torch.equal(x, y), float((x - y).abs().max())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sgd_without_penalty_is_bitwise_torch(dtype):
    for kw in _sgd_variants():
        a, b, oa, ob = _run_both(ProxSGD, torch.optim.SGD, kw, dtype, steps=10)
        _assert_bitwise(a, b)
        if kw["momentum"]:
            for x, y in zip(a, b):
                assert torch.equal(oa.state[x]["momentum_buffer"], ob.state[y]["momentum_buffer"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("ours,theirs", [(ProxAdam, torch.optim.Adam), (ProxAdamW, torch.optim.AdamW)])
def test_adam_without_penalty_is_bitwise_torch(dtype, ours, theirs):
    for kw in _adam_variants():
        a, b, oa, ob = _run_both(ours, theirs, kw, dtype, steps=10)
        _assert_bitwise(a, b)
        for x, y in zip(a, b):
            assert torch.equal(oa.state[x]["exp_avg_sq"], ob.state[y]["exp_avg_sq"])


@pytest.mark.parametrize("flag", [{"foreach": True}, {"foreach": False}, {"fused": True}])
@pytest.mark.parametrize("ours,theirs", [(ProxSGD, torch.optim.SGD), (ProxAdam, torch.optim.Adam)])
def test_foreach_and_fused_follow_torch(flag, ours, theirs):
    kw = dict(lr=0.05, momentum=0.9) if ours is ProxSGD else dict(lr=1e-2, weight_decay=1e-2)
    a, b, _, _ = _run_both(ours, theirs, dict(kw, **flag), torch.float32, steps=5)
    _assert_bitwise(a, b)


def test_zero_strength_penalty_is_torch_and_counts_zeros():
    a, b, oa, _ = _run_both(
        ProxAdam,
        torch.optim.Adam,
        dict(lr=1e-2),
        torch.float32,
        steps=3,
        ours_kw=dict(penalty=normreg.L1(0.0)),
    )
    _assert_bitwise(a, b)
    assert oa.last_stats is not None and oa.last_stats.numel == sum(p.numel() for p in a)


@pytest.mark.parametrize(
    "make,arg",
    [
        (lambda p: ProxAdam(p, lr="0.1"), "'lr'"),
        (lambda p: ProxSGD(p, lr=0.1, momentum="0.9"), "'momentum'"),
        (lambda p: ProxAdam(p, betas=0.9), "'betas'"),
        (lambda p: ProxAdam(p, betas=(0.9, "x")), "'betas"),
        (lambda p: ProxAdam(p, eps=None), "'eps'"),
        (lambda p: ProxAdamW(p, weight_decay="1e-2"), "'weight_decay'"),
        (lambda p: ProxAdam(p, amsgrad=1), "'amsgrad'"),
        (lambda p: ProxSGD(p, nesterov="yes"), "'nesterov'"),
        (lambda p: ProxAdam(p, foreach=1), "'foreach'"),
        (lambda p: ProxSGD(p, lr=torch.tensor(0.1)), "'lr'"),
    ],
)
def test_bad_argument_types_name_the_argument(make, arg):
    with pytest.raises(TypeError, match=arg):
        make([torch.zeros(3, requires_grad=True)])


@pytest.mark.parametrize(
    "make,arg",
    [
        (lambda p: ProxAdam(p, capturable=True), "'capturable"),
        (lambda p: ProxAdamW(p, differentiable=True), "'differentiable"),
        (lambda p: ProxSGD(p, differentiable=True), "'differentiable"),
        (lambda p: ProxAdam(p, foreach=True, fused=True), "'foreach' and 'fused'"),
        (lambda p: ProxAdam(p, lr=-1.0), "'lr'"),
    ],
)
def test_unsupported_switches_raise_value_error(make, arg):
    with pytest.raises(ValueError, match=arg):
        make([torch.zeros(3, requires_grad=True)])


@pytest.mark.parametrize("cls", [ProxSGD, ProxAdam, ProxAdamW])
@pytest.mark.parametrize("penalty", [None, normreg.L1(0.1)])
def test_step_bumps_versions_like_torch(cls, penalty):
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    y = (w * w).sum()
    w.grad = torch.ones(3)
    cls([w], lr=0.5, penalty=penalty).step()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


def _trained(cls, penalty, steps=3, **kw):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.Linear(4, 1))
    groups = normreg.param_groups(model, penalty) if penalty is not None else model.parameters()
    opt = cls(groups, lr=1e-2, **kw)
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(5, 6)).square().mean().backward()
        opt.step()
    return model, opt


def _roundtrip(sd):
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("cls", [ProxSGD, ProxAdam, ProxAdamW])
def test_state_dict_is_plain_and_weights_only_loadable(cls):
    kw = dict(momentum=0.9) if cls is ProxSGD else {}
    sched = SparsityController(0.5, schedule=Cosine(10))
    model, opt = _trained(cls, normreg.L1(1e-3) + normreg.SquaredL2(1e-3), penalty_schedule=sched, **kw)
    sd = _roundtrip(opt.state_dict())
    assert sd["param_groups"][0]["penalty"] == {
        "kind": "sum",
        "terms": [{"kind": "l1", "strength": 1e-3}, {"kind": "squared_l2", "strength": 1e-3}],
    }
    twin, opt2 = _trained(
        cls,
        normreg.L1(1e-3) + normreg.SquaredL2(1e-3),
        steps=0,
        penalty_schedule=SparsityController(0.5, schedule=Cosine(10)),
        **kw,
    )
    twin.load_state_dict(model.state_dict())
    penalty_obj = opt2.param_groups[0]["penalty"]
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["penalty"] is penalty_obj  # the same spec: the constructor's object is kept
    assert opt2.penalty_schedule.factor == opt.penalty_schedule.factor
    x = torch.randn(5, 6)
    for m, o in ((model, opt), (twin, opt2)):
        o.zero_grad()
        m(x).square().mean().backward()
        o.step()
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)


def test_saved_penalty_spec_is_rebuilt_when_it_differs():
    _, opt = _trained(ProxAdam, normreg.L1(1e-3), steps=1)
    opt.param_groups[0]["penalty"] = normreg.ElasticNet(2e-3, 1e-3)
    sd = _roundtrip(opt.state_dict())
    _, opt2 = _trained(ProxAdam, normreg.L1(1e-3), steps=0)
    opt2.load_state_dict(sd)
    p = opt2.param_groups[0]["penalty"]
    assert isinstance(p, normreg.ElasticNet) and (p.l1, p.l2) == (2e-3, 1e-3)


def test_penalty_spec_roundtrip_and_errors():
    for p in [
        normreg.L1(1e-4),
        normreg.GroupLasso(2e-3, dim=1),
        normreg.L0(1e-5),
        normreg.Linf(0.5),
        normreg.L1(1e-3) + normreg.L2Norm(1e-2),
    ]:
        spec = penalty_spec(p)
        assert penalty_spec(penalty_from_spec(spec)) == spec and repr(penalty_from_spec(spec)) == repr(p)
    assert penalty_spec(normreg.L1(1e-4)) == {"kind": "l1", "strength": 1e-4}
    assert isinstance(penalty_from_spec({"kind": "l1", "strength": 1e-4}), normreg.L1)
    # a spec saved before the strength was named 'strength' (optimizer state of older runs)
    assert penalty_from_spec({"kind": "group_lasso", "l": 2e-3, "dim": 1}).strength == 2e-3
    with pytest.raises(ValueError, match="unknown penalty kind"):
        penalty_from_spec({"kind": "l7"})
    w = torch.zeros(3, requires_grad=True)
    opt = ProxSGD([{"params": [w], "penalty": {"kind": "l1", "strength": 0.1}}], lr=1.0)
    assert isinstance(opt.param_groups[0]["penalty"], normreg.L1)


@pytest.mark.parametrize(
    "ours,theirs,kw",
    [
        (ProxSGD, torch.optim.SGD, dict(momentum=0.9, nesterov=True)),
        (ProxAdam, torch.optim.Adam, dict(amsgrad=True)),
        (ProxAdamW, torch.optim.AdamW, dict(weight_decay=0.1)),
    ],
)
def test_torch_state_dict_loads_both_ways(ours, theirs, kw):
    torch.manual_seed(0)
    ref_model = torch.nn.Linear(6, 3)

    def make(cls, **extra):
        m = torch.nn.Linear(6, 3)
        m.load_state_dict(ref_model.state_dict())
        return m, cls(m.parameters(), lr=1e-2, **kw, **extra)

    xs = [torch.randn(4, 6) for _ in range(6)]

    def steps(m, o, batch):
        for x in batch:
            o.zero_grad()
            m(x).square().mean().backward()
            o.step()

    # torch for 3 steps, then its state into normreg (with a penalty from the constructor), vs normreg throughout
    mt, ot = make(theirs)
    steps(mt, ot, xs[:3])
    mo, oo = make(ours, penalty=normreg.L1(1e-3))
    mo.load_state_dict(mt.state_dict())
    oo.load_state_dict(_roundtrip(ot.state_dict()))
    assert isinstance(oo.param_groups[0]["penalty"], normreg.L1)  # missing keys filled from the constructor
    steps(mo, oo, xs[3:])
    mr, orr = make(ours, penalty=normreg.L1(1e-3))
    mr.load_state_dict(mt.state_dict())
    orr.load_state_dict(copy.deepcopy(ot.state_dict()))  # not sharing state tensors with ot
    steps(mr, orr, xs[3:])
    for p, q in zip(mo.parameters(), mr.parameters()):
        assert torch.equal(p, q)
    # normreg (no penalty) for 3 steps, then its state into torch, vs torch throughout: bitwise
    mn, on = make(ours)
    steps(mn, on, xs[:3])
    mt2, ot2 = make(theirs)
    mt2.load_state_dict(mn.state_dict())
    ot2.load_state_dict(_roundtrip(on.state_dict()))
    steps(mt2, ot2, xs[3:])
    steps(mt, ot, xs[3:])
    for p, q in zip(mt2.parameters(), mt.parameters()):
        assert torch.equal(p, q)


def test_load_state_dict_rejects_other_group_counts():
    _, opt = _trained(ProxAdam, normreg.L1(1e-3), steps=1)  # two groups (weights / biases)
    _, other = _trained(ProxAdam, None, steps=1)
    with pytest.raises(ValueError, match="param groups"):
        other.load_state_dict(opt.state_dict())


def test_penalty_scheduler_with_lr_scheduler():
    lam, lr0 = 0.05, 0.1
    sched_fn = LinearWarmup(4)
    w = torch.nn.Parameter(torch.linspace(-1, 1, 11, dtype=torch.float64))
    opt = ProxSGD([w], lr=lr0, penalty=normreg.L1(lam))
    lrs = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    pen = PenaltyScheduler(opt, sched_fn)
    ref = w.detach().clone()
    for k in range(6):
        g = torch.full_like(ref, 0.1)
        w.grad = g.clone()
        lr, f = lr0 * 0.5 ** (k // 2), sched_fn(k)
        assert opt.param_groups[0]["lr"] == pytest.approx(lr) and pen.get_last_factor() == [f]
        opt.step()
        y = ref - lr * g
        ref = torch.sign(y) * torch.clamp(y.abs() - lr * lam * f, min=0)
        torch.testing.assert_close(w.detach(), ref, rtol=0, atol=1e-15)
        lrs.step()
        pen.step()
    state = _roundtrip(pen.state_dict())
    opt2 = ProxSGD([torch.nn.Parameter(w.detach().clone())], lr=lr0, penalty=normreg.L1(lam))
    pen2 = PenaltyScheduler(opt2, LinearWarmup(4))
    pen2.load_state_dict(state)
    assert pen2.last_step == pen.last_step and opt2.param_groups[0]["penalty_factor"] == sched_fn(6)


def test_penalty_scheduler_drives_a_sparsity_controller():
    w = torch.nn.Parameter(torch.randn(400, generator=torch.Generator().manual_seed(0)))
    opt = ProxSGD([w], lr=0.05, penalty=normreg.L1(1e-2))
    ctrl = SparsityController(target=0.5, gain=2.0)
    pen = PenaltyScheduler(opt, ctrl)
    for _ in range(3):
        w.grad = torch.zeros_like(w)
        opt.step()
        before = ctrl.factor
        pen.step()
        assert ctrl.last_fraction == opt.last_stats.fraction and ctrl.factor > before  # too few zeros: more λ
    with pytest.raises(TypeError, match="'optimizer'"):
        PenaltyScheduler(torch.optim.SGD([w], lr=0.1), ctrl)
    with pytest.raises(TypeError, match="'schedule'"):
        PenaltyScheduler(opt, 3)


@pytest.mark.parametrize("dtype,lr", [(torch.bfloat16, 2.0**-140), (torch.float16, 2.0**-26)])
@pytest.mark.parametrize("cls", [ProxSGD, ProxAdam])
def test_zero_count_is_of_stored_values(dtype, lr, cls):
    # the update lr * 1 is a nonzero float32 below half the dtype's smallest subnormal:
    # it is stored as 0, and the stats count it as a zero
    w = torch.zeros(64, dtype=dtype, requires_grad=True)
    w.grad = -torch.ones_like(w)
    opt = cls([w], lr=lr, penalty=normreg.L1(1e-30))
    opt.step()
    assert int((w.detach() == 0).sum()) == 64
    assert opt.last_stats.total_zeros == 64
