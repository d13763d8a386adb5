"""normreg inside PyTorch: registered operators, version counters, layouts, aliasing,
torch.compile, torch.func, meta tensors, and threads across fork."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import DTYPE_IDS, DTYPES

import normreg
from normreg import _ops
from normreg import prox as P

PENALTIES = [
    normreg.L1(0.3),
    normreg.SquaredL2(0.7),
    normreg.ElasticNet(0.2, 0.5),
    normreg.L2Norm(0.4),
    normreg.GroupLasso(0.3, dim=0),
    normreg.GroupLasso(0.3, dim=1),
    normreg.Linf(0.5),
    normreg.L1(0.1) + normreg.GroupLasso(0.2, dim=0),
]
PEN_IDS = ["l1", "sql2", "enet", "l2norm", "group0", "group1", "linf", "sgl"]


def _params(dtype=torch.float32):
    g = torch.Generator().manual_seed(3)
    shapes = [(5, 4, 3, 3), (7, 6), (6, 5)]
    return [torch.randn(s, generator=g).to(dtype) for s in shapes]


def test_every_op_is_registered():
    names = {
        "penalty_value",
        "penalty_grad",
        "penalty_add_grad_",
        "prox_shrink_",
        "prox_hard_",
        "project_box_",
        "prox_l2_norm_",
        "prox_group_",
        "prox_linf_",
        "project_l2_ball_",
        "project_l1_ball_",
        "pointwise_loss",
        "sgd_step_",
        "adam_step_",
        "total_variation",
        "total_variation_backward",
    }
    for n in names:
        assert hasattr(torch.ops.normreg, n), n


# ---- version counters and requires-grad leaves -----------------------------------------------


def test_prox_bumps_version_and_autograd_refuses_stale_graph():
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    y = (w * w).sum()
    v0 = w._version
    with torch.no_grad():
        normreg.L1(0.5).prox_([w], 1.0)
    assert w._version > v0
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


@pytest.mark.parametrize("path", ["direct", "dispatcher"])
def test_every_inplace_op_bumps_versions(path):
    ops = [
        lambda ts: P.soft_threshold_(ts, 0.1, 0.5),
        lambda ts: P.ridge_shrink_(ts, 0.1, 0.5),
        lambda ts: P.elastic_net_(ts, 0.1, 0.5, 0.5),
        lambda ts: P.hard_threshold_(ts, 0.1, 0.5),
        lambda ts: P.group_soft_threshold_(ts, 0.1, 0.5, dim=0),
        lambda ts: P.l2_norm_prox_(ts, 0.1, 0.5),
        lambda ts: P.linf_prox_(ts, 0.1, 0.5),
        lambda ts: P.project_box_(ts, -0.5, 0.5),
        lambda ts: P.project_l2_ball_(ts, 1.0),
        lambda ts: P.project_linf_ball_(ts, 1.0),
        lambda ts: P.project_l1_ball_(ts, 1.0),
    ]
    with _ops.dispatcher_only(path == "dispatcher"):
        for op in ops:
            ts = _params()
            before = [t._version for t in ts]
            op(ts)
            assert all(t._version > b for t, b in zip(ts, before))


@pytest.mark.parametrize("path", ["direct", "dispatcher"])
def test_add_grad_bumps_grad_versions(path):
    ps = [p.requires_grad_() for p in _params()]
    for p in ps:
        p.grad = torch.zeros_like(p)
    before = [p.grad._version for p in ps]
    with _ops.dispatcher_only(path == "dispatcher"):
        normreg.L1(0.1).add_grad_(ps)
    assert all(p.grad._version > b for p, b in zip(ps, before))


def test_inplace_on_requires_grad_leaf_refused_outside_no_grad():
    w = torch.nn.Parameter(torch.randn(4))
    before = w.detach().clone()
    with pytest.raises(RuntimeError, match="no_grad"):
        normreg.L1(0.1).prox_([w], 1.0)
    with pytest.raises(RuntimeError, match="no_grad"):
        P.soft_threshold_(w, 1.0, 0.1)
    assert torch.equal(w.detach(), before)
    with torch.no_grad():
        normreg.L1(0.1).prox_([w], 1.0)  # the supported way


# ---- the direct path and the operators agree bitwise -----------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("pen", PENALTIES, ids=PEN_IDS)
def test_direct_and_dispatcher_bitwise_equal(pen, dtype):
    outs = {}
    for path in ("direct", "dispatcher"):
        with _ops.dispatcher_only(path == "dispatcher"):
            ps = [p.requires_grad_() for p in _params(dtype)]
            v = pen.value(ps)
            v.backward()
            g = pen.grad(ps)
            for p in ps:
                p.grad = None
            a = pen.add_grad_(ps)
            q = [p.detach().clone() for p in ps]
            with torch.no_grad():
                st = pen.prox_(q, 0.3)
            outs[path] = (v.detach(), [p.grad.clone() for p in ps], g, a, q, st.zeros)
    d, o = outs["direct"], outs["dispatcher"]
    assert torch.equal(d[0], o[0]) and d[0].dtype == o[0].dtype
    for x, y in zip(d[2], o[2]):
        assert torch.equal(x, y)
    for x, y in zip(d[1], o[1]):
        assert torch.equal(x, y)
    assert d[3] == o[3]
    for x, y in zip(d[4], o[4]):
        assert torch.equal(x, y)
    assert d[5] == o[5]


def test_reference_backend_agrees_with_kernels():
    for pen in PENALTIES:
        ps = _params(torch.float64)
        v_k = pen.value(ps)
        q_k = [p.clone() for p in ps]
        pen.prox_(q_k, 0.3)
        with _ops.force_reference():
            v_r = pen.value(ps)
            q_r = [p.clone() for p in ps]
            pen.prox_(q_r, 0.3)
        torch.testing.assert_close(v_k, v_r, rtol=1e-12, atol=0)
        for a, b in zip(q_k, q_r):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)


# ---- layouts ---------------------------------------------------------------------------------


def _conv_net_channels_last():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3))
    return net.to(memory_format=torch.channels_last)


@pytest.mark.parametrize("pen", PENALTIES[:7], ids=PEN_IDS[:7])
def test_channels_last_add_grad_and_prox_in_place(pen):
    net = _conv_net_channels_last()
    x = torch.randn(2, 3, 9, 9).to(memory_format=torch.channels_last)
    net(x).square().mean().backward()
    weights = [m.weight for m in net if isinstance(m, torch.nn.Conv2d)]
    assert all(not w.is_contiguous() and w.grad.stride() == w.stride() for w in weights)
    ref_w = [w.detach().contiguous() for w in weights]
    ref_g = [w.grad.contiguous().clone() for w in weights]
    storages = [w.grad.data_ptr() for w in weights]
    pen.add_grad_(weights)
    expect = pen.grad(ref_w)
    for w, g0, e, ptr in zip(weights, ref_g, expect, storages):
        assert w.grad.data_ptr() == ptr  # written in place, not into a copy
        torch.testing.assert_close(w.grad, g0 + e, rtol=1e-5, atol=1e-7)
    q = [r.clone() for r in ref_w]
    pen.prox_(q, 0.5)
    with torch.no_grad():
        pen.prox_(weights, 0.5)
    for w, e in zip(weights, q):
        torch.testing.assert_close(w.detach(), e, rtol=1e-6, atol=1e-7)


def test_transposed_param_and_missing_grad_layout():
    w = torch.nn.Parameter(torch.randn(5, 3).t())  # a transposed, non-contiguous leaf
    normreg.L1(0.5).add_grad_([w])
    assert w.grad.stride() == w.stride()
    torch.testing.assert_close(w.grad, 0.5 * torch.sign(w.detach()))
    g = torch.randn(3, 5)  # contiguous grad for a transposed param: layouts differ
    w.grad = g
    with pytest.raises(ValueError, match="same layout"):
        normreg.L1(0.5).add_grad_([w])
    assert torch.equal(w.grad, g)


def test_group_lasso_groups_follow_dim_for_any_layout():
    base = torch.randn(6, 4, 3, 3, dtype=torch.float64)
    for layout in (
        base.to(memory_format=torch.channels_last),
        base.permute(2, 3, 0, 1).contiguous().permute(2, 3, 0, 1),
    ):
        assert torch.equal(layout, base) and not layout.is_contiguous()
        for dim in range(4):
            pen = normreg.GroupLasso(0.7, dim=dim)
            torch.testing.assert_close(pen.value(layout), pen.value(base), rtol=1e-12, atol=0)
            for a, b in zip(pen.grad(layout), pen.grad(base)):
                torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)
            q, r = layout.clone(), base.clone()
            P.group_soft_threshold_(q, 1.0, 2.0, dim=dim)
            P.group_soft_threshold_(r, 1.0, 2.0, dim=dim)
            torch.testing.assert_close(q, r, rtol=1e-12, atol=1e-15)


def test_strided_slice_refused_in_place_and_read_by_copy():
    w = torch.randn(8, 6)
    view = w[:, ::2]
    before = w.clone()
    with pytest.raises(ValueError, match="gaps"):
        P.soft_threshold_(view, 1.0, 0.1)
    assert torch.equal(w, before)
    torch.testing.assert_close(normreg.L1(1.0).value(view), view.abs().sum())


def test_overlapping_views_refused():
    w = torch.randn(10)
    before = w.clone()
    for a, b in ((w[0:6], w[4:10]), (w[0:6], w[0:6]), (w, w[3:4])):
        with pytest.raises(ValueError, match="shares memory"):
            P.soft_threshold_([a, b], 1.0, 0.1)
        with pytest.raises(ValueError, match="shares memory"):
            normreg.L1(0.1).prox_([a, b], 1.0)
    assert torch.equal(w, before)
    P.soft_threshold_([w[0:5], w[5:10]], 1.0, 0.1)  # adjacent, not overlapping: fine


# ---- compile, func, meta ---------------------------------------------------------------------


def test_compile_fullgraph_penalty_value_grad_and_prox():
    torch._dynamo.reset()
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1))
    pen = normreg.ElasticNet(1e-2, 1e-2)
    x = torch.randn(8, 6)

    def step(x):
        loss = model(x).square().mean() + pen.value(list(model.parameters()))
        return loss

    eager = step(x)
    g_eager = torch.autograd.grad(eager, list(model.parameters()))
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    g_comp = torch.autograd.grad(out, list(model.parameters()))
    torch.testing.assert_close(out, eager)
    for a, b in zip(g_comp, g_eager):
        torch.testing.assert_close(a, b)

    def prox_step(ws):
        with torch.no_grad():
            st = normreg.L1(0.1).prox_(ws, 0.5)
        return st.total_zeros

    ws = [torch.randn(20), torch.randn(5, 4)]
    expect = [w.clone() for w in ws]
    normreg.L1(0.1).prox_(expect, 0.5)
    n = torch.compile(prox_step, fullgraph=True, backend="aot_eager")(ws)
    for a, b in zip(ws, expect):
        assert torch.equal(a, b)
    assert int(n) == sum(int((e == 0).sum()) for e in expect)


@pytest.mark.parametrize("pen", PENALTIES, ids=PEN_IDS)
def test_torch_func_grad_matches_autograd(pen):
    ps = _params(torch.float64)
    g_func = torch.func.grad(lambda ts: pen.value(ts))(ps)
    expect = pen.grad(ps)
    for a, b in zip(g_func, expect):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_vmap_of_a_value_works():
    w = torch.randn(3, 4, dtype=torch.float64)
    for pen in (normreg.L1(0.5), normreg.ElasticNet(0.2, 0.3), normreg.L2Norm(0.7)):
        batched = torch.func.vmap(lambda x, pen=pen: pen.value(x))(w)
        torch.testing.assert_close(batched, torch.stack([pen.value(r) for r in w]))


def test_meta_tensors():
    ps = [torch.empty(5, 4, device="meta"), torch.empty(3, device="meta", dtype=torch.float64)]
    v = normreg.L1(0.1).value(ps)
    assert v.device.type == "meta" and v.dtype == torch.float64 and v.shape == ()
    gs = normreg.SquaredL2(0.1).grad(ps)
    assert [g.shape for g in gs] == [p.shape for p in ps] and gs[0].device.type == "meta"
    st = normreg.L1(0.1).prox_(ps, 0.5)
    assert st.zeros.shape == (2,) and st.numel == 23
    w = torch.empty(4, 4, device="meta", requires_grad=True)
    normreg.L1(0.1).add_grad_([w])
    assert w.grad is not None and w.grad.device.type == "meta"


# ---- threads across fork ---------------------------------------------------------------------


def test_forked_dataloader_after_set_num_threads_does_not_hang():
    code = textwrap.dedent(
        """
        import torch, normreg
        normreg.set_num_threads(2)
        normreg.L1(1.0).value(torch.randn(1 << 18))  # the parent's team exists
        class D(torch.utils.data.Dataset):
            def __len__(self): return 4
            def __getitem__(self, i):
                return normreg.L1(1.0).value(torch.ones(1 << 18)) + normreg.get_num_threads() * 0
        dl = torch.utils.data.DataLoader(D(), num_workers=2, multiprocessing_context="fork")
        print(sum(float(x) for x in dl))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.strip()) == 4 * (1 << 18)


def test_optimizer_on_channels_last_conv_net_matches_contiguous():
    nets = [_conv_net_channels_last(), _conv_net_channels_last().to(memory_format=torch.contiguous_format)]
    nets[1].load_state_dict(nets[0].state_dict())
    opts = [normreg.optim.ProxAdam(n.parameters(), lr=1e-2, penalty=normreg.L1(3.0)) for n in nets]
    x = torch.randn(4, 3, 9, 9)
    for _ in range(3):
        for net, opt, inp in zip(nets, opts, (x.to(memory_format=torch.channels_last), x)):
            opt.zero_grad()
            net(inp).square().mean().backward()
            opt.step()
    w_cl, w_c = nets[0][0].weight, nets[1][0].weight
    assert not w_cl.is_contiguous() and w_c.is_contiguous()
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-6)
    assert int((w_cl == 0).sum()) == int((w_c == 0).sum()) > 0


def test_optimizer_transposed_param_with_contiguous_grad():
    a = torch.nn.Parameter(torch.randn(5, 3).t())
    b = torch.nn.Parameter(a.detach().contiguous())
    oa, ob = normreg.optim.ProxSGD([a], lr=0.1, momentum=0.9), torch.optim.SGD([b], lr=0.1, momentum=0.9)
    for _ in range(3):
        g = torch.randn(3, 5)
        a.grad, b.grad = g.clone(), g.clone()  # a's grad is contiguous, a is not
        oa.step()
        ob.step()
    torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-6, atol=1e-7)


def test_compile_fullgraph_add_grad_allocates_and_accumulates():
    torch._dynamo.reset()
    ps = [torch.nn.Parameter(torch.randn(3, 4, dtype=torch.float64)) for _ in range(3)]
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    pen = normreg.ElasticNet(0.1, 0.2)
    f = torch.compile(lambda: pen.add_grad_(ps), fullgraph=True, backend="aot_eager")
    v = f()  # .grad allocated inside the graph
    v = f()  # and accumulated
    want = pen.add_grad_(qs)
    want = pen.add_grad_(qs)
    assert float(v) == pytest.approx(want, rel=1e-12)
    for p, q in zip(ps, qs):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-12, atol=0)


# ---- the optimizer update passes as operators ------------------------------------------------

OPTIM_CASES = {
    "sgd-mom-l1": lambda ps: normreg.optim.ProxSGD(ps, lr=0.05, momentum=0.9, penalty=normreg.L1(0.3)),
    "sgd-nesterov-l0": lambda ps: normreg.optim.ProxSGD(
        ps, lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01, penalty=normreg.L0(0.01)
    ),
    "adam-enet": lambda ps: normreg.optim.ProxAdam(
        ps, lr=0.02, penalty=normreg.ElasticNet(0.5, 0.5), amsgrad=True
    ),
    "adam-pre": lambda ps: normreg.optim.ProxAdam(
        ps, lr=0.02, penalty=normreg.L1(0.5), precondition_prox=True
    ),
    "adamw-grad": lambda ps: normreg.optim.ProxAdamW(
        ps, lr=0.02, penalty=normreg.L1(0.2), penalty_mode="grad"
    ),
    "adam-group": lambda ps: normreg.optim.ProxAdam(ps, lr=0.02, penalty=normreg.GroupLasso(0.5, dim=0)),
}


def _run_optim(case, dtype, steps=3):
    ps = [torch.nn.Parameter(p) for p in _params(dtype)]
    opt = OPTIM_CASES[case](ps)
    g = torch.Generator().manual_seed(7)
    zeros = []
    for _ in range(steps):
        for p in ps:
            p.grad = torch.randn(p.shape, generator=g).to(dtype)
        opt.step()
        zeros.append(opt.last_stats.zeros)
    state = [
        {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in opt.state[p].items()} for p in ps
    ]
    return [p.detach().clone() for p in ps], state, zeros


def test_optimizer_ops_are_registered_with_their_mutations():
    for name, mutated in (
        ("sgd_step_", {"params", "momentum_buffers"}),
        ("adam_step_", {"params", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs"}),
    ):
        schema = getattr(torch.ops.normreg, name).default._schema
        written = {a.name for a in schema.arguments if a.alias_info is not None and a.alias_info.is_write}
        assert written == mutated, name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=["f32", "f64", "bf16"])
@pytest.mark.parametrize("case", list(OPTIM_CASES))
def test_optimizer_direct_and_dispatcher_bitwise_equal(case, dtype):
    direct = _run_optim(case, dtype)
    with _ops.dispatcher_only():
        disp = _run_optim(case, dtype)
    for a, b in zip(direct[0], disp[0]):
        assert torch.equal(a, b)
    for sa, sb in zip(direct[1], disp[1]):
        assert sa.keys() == sb.keys()
        for k in sa:
            if k == "step":
                assert float(sa[k]) == float(sb[k])
            else:
                assert torch.equal(sa[k], sb[k]), k
    assert direct[2] == disp[2]


@pytest.mark.parametrize("case", list(OPTIM_CASES))
def test_optimizer_reference_agrees_with_kernels(case):
    kern = _run_optim(case, torch.float64)
    with _ops.force_reference():
        refr = _run_optim(case, torch.float64)
    for a, b in zip(kern[0], refr[0]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    for sa, sb in zip(kern[1], refr[1]):
        for k in sa:
            torch.testing.assert_close(torch.as_tensor(sa[k]).double(), torch.as_tensor(sb[k]).double(), rtol=1e-12,
                                       atol=1e-14)  # fmt: skip
    assert kern[2] == refr[2]


@pytest.mark.parametrize("path", ["direct", "dispatcher"])
def test_optimizer_step_bumps_params_and_state(path):
    for case in ("sgd-mom-l1", "adam-enet"):
        ps = [torch.nn.Parameter(p) for p in _params()]
        opt = OPTIM_CASES[case](ps)
        for p in ps:
            p.grad = torch.ones_like(p)
        with _ops.dispatcher_only(path == "dispatcher"):
            opt.step()
            written = [p for p in ps] + [t for p in ps for k, t in opt.state[p].items() if k != "step"]
            before = [t._version for t in written]
            y = sum((p * p).sum() for p in ps)
            opt.step()
        assert all(t._version > b for t, b in zip(written, before))
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.backward()


def test_optimizer_op_refuses_bad_state_before_writing():
    ps = _params()
    before = [p.clone() for p in ps]
    gs = [torch.ones_like(p) for p in ps]
    bufs = [torch.zeros_like(p) for p in ps]
    bufs[1] = torch.zeros(3)
    with pytest.raises(ValueError, match="momentum_buffers"):
        torch.ops.normreg.sgd_step_(ps, gs, bufs, [True] * 3, 0.1, 0.9, 0.0, 0.0, False, False, 0, 0.0, 0.0)
    shared = torch.zeros_like(ps[0])
    with pytest.raises(ValueError, match="shares memory"):
        torch.ops.normreg.adam_step_(
            ps[:1], gs[:1], [shared], [shared], [], torch.ones(1), 0.1, 0.9, 0.99, 1e-8, 0.0, False, False, False,
            0, 0.0, 0.0, False,
        )  # fmt: skip
    for p, b in zip(ps, before):
        assert torch.equal(p, b)
