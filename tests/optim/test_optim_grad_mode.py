"""normreg.optim with ``penalty_mode="grad"``: the penalty's gradient inside the fused
optimizer pass. One step must equal ``penalty.add_grad_(params)`` followed by the same
optimizer without a penalty (bitwise: same operations, same rounding), and, through that,
torch.optim after adding an independently computed subgradient; ``.grad`` stays untouched."""

from __future__ import annotations

import copy

import pytest
import torch

import normreg
from normreg.optim import Cosine, ProxAdam, ProxAdamW, ProxSGD

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
SHAPES = [(70000,), (33, 17), (5,), ()]  # one multi-chunk tensor, one 0-dim


def make(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    ps = [torch.randn(s, generator=g, dtype=torch.float64).to(dtype).requires_grad_() for s in SHAPES]
    with torch.no_grad():
        ps[1][0, :5] = 0.0  # exact zeros: the subgradient there is 0
    return ps


def grads(params, step):
    g = torch.Generator().manual_seed(100 + step)
    return [(0.1 * torch.randn(p.shape, generator=g, dtype=torch.float64)).to(p.dtype) for p in params]


TOL = {
    torch.float32: dict(rtol=1e-5, atol=1e-6),
    torch.float64: dict(rtol=1e-12, atol=1e-13),
    torch.bfloat16: dict(rtol=3e-2, atol=1e-2),
    torch.float16: dict(rtol=3e-2, atol=1e-2),
}
PENALTIES = {
    "l1": lambda: normreg.L1(3e-2),
    "sq": lambda: normreg.SquaredL2(0.5),
    "en": lambda: normreg.ElasticNet(2e-2, 0.3),
    "sum": lambda: normreg.L1(1e-2) + normreg.SquaredL2(0.2),
}
OPTS = {
    "sgd": (ProxSGD, dict(lr=0.05)),
    "sgd-nesterov-wd": (ProxSGD, dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=1e-2)),
    "sgd-max": (ProxSGD, dict(lr=0.05, momentum=0.9, maximize=True)),
    "adam": (ProxAdam, dict(lr=1e-2)),
    "adam-wd-ams": (ProxAdam, dict(lr=1e-2, weight_decay=0.1, amsgrad=True)),
    "adamw-max": (ProxAdamW, dict(lr=1e-2, maximize=True)),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64", "bf16", "f16"])
@pytest.mark.parametrize("pen", list(PENALTIES))
@pytest.mark.parametrize("opt", list(OPTS))
def test_grad_mode_equals_add_grad_then_step(opt, pen, dtype):
    cls, kw = OPTS[opt]
    if cls is not ProxSGD and dtype is torch.float16:
        pytest.skip(
            "torch's float16 Adam rounds after every op (eps=1e-8 is below float16's range): no peer to match"
        )
    a = make(dtype)
    b = [p.detach().clone().requires_grad_() for p in a]
    oa = cls(a, penalty=PENALTIES[pen](), penalty_mode="grad", **kw)
    ob = cls(b, **kw)
    penalty = PENALTIES[pen]()
    for k in range(4):
        gs = grads(a, k)
        for p, q, g in zip(a, b, gs):
            p.grad, q.grad = g.clone(), g.clone()
        oa.step()
        penalty.add_grad_(b)
        ob.step()
        for p, g in zip(a, gs):
            assert torch.equal(p.grad, g)  # the fused pass leaves .grad as it was
        for p, q in zip(a, b):
            if cls is ProxSGD:  # the unpenalized step is the same fused kernel: bitwise
                assert torch.equal(p, q), f"step {k}"
            else:  # the unpenalized Adam step is torch's own (MKL sqrt, per-op rounding in bf16/f16)
                torch.testing.assert_close(p, q, **TOL[dtype], msg=f"step {k}")
    st = oa.last_stats  # zeros of the weights after the step, counted in the same pass
    assert st.numel == sum(p.numel() for p in a)
    assert st.zeros == [int((p == 0).sum()) for p in a]


@pytest.mark.parametrize("cls,torch_cls", [(ProxAdam, torch.optim.Adam), (ProxSGD, torch.optim.SGD)])
def test_grad_mode_l1_against_torch_optim_and_an_independent_subgradient(cls, torch_cls):
    # the independent reference: torch.optim after grad += l * sign(w) (torch.sign: 0 at 0)
    lam = 1e-2
    a = make(torch.float64)
    b = [p.detach().clone().requires_grad_() for p in a]
    oa = cls(a, lr=1e-2, penalty=normreg.L1(lam), penalty_mode="grad")
    ob = torch_cls(b, lr=1e-2)
    for k in range(20):
        for p, q, g in zip(a, b, grads(a, k)):
            p.grad = g.clone()
            q.grad = g + lam * torch.sign(q.detach())
        oa.step()
        ob.step()
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


def test_grad_mode_with_a_non_affine_penalty_is_add_grad_then_step():
    pen = normreg.GroupLasso(5e-2, dim=0) + normreg.L1(1e-2)
    a = [torch.randn(8, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64).requires_grad_()]
    b = [a[0].detach().clone().requires_grad_()]
    oa = ProxAdam(a, lr=1e-2, penalty=pen, penalty_mode="grad")
    ob = ProxAdam(b, lr=1e-2)
    for k in range(5):
        g = grads(a, k)[0]
        a[0].grad, b[0].grad = g.clone(), g.clone()
        oa.step()
        pen.add_grad_(b)
        ob.step()
        assert torch.equal(a[0].grad, g)
        # ob has no penalty, so its step is torch's own Adam (bitwise torch.optim.Adam); oa's is
        # normreg's kernel, which on an AVX-512 CPU (torch's AVX-512 kernels) can differ by an ulp
        torch.testing.assert_close(a[0], b[0], rtol=0, atol=4 * torch.finfo(torch.float64).eps)


def test_grad_mode_follows_the_schedule_and_mixes_with_prox_groups():
    ps = make(torch.float32)
    ref = [p.detach().clone().requires_grad_() for p in ps]
    pen = normreg.L1(1e-2)
    opt = ProxAdam(
        [{"params": ps[:2], "penalty": pen, "penalty_mode": "grad"}, {"params": ps[2:], "penalty": pen}],
        lr=1e-2,
        penalty_schedule=Cosine(10),
    )
    plain = ProxAdam(
        [{"params": ref[:2]}, {"params": ref[2:], "penalty": pen}], lr=1e-2, penalty_schedule=Cosine(10)
    )
    sched = Cosine(10)
    for k in range(4):
        gs = grads(ps, k)
        for p, q, g in zip(ps, ref, gs):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        pen.scaled(sched(k)).add_grad_(ref[:2])
        plain.step()
        for i, (p, q) in enumerate(zip(ps, ref)):
            if i < 2:  # the plain group's step is torch's Adam (MKL sqrt): equal to rounding
                torch.testing.assert_close(p, q, **TOL[torch.float32])
            else:
                assert torch.equal(p, q)


@pytest.mark.parametrize(
    "make_opt,match",
    [
        (lambda ps: ProxAdam(ps, penalty=normreg.L0(1e-3), penalty_mode="grad"), "no gradient"),
        (
            lambda ps: ProxSGD(ps, penalty=normreg.L1(1e-3) + normreg.L0(1e-3), penalty_mode="grad"),
            "no gradient",
        ),
        (
            lambda ps: ProxAdam(ps, penalty=normreg.L1(1e-3), penalty_mode="grad", precondition_prox=True),
            "precondition",
        ),
        (lambda ps: ProxAdam(ps, penalty=normreg.L1(1e-3), penalty_mode="gradient"), "'prox' or 'grad'"),
        (lambda ps: ProxAdam([{"params": ps, "penalty_mode": "loss"}]), "'prox' or 'grad'"),
    ],
)
def test_grad_mode_bad_arguments(make_opt, match):
    with pytest.raises(ValueError, match=match):
        make_opt([torch.zeros(3, requires_grad=True)])


def test_grad_mode_state_dict_round_trip():
    ps = make(torch.float32)
    opt = ProxAdam(ps, lr=1e-2, penalty=normreg.L1(1e-2), penalty_mode="grad")
    for p, g in zip(ps, grads(ps, 0)):
        p.grad = g
    opt.step()
    qs = [p.detach().clone().requires_grad_() for p in ps]
    opt2 = ProxAdam(qs, lr=1e-2, penalty=normreg.L1(1e-2), penalty_mode="grad")
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))  # torch loads state tensors without copying
    assert opt2.param_groups[0]["penalty_mode"] == "grad"
    for p, q, g in zip(ps, qs, grads(ps, 1)):
        p.grad, q.grad = g.clone(), g.clone()
    opt.step()
    opt2.step()
    for p, q in zip(ps, qs):
        assert torch.equal(p, q)
