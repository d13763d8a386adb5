"""torch.compile(fullgraph=True) of a whole GAN training step: G and D forward, both
backward passes, a normreg penalty and ``normreg.losses.l1_loss`` in G's loss, ProxAdam
(with a prox penalty) for G and ProxAdam (unpenalized: torch's own Adam inside) for D;
equal to the same step run eagerly, over several steps.

``loss.backward()`` inside a compiled function is traced only with
``torch._dynamo.config.trace_autograd_ops = True`` (torch 2.13's default is a graph break on
``Tensor.backward``), and ``torch.optim.Adam.step`` itself always breaks the graph
(``torch.optim.optimizer._use_grad_for_differentiable`` calls ``torch._dynamo.graph_break()``
on purpose): neither is normreg's. normreg's optimizers trace without a break.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import normreg
from normreg import _ops
from normreg.optim import ProxAdam


def _gan(seed=0):
    torch.manual_seed(seed)
    G = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1), nn.Tanh())
    D = nn.Sequential(nn.Conv2d(6, 8, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(8, 1, 4, 2, 1))
    og = ProxAdam(G.parameters(), lr=2e-2, betas=(0.5, 0.999), penalty=normreg.L1(5e-2))
    od = ProxAdam(D.parameters(), lr=2e-3, betas=(0.5, 0.999))
    return G, D, og, od


def _train_step(G, D, og, od, pen):
    def step(x, y):
        fake = G(x)
        for p in D.parameters():
            p.grad = None
        real_logit = D(torch.cat([x, y], 1))
        fake_logit = D(torch.cat([x, fake.detach()], 1))
        d_loss = F.binary_cross_entropy_with_logits(real_logit, torch.ones_like(real_logit))
        d_loss = d_loss + F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit))
        d_loss.backward()
        od.step()
        for p in G.parameters():
            p.grad = None
        out = D(torch.cat([x, fake], 1))
        g_loss = F.binary_cross_entropy_with_logits(out, torch.ones_like(out))
        g_loss = g_loss + 10.0 * normreg.losses.l1_loss(fake, y) + pen.value(list(G.parameters()))
        g_loss.backward()
        og.step()
        return d_loss.detach(), g_loss.detach(), og.last_stats.total_zeros

    return step


@pytest.mark.slow
def test_compiled_gan_step_equals_eager():
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)) for _ in range(4)]
    pen = normreg.SquaredL2(1e-2)
    eager, comp = _gan(), _gan()
    eager_step, comp_step = _train_step(*eager, pen), _train_step(*comp, pen)
    for step in (eager_step, comp_step):  # the first step creates the state (eagerly, through the
        with _ops.dispatcher_only():  # operators: step counts kept as tensors, as under compile)
            step(*batches[0])
    compiled = torch.compile(comp_step, fullgraph=True, backend="aot_eager")
    zeros = []
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        for x, y in batches[1:]:
            de, ge, ze = eager_step(x, y)
            dc, gc, zc = compiled(x, y)
            torch.testing.assert_close(dc, de, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(gc, ge, rtol=1e-5, atol=1e-6)
            assert int(zc) == ze
            zeros.append(ze)
    assert zeros[-1] > 0  # the prox made exact zeros, in both
    for net_e, net_c in zip(eager[:2], comp[:2]):
        for a, b in zip(net_e.parameters(), net_c.parameters()):
            torch.testing.assert_close(b.detach(), a.detach(), rtol=1e-5, atol=1e-6)
    for a, b in zip(eager[0].parameters(), comp[0].parameters()):
        assert torch.equal(a == 0, b == 0)
    for opt_e, opt_c in zip(eager[2:], comp[2:]):
        for pe, pc in zip(opt_e.state.values(), opt_c.state.values()):
            assert float(pe["step"]) == float(pc["step"]) == 4.0
            torch.testing.assert_close(pc["exp_avg"], pe["exp_avg"], rtol=1e-5, atol=1e-6)


# ---- total variation as an operator ------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
@pytest.mark.parametrize("kind", ["anisotropic", "isotropic"])
def test_total_variation_direct_and_operator_bitwise_equal(kind, reduction):
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    outs = {}
    for path in ("direct", "dispatcher"):
        with _ops.dispatcher_only(path == "dispatcher"):
            xi = x.clone().requires_grad_()
            v = normreg.losses.total_variation(xi, kind=kind, reduction=reduction)
            v.backward(torch.linspace(0.5, 1.5, v.numel(), dtype=v.dtype).reshape(v.shape))
            outs[path] = (v.detach(), xi.grad)
    for a, b in zip(outs["direct"], outs["dispatcher"]):
        assert torch.equal(a, b)
    with _ops.force_reference():
        xi = x.clone().requires_grad_()
        v = normreg.losses.total_variation(xi, kind=kind, reduction=reduction)
        v.backward(torch.linspace(0.5, 1.5, v.numel(), dtype=v.dtype).reshape(v.shape))
    torch.testing.assert_close(v.detach(), outs["direct"][0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(xi.grad, outs["direct"][1], rtol=1e-12, atol=1e-12)


def test_total_variation_compiles_meta_and_func():
    torch._dynamo.reset()
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    f = torch.compile(
        lambda t: normreg.losses.total_variation(t, kind="isotropic"), fullgraph=True, backend="aot_eager"
    )
    out = f(x)
    (g_c,) = torch.autograd.grad(out, [x])
    eager = normreg.losses.total_variation(x, kind="isotropic")
    (g_e,) = torch.autograd.grad(eager, [x])
    torch.testing.assert_close(out, eager)
    torch.testing.assert_close(g_c, g_e)
    m = normreg.losses.total_variation(torch.empty(4, 3, 8, 8, device="meta"), reduction="none")
    assert m.device.type == "meta" and m.shape == (4,)
    xd = x.detach().double()
    g_f = torch.func.grad(lambda t: normreg.losses.total_variation(t))(xd)
    g_r = torch.autograd.grad(normreg._reference.total_variation(xd.requires_grad_()), [xd])[0]
    torch.testing.assert_close(g_f, g_r, rtol=1e-12, atol=1e-12)
