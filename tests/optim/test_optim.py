"""normreg.optim: with no penalty the optimizers follow torch.optim over many steps; with a
penalty they match the float64 reference step (update, then prox); param groups,
schedules, the sparsity controller, state_dict, LR schedulers, closures, a lasso solved
against scikit-learn, determinism and bad hyperparameters."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import normreg
from normreg import _reference as ref
from normreg.optim import Constant, Cosine, LinearWarmup, ProxAdam, ProxAdamW, ProxSGD, SparsityController

SHAPES = [(33, 17), (300,), (5,), ()]  # one 0-dim tensor; multi-chunk tensors: see the thread test


def make_params(dtype, seed=0, shapes=SHAPES):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64).to(dtype).requires_grad_() for s in shapes]


def grads_for(params, step, scale=1.0):
    g = torch.Generator().manual_seed(1000 + step)
    return [(torch.randn(p.shape, generator=g, dtype=torch.float64) * scale).to(p.dtype) for p in params]


def rel_err(a, b) -> float:
    """max |a - b| / max |b| over a tensor (0 for empty / all-zero b and equal a)."""
    a, b = a.detach().double(), b.detach().double()
    if a.numel() == 0:
        return 0.0
    den = float(b.abs().max())
    return float((a - b).abs().max()) / (den if den > 0 else 1.0)


def run_pair(ours_cls, torch_cls, kw, dtype, steps=50, ours_kw=None):
    a = make_params(dtype)
    b = [p.detach().clone().requires_grad_() for p in a]
    oa = ours_cls(a, **kw, **(ours_kw or {}))
    ob = torch_cls(b, **kw)
    for k in range(steps):
        for p, q, g in zip(a, b, grads_for(a, k)):
            p.grad = g.clone()
            q.grad = g.clone()
        oa.step()
        ob.step()
    return a, b, oa, ob


SGD_CASES = {
    "plain": dict(lr=0.01),
    "momentum": dict(lr=0.01, momentum=0.9),
    "dampening": dict(lr=0.01, momentum=0.9, dampening=0.3),
    "nesterov": dict(lr=0.01, momentum=0.8, nesterov=True),
    "wd": dict(lr=0.01, momentum=0.5, weight_decay=1e-2),
    "maximize": dict(lr=0.01, momentum=0.9, maximize=True),
}
ADAM_CASES = {
    "default": dict(lr=1e-3),
    "betas": dict(lr=1e-2, betas=(0.5, 0.9), eps=1e-6),
    "big_beta1": dict(lr=1e-2, betas=(0.3, 0.99)),  # lerp weight >= 0.5 branch
    "wd": dict(lr=1e-3, weight_decay=0.1),
    "amsgrad": dict(lr=1e-2, amsgrad=True),
    "maximize": dict(lr=1e-3, maximize=True),
}
TOL = {torch.float32: 1e-6, torch.float64: 1e-13}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", list(SGD_CASES))
def test_prox_sgd_matches_torch_sgd(case, dtype):
    a, b, oa, ob = run_pair(ProxSGD, torch.optim.SGD, SGD_CASES[case], dtype)
    for p, q in zip(a, b):
        assert rel_err(p, q) <= TOL[dtype]
    if SGD_CASES[case].get("momentum"):
        for p, q in zip(a, b):
            assert rel_err(oa.state[p]["momentum_buffer"], ob.state[q]["momentum_buffer"]) <= 10 * TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", list(ADAM_CASES))
@pytest.mark.parametrize("cls", ["adam", "adamw"])
def test_prox_adam_matches_torch_adam(cls, case, dtype):
    ours, theirs = (ProxAdam, torch.optim.Adam) if cls == "adam" else (ProxAdamW, torch.optim.AdamW)
    a, b, oa, ob = run_pair(ours, theirs, ADAM_CASES[case], dtype)
    for p, q in zip(a, b):
        assert rel_err(p, q) <= TOL[dtype]
        assert rel_err(oa.state[p]["exp_avg"], ob.state[q]["exp_avg"]) <= 10 * TOL[dtype]
        assert rel_err(oa.state[p]["exp_avg_sq"], ob.state[q]["exp_avg_sq"]) <= 10 * TOL[dtype]
        assert oa.state[p]["step"] == float(ob.state[q]["step"])


def test_zero_strength_penalty_is_no_penalty():
    kw = dict(lr=1e-2)
    a, b, _, _ = run_pair(
        ProxAdam,
        torch.optim.Adam,
        kw,
        torch.float32,
        steps=20,
        ours_kw=dict(penalty=normreg.L1(0.0) + normreg.SquaredL2(0.0)),
    )
    for p, q in zip(a, b):
        assert rel_err(p, q) <= 1e-6


# ---- with a penalty: the reference step ----------------------------------------------------

PEN = {
    "l1": (normreg.L1(0.5), 1, lambda lr: (lr * 0.5, 0.0)),
    "enet": (normreg.ElasticNet(0.5, 2.0), 1, lambda lr: (lr * 0.5, lr * 2.0)),
    "l0": (normreg.L0(0.02), 2, lambda lr: (lr * 0.02, 0.0)),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=["f32", "f64", "bf16"])
@pytest.mark.parametrize("pen", list(PEN))
@pytest.mark.parametrize(
    "kw", [dict(momentum=0.0), dict(momentum=0.9, nesterov=True)], ids=["plain", "nesterov"]
)
def test_prox_sgd_penalized_matches_reference(kw, pen, dtype):
    penalty, kind, ab = PEN[pen]
    lr = 0.05
    a = make_params(dtype, shapes=[(40, 30), (7,)])
    b = [p.detach().clone() for p in a]
    bufs = [None, None]
    opt = ProxSGD(a, lr=lr, penalty=penalty, **kw)
    pa, pb = ab(lr)
    for k in range(5):
        gs = grads_for(a, k)
        for p, g in zip(a, gs):
            p.grad = g
        opt.step()
        zeros = ref.sgd_step_(
            b,
            gs,
            bufs,
            lr=lr,
            momentum=kw["momentum"],
            nesterov=kw.get("nesterov", False),
            prox_kind=kind,
            prox_a=pa,
            prox_b=pb,
        ).tolist()
        tol = 1e-2 if dtype == torch.bfloat16 else (1e-5 if dtype == torch.float32 else 1e-12)
        for p, q in zip(a, b):
            torch.testing.assert_close(p.detach().double(), q.double(), rtol=tol, atol=tol)
        if dtype == torch.float64:
            assert opt.last_stats.zeros == zeros
        assert opt.last_stats.zeros == [int((p == 0).sum()) for p in a]
    assert opt.last_stats.total_zeros > 0


@pytest.mark.parametrize("pre", [False, True], ids=["plain", "preconditioned"])
@pytest.mark.parametrize("pen", list(PEN))
@pytest.mark.parametrize("cls", ["adam", "adamw"])
def test_prox_adam_penalized_matches_reference(cls, pen, pre):
    penalty, kind, ab = PEN[pen]
    lr = 0.05
    a = make_params(torch.float64, shapes=[(40, 30), (7,)])
    b = [p.detach().clone() for p in a]
    ms, vs = [torch.zeros_like(q) for q in b], [torch.zeros_like(q) for q in b]
    Opt = ProxAdam if cls == "adam" else ProxAdamW
    opt = Opt(a, lr=lr, penalty=penalty, precondition_prox=pre, weight_decay=0.01)
    pa, pb = ab(lr)
    for k in range(5):
        gs = grads_for(a, k)
        for p, g in zip(a, gs):
            p.grad = g
        opt.step()
        zeros = ref.adam_step_(
            b,
            gs,
            ms,
            vs,
            [],
            [k + 1] * 2,
            lr=lr,
            beta1=0.9,
            beta2=0.999,
            eps=1e-8,
            weight_decay=0.01,
            decoupled=cls == "adamw",
            prox_kind=kind,
            prox_a=pa,
            prox_b=pb,
            preconditioned=pre,
        ).tolist()
        for p, q in zip(a, b):
            torch.testing.assert_close(p.detach(), q, rtol=1e-12, atol=1e-12)
        assert opt.last_stats.zeros == zeros
    assert opt.last_stats.total_zeros > 0


def test_adam_l1_equals_torch_adam_then_softshrink():
    lr, lam = 1e-2, 0.3
    a = make_params(torch.float32, shapes=[(50, 20)])
    b = [p.detach().clone().requires_grad_() for p in a]
    oa = ProxAdam(a, lr=lr, penalty=normreg.L1(lam))
    ob = torch.optim.Adam(b, lr=lr)
    for k in range(30):
        for p, q, g in zip(a, b, grads_for(a, k)):
            p.grad, q.grad = g.clone(), g.clone()
        oa.step()
        ob.step()
        with torch.no_grad():
            for q in b:
                q.copy_(F.softshrink(q, lr * lam))
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "penalty",
    [
        normreg.GroupLasso(2.0, dim=0),
        normreg.L1(0.1) + normreg.GroupLasso(2.0, dim=1),
        normreg.L2Norm(3.0),
        normreg.Linf(5.0),
    ],
    ids=["group", "sgl", "l2norm", "linf"],
)
def test_non_separable_penalty_is_update_then_prox(penalty):
    lr = 0.1
    a = make_params(torch.float64, shapes=[(12, 8)])
    b = [p.detach().clone().requires_grad_() for p in a]
    oa = ProxSGD(a, lr=lr, momentum=0.9, penalty=penalty)
    ob = torch.optim.SGD(b, lr=lr, momentum=0.9)
    for k in range(5):
        for p, q, g in zip(a, b, grads_for(a, k)):
            p.grad, q.grad = g.clone(), g.clone()
        oa.step()
        ob.step()
        with torch.no_grad():
            want = penalty.prox_(b, lr)
        for p, q in zip(a, b):
            torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)
        assert oa.last_stats.zeros == want.zeros
    with pytest.raises(ValueError, match="precondition_prox"):
        ProxAdam(make_params(torch.float32, shapes=[(3, 3)]), penalty=penalty, precondition_prox=True)


def test_param_groups_carry_their_own_penalty():
    model = torch.nn.Sequential(torch.nn.Linear(10, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    groups = normreg.param_groups(model, normreg.L1(5.0))
    opt = ProxSGD(groups, lr=0.1)
    x = torch.randn(16, 10)
    model(x).square().mean().backward()
    biases = [p.detach().clone() for n, p in model.named_parameters() if n.endswith("bias")]
    opt.step()
    # penalized weights: threshold 0.5 >> entries, so all exact zeros; biases/BN moved by SGD only
    for n, p in model.named_parameters():
        if n in ("0.weight", "2.weight"):
            assert torch.count_nonzero(p) == 0
    assert opt.group_stats[0].total_zeros == 8 * 10 + 2 * 8 and opt.group_stats[1] is None
    assert opt.last_stats == opt.group_stats[0]
    assert any(
        not torch.equal(b, p)
        for b, p in zip(biases, [p for n, p in model.named_parameters() if n.endswith("bias")])
    )
    # a default penalty applies to groups without the key
    w = torch.nn.Parameter(torch.full((4,), 0.01))
    opt2 = ProxSGD([{"params": [w]}], lr=1.0, penalty=normreg.L1(0.1))
    w.grad = torch.zeros(4)
    opt2.step()
    assert torch.count_nonzero(w) == 0


def test_params_without_grad_are_skipped_and_zero_grad():
    a = make_params(torch.float32, shapes=[(4,), (3,)])
    before = a[1].detach().clone()
    opt = ProxAdam(a, lr=0.1, penalty=normreg.L1(0.01))
    a[0].grad = torch.ones(4)
    opt.step()
    assert torch.equal(a[1], before) and a[1] not in opt.state
    assert opt.last_stats.numel == 4
    opt.zero_grad(set_to_none=True)
    assert all(p.grad is None for p in a)
    opt.step()  # nothing to do
    assert opt.last_stats is None


def test_closure_returns_loss():
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = ProxSGD([w], lr=0.1, penalty=normreg.L1(0.1))

    def closure():
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert float(loss.detach()) == pytest.approx(5.0)
    torch.testing.assert_close(w.detach(), torch.tensor([0.79, -1.59]))  # w - 0.1*2w, then soft(0.01)


# ---- schedules, controller, state_dict, LR schedulers -------------------------------------


def test_builtin_schedules():
    assert Constant(0.5)(123) == 0.5
    s = LinearWarmup(10, start=0.2)
    assert [s(0), s(5), s(10), s(50)] == pytest.approx([0.2, 0.6, 1.0, 1.0])
    c = Cosine(100)
    assert [c(0), c(50), c(100), c(500)] == pytest.approx([0.0, 0.5, 1.0, 1.0])
    d = Cosine(100, start=1.0, end=0.1)
    assert [d(0), d(100)] == pytest.approx([1.0, 0.1])


def test_schedule_scales_the_penalty():
    lr, lam = 0.1, 0.2
    sched = LinearWarmup(4)
    a = make_params(torch.float64, shapes=[(30,)])
    b = [p.detach().clone().requires_grad_() for p in a]
    oa = ProxSGD(a, lr=lr, penalty=normreg.L1(lam), penalty_schedule=sched)
    ob = ProxSGD(b, lr=lr)
    for k in range(6):
        for p, q, g in zip(a, b, grads_for(a, k)):
            p.grad, q.grad = g.clone(), g.clone()
        oa.step()
        ob.step()
        with torch.no_grad():
            normreg.L1(lam * sched(k)).prox_(b, lr)
        torch.testing.assert_close(a[0], b[0], rtol=0, atol=1e-15)
    # any callable works
    oc = ProxSGD(
        make_params(torch.float32, shapes=[(3,)]),
        lr=0.1,
        penalty=normreg.L1(1.0),
        penalty_schedule=lambda k: 0.0,
    )
    assert oc.penalty_factor() == 0.0


def test_sparsity_controller_reaches_target():
    torch.manual_seed(0)
    X = torch.randn(200, 50, dtype=torch.float64)
    w_true = torch.zeros(50, dtype=torch.float64)
    w_true[:10] = torch.randn(10, dtype=torch.float64) * 3
    y = X @ w_true + 0.1 * torch.randn(200, dtype=torch.float64)
    w = torch.nn.Parameter(torch.zeros(50, dtype=torch.float64))
    ctrl = SparsityController(target=0.6, gain=2.0, initial=1.0)
    opt = ProxSGD([w], lr=0.05, penalty=normreg.L1(1e-3), penalty_schedule=ctrl)
    fracs = []
    for _ in range(600):
        opt.zero_grad()
        (0.5 * (X @ w - y).square().mean()).backward()
        opt.step()
        fracs.append(opt.last_stats.fraction)
    assert abs(sum(fracs[-100:]) / 100 - 0.6) <= 0.05
    assert ctrl.factor > 1.0  # it had to raise λ to get there
    assert ctrl.last_fraction == fracs[-1]


@pytest.mark.parametrize("cls", [ProxSGD, ProxAdam, ProxAdamW])
def test_state_dict_round_trip(cls, tmp_path):
    kw = dict(lr=0.05, momentum=0.9) if cls is ProxSGD else dict(lr=0.05, amsgrad=True)

    def build(params):
        ctrl = SparsityController(0.5, schedule=Cosine(10, start=0.5, end=1.0))
        return cls(params, penalty=normreg.L1(0.05), penalty_schedule=ctrl, **kw)

    a = make_params(torch.float32, shapes=[(20, 5), (5,)])
    opt = build(a)
    for k in range(4):
        for p, g in zip(a, grads_for(a, k)):
            p.grad = g
        opt.step()
    torch.save({"opt": opt.state_dict(), "params": [p.detach().clone() for p in a]}, tmp_path / "ckpt.pt")
    ck = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    b = [p.clone().requires_grad_() for p in ck["params"]]
    opt_b = build(b)
    opt_b.load_state_dict(ck["opt"])
    assert opt_b._prox_step == 4 and opt_b.penalty_schedule.factor == opt.penalty_schedule.factor
    for k in range(4, 8):
        gs = grads_for(a, k)
        for p, q, g in zip(a, b, gs):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        opt_b.step()
    for p, q in zip(a, b):
        assert torch.equal(p, q)
    assert opt.penalty_schedule.factor == opt_b.penalty_schedule.factor
    # and the copy is independent of the original
    assert opt_b.state_dict()["prox"]["step"] == 8


def test_lr_scheduler_drives_lr_and_threshold():
    a = make_params(torch.float64, shapes=[(10,)])
    b = [p.detach().clone().requires_grad_() for p in a]
    oa = ProxSGD(a, lr=0.1, momentum=0.5)
    ob = torch.optim.SGD(b, lr=0.1, momentum=0.5)
    sa = torch.optim.lr_scheduler.StepLR(oa, step_size=2, gamma=0.5)
    sb = torch.optim.lr_scheduler.StepLR(ob, step_size=2, gamma=0.5)
    for k in range(6):
        for p, q, g in zip(a, b, grads_for(a, k)):
            p.grad, q.grad = g.clone(), g.clone()
        oa.step()
        ob.step()
        sa.step()
        sb.step()
    torch.testing.assert_close(a[0], b[0], rtol=1e-14, atol=1e-14)
    assert oa.param_groups[0]["lr"] == pytest.approx(0.0125)
    # the threshold follows the scheduled lr
    w = torch.nn.Parameter(torch.full((3,), 1.0, dtype=torch.float64))
    opt = ProxSGD([w], lr=1.0, penalty=normreg.L1(0.1))
    opt.param_groups[0]["lr"] = 0.5
    w.grad = torch.zeros(3, dtype=torch.float64)
    opt.step()
    torch.testing.assert_close(w.detach(), torch.full((3,), 0.95, dtype=torch.float64))


# ---- a lasso against scikit-learn ------------------------------------------------------------


def test_lasso_matches_sklearn():
    """sklearn's Lasso minimizes 1/(2n)||y - Xw||^2 + alpha ||w||_1: with a data loss of
    0.5 * mean squared error the penalty is L1(alpha) (= L1.from_sklearn(alpha))."""
    sklearn = pytest.importorskip("sklearn.linear_model")
    g = torch.Generator().manual_seed(3)
    n, d = 60, 12
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    w_true = torch.zeros(d, dtype=torch.float64)
    w_true[:4] = torch.tensor([2.0, -3.0, 1.5, 0.5], dtype=torch.float64)
    y = X @ w_true + 0.3 * torch.randn(n, generator=g, dtype=torch.float64)
    alpha = 0.1
    sk = sklearn.Lasso(alpha=alpha, fit_intercept=False, tol=1e-12, max_iter=100_000).fit(
        X.numpy(), y.numpy()
    )
    w = torch.nn.Parameter(torch.zeros(d, dtype=torch.float64))
    L = float(torch.linalg.eigvalsh(X.T @ X / n).max())
    opt = ProxSGD([w], lr=1.0 / L, penalty=normreg.L1.from_sklearn(alpha))
    for _ in range(3000):  # ISTA: full-batch proximal gradient
        opt.zero_grad()
        (0.5 * (X @ w - y).square().mean()).backward()
        opt.step()
    assert torch.allclose(w.detach(), torch.from_numpy(sk.coef_), atol=1e-4, rtol=0)
    assert opt.last_stats.zeros[0] == int((torch.from_numpy(sk.coef_) == 0).sum())


# ---- determinism and bad input --------------------------------------------------------------


@pytest.mark.parametrize("cls", [ProxSGD, ProxAdam])
def test_step_bitwise_identical_for_any_thread_count(cls):
    outs = []
    try:
        for n in (1, 2, 3):
            normreg.set_num_threads(n)
            a = make_params(torch.float32, shapes=[(140_000,), (33, 17)])
            opt = cls(a, lr=0.01, penalty=normreg.ElasticNet(0.5, 0.1))
            for k in range(3):
                for p, g in zip(a, grads_for(a, k)):
                    p.grad = g
                opt.step()
            outs.append(([p.detach().clone() for p in a], opt.last_stats))
    finally:
        normreg.set_num_threads(0)
    for ps, s in outs[1:]:
        assert all(torch.equal(x, y) for x, y in zip(ps, outs[0][0])) and s == outs[0][1]


@pytest.mark.parametrize(
    "make,exc,arg",
    [
        (lambda p: ProxSGD(p, lr=-0.1), ValueError, "'lr'"),
        (lambda p: ProxSGD(p, lr=0.1, momentum=-1.0), ValueError, "'momentum'"),
        (lambda p: ProxSGD(p, lr=0.1, nesterov=True), ValueError, "'nesterov'"),
        (lambda p: ProxAdam(p, betas=(1.0, 0.9)), ValueError, "'betas'"),
        (lambda p: ProxAdam(p, eps=-1.0), ValueError, "'eps'"),
        (lambda p: ProxAdamW(p, weight_decay=-1.0), ValueError, "'weight_decay'"),
        (lambda p: ProxAdam(p, penalty="l1"), TypeError, "'penalty'"),
        (
            lambda p: ProxAdam(p, penalty=normreg.L1(0.1) + normreg.L0(0.1)),
            ValueError,
            "no exact closed form",
        ),
        (lambda p: ProxAdam(p, penalty_schedule=3), TypeError, "'penalty_schedule'"),
        (lambda p: SparsityController(target=1.5), ValueError, "'target'"),
        (lambda p: LinearWarmup(0), ValueError, "'warmup_steps'"),
    ],
)
def test_bad_hyperparameters(make, exc, arg):
    with pytest.raises(exc) as info:
        make(make_params(torch.float32, shapes=[(3,)]))
    assert arg in str(info.value)


def test_bad_params_raise_before_any_update():
    w = torch.nn.Parameter(torch.randn(4))
    nc = torch.nn.Parameter(torch.randn(4, 12)[:, ::2])  # gaps in memory: cannot be updated in place
    w0 = w.detach().clone()
    opt = ProxSGD([w, nc], lr=0.1, penalty=normreg.L1(0.1))
    w.grad, nc.grad = torch.ones(4), torch.ones(4, 6)
    with pytest.raises(ValueError, match=r"'params'\[1\] .*has gaps"):
        opt.step()
    assert torch.equal(w.detach(), w0)
    gl = torch.nn.Parameter(torch.randn(5, 3))
    opt = ProxSGD([{"params": [w]}, {"params": [gl], "penalty": normreg.GroupLasso(0.1, dim=0)}], lr=0.1)
    bad = torch.nn.Parameter(torch.randn(5))
    opt.add_param_group({"params": [bad], "penalty": normreg.GroupLasso(0.1, dim=1)})
    bad.grad, gl.grad = torch.ones(5), torch.ones(5, 3)
    with pytest.raises(ValueError, match="'dim'"):
        opt.step()
    assert torch.equal(w.detach(), w0)
    sched = ProxSGD([w], lr=0.1, penalty=normreg.L1(0.1), penalty_schedule=lambda k: -1.0)
    with pytest.raises(ValueError, match="'penalty_schedule'"):
        sched.step()
    assert torch.equal(w.detach(), w0)


def test_nan_gradient_propagates():
    w = torch.nn.Parameter(torch.tensor([1.0, 0.001, -2.0]))
    opt = ProxAdam([w], lr=0.1, penalty=normreg.L1(1.0))
    w.grad = torch.tensor([float("nan"), 0.0, 1.0])
    opt.step()
    assert torch.isnan(w[0]) and w[1] == 0 and not torch.isnan(w[2])
    assert opt.last_stats.total_zeros == 1


def test_deepcopy_keeps_working():
    a = make_params(torch.float32, shapes=[(6,)])
    opt = ProxAdam(a, lr=0.1, penalty=normreg.L1(0.1), penalty_schedule=Cosine(5))
    a[0].grad = torch.ones(6)
    opt.step()
    opt2 = copy.deepcopy(opt)
    assert opt2._prox_step == 1 and isinstance(opt2.penalty_schedule, Cosine)


@pytest.mark.parametrize("cls", [ProxSGD, ProxAdam])
def test_loaded_state_that_does_not_fit_is_refused(cls):
    kw = dict(lr=0.1, momentum=0.9) if cls is ProxSGD else dict(lr=0.1)
    a = [torch.nn.Parameter(torch.ones(3))]
    opt = cls(a, **kw)
    a[0].grad = torch.ones(3)
    opt.step()
    b = [torch.nn.Parameter(torch.ones(5))]
    opt_b = cls(b, **kw)
    opt_b.load_state_dict(opt.state_dict())
    b[0].grad = torch.ones(5)
    with pytest.raises(ValueError, match="state of param 0"):
        opt_b.step()
    assert torch.equal(b[0].detach(), torch.ones(5))
