"""A compiled GAN training step with normreg against the same step in plain torch.

Both steps train the same small image-to-image GAN (conv generator G, patch discriminator D,
conditional on the input) from the same weights on the same batch:

``normreg``
    G's loss: adversarial + ``normreg.losses.l1_loss`` reconstruction +
    ``normreg.SquaredL2(L2).value(G weights)``; G trained by ``ProxAdam`` with the prox of
    ``normreg.L1(L1)`` fused into its update, D by ``ProxAdam`` without a penalty; the whole
    step (both forward and backward passes and both optimizer steps) is one
    ``torch.compile(fullgraph=True)`` graph.
``torch``
    the same losses with ``F.l1_loss`` and ``(L2 / 2) * sum(w * w)``, ``torch.optim.Adam``
    for both, then the soft threshold ``w - clamp(w, -lr L1, lr L1)`` on G's weights (the same
    proximal step); compiled without ``fullgraph``, since ``torch.optim.Adam.step`` breaks
    the graph on purpose (``torch.optim.optimizer._use_grad_for_differentiable``).

normreg's step compiles with ``torch._dynamo.config.trace_autograd_ops = True`` (otherwise
``loss.backward()`` ends a graph in torch 2.13); torch's compiles as torch users compile it
(graphs end at ``backward()`` and at ``Adam.step``; with ``trace_autograd_ops`` dynamo fails
on the resume after Adam.step's graph break: "'D' not in cell_and_freevars"). Before timing, both run the same steps from
the same state and must agree (parameters within float tolerance); then the two run
interleaved, ``reps`` times each after warm-up, and the best time of each is kept.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.adam import adam as _torch_adam

import normreg
from normreg.optim import ProxAdam

__all__ = ["measure_compiled_step", "prepare_compiled_steps", "format_compiled_step"]

L1, L2, LR = 1e-3, 1e-3, 2e-3


def _nets(width: int, seed: int):
    torch.manual_seed(seed)
    G = nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, 3, 3, padding=1), nn.Tanh(),
    )  # fmt: skip
    D = nn.Sequential(nn.Conv2d(6, width, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(width, 1, 4, 2, 1))
    return G, D


def _weights(G: nn.Module) -> list[torch.Tensor]:
    return [p for p in G.parameters() if p.dim() > 1]


def _normreg_step(width: int, seed: int):
    G, D = _nets(width, seed)
    w = _weights(G)
    rest = [p for p in G.parameters() if p.dim() <= 1]
    og = ProxAdam([{"params": w, "penalty": normreg.L1(L1)}, {"params": rest}], lr=LR, betas=(0.5, 0.999))
    od = ProxAdam(D.parameters(), lr=LR, betas=(0.5, 0.999))
    ridge = normreg.SquaredL2(L2)

    def step(x, y):
        fake = G(x)
        for p in D.parameters():
            p.grad = None
        real_logit, fake_logit = D(torch.cat([x, y], 1)), D(torch.cat([x, fake.detach()], 1))
        d_loss = F.binary_cross_entropy_with_logits(real_logit, torch.ones_like(real_logit))
        d_loss = d_loss + F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit))
        d_loss.backward()
        od.step()
        for p in G.parameters():
            p.grad = None
        out = D(torch.cat([x, fake], 1))
        g_loss = F.binary_cross_entropy_with_logits(out, torch.ones_like(out))
        g_loss = g_loss + 10.0 * normreg.losses.l1_loss(fake, y) + ridge.value(w)
        g_loss.backward()
        og.step()
        return g_loss.detach()

    return step, (G, D)


class _Adam:
    """torch's Adam (``torch.optim.adam.adam``, the functional update behind
    torch.optim.Adam, single-tensor) on state kept here, as torch.optim.Adam keeps it
    (moments, float32 step tensors). torch.optim.Adam.step itself cannot be in one graph:
    its decorator calls ``torch._dynamo.graph_break()`` on purpose, and the undecorated step
    fails in dynamo with "optimizer: pending mutation on parameter" after ``p.grad = None``."""

    def __init__(self, params) -> None:
        self.params = list(params)
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.steps = [torch.zeros((), dtype=torch.float32) for _ in self.params]

    def step(self) -> None:
        with torch.no_grad():
            _torch_adam(
                self.params, [p.grad for p in self.params], self.m, self.v, [], self.steps, foreach=False,
                capturable=False, differentiable=False, fused=None, grad_scale=None, found_inf=None,
                has_complex=False, amsgrad=False, beta1=0.5, beta2=0.999, lr=LR, weight_decay=0.0, eps=1e-8,
                maximize=False,
            )  # fmt: skip


class _TorchStep:
    """The plain-torch step. The models are attributes, not closure cells: dynamo's resume
    function after Adam.step's graph break fails on a closure ("'G' not in cell_and_freevars")."""

    def __init__(self, width: int, seed: int) -> None:
        self.G, self.D = _nets(width, seed)
        self.w = _weights(self.G)
        self.og, self.od = _Adam(self.G.parameters()), _Adam(self.D.parameters())
        self.tau = LR * L1

    def step(self, x, y):
        G, D = self.G, self.D
        fake = G(x)
        for p in D.parameters():
            p.grad = None
        real_logit, fake_logit = D(torch.cat([x, y], 1)), D(torch.cat([x, fake.detach()], 1))
        d_loss = F.binary_cross_entropy_with_logits(real_logit, torch.ones_like(real_logit))
        d_loss = d_loss + F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit))
        d_loss.backward()
        self.od.step()
        for p in self.G.parameters():
            p.grad = None
        out = self.D(torch.cat([x, fake], 1))
        g_loss = F.binary_cross_entropy_with_logits(out, torch.ones_like(out))
        ridge = 0.0
        for p in self.w:
            ridge = ridge + (p * p).sum()
        g_loss = g_loss + 10.0 * F.l1_loss(fake, y) + (0.5 * L2) * ridge
        g_loss.backward()
        self.og.step()
        with torch.no_grad():
            for p in self.w:
                p.sub_(p.clamp(-self.tau, self.tau))
        return g_loss.detach()


def _torch_step(width: int, seed: int):
    s = _TorchStep(width, seed)
    return s.step, (s.G, s.D)


def _traced_backward(fn):
    """``fn`` run with dynamo tracing ``loss.backward()`` into the graph."""

    def run(*args):
        with torch._dynamo.config.patch(trace_autograd_ops=True):
            return fn(*args)

    return run


def prepare_compiled_steps(
    *, batch: int = 8, size: int = 16, width: int = 16, warmup: int = 2, backend: str = "inductor"
) -> tuple[dict, tuple, dict]:
    """``(steps, (x, y), compile_s)``: both variants compiled and run ``max(warmup, 2)`` steps
    from the same weights on the same batch, checked to agree (AssertionError otherwise);
    ``steps[name](x, y)`` runs one more step."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=g)
    y = torch.randn(batch, 3, size, size, generator=g).tanh()
    made = {"normreg": _normreg_step(width, 0), "torch": _torch_step(width, 0)}
    compiled, compile_s = {}, {}
    n = max(warmup, 2)
    for name, (fn, _) in made.items():
        t = time.perf_counter()
        c = _traced_backward(torch.compile(fn, fullgraph=True, backend=backend))
        for _ in range(n):  # compiles (and recompiles once the optimizer state exists)
            c(x, y)
        compile_s[name] = time.perf_counter() - t
        compiled[name] = c
    ours = [p for m in made["normreg"][1] for p in m.parameters()]
    theirs = [p for m in made["torch"][1] for p in m.parameters()]
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if not torch.allclose(a.detach(), b.detach(), rtol=1e-4, atol=1e-5):
            diff = float((a - b).abs().max())
            raise AssertionError(
                f"compiled training step: normreg and torch disagree on parameter {i} after {n} steps "
                f"(max |diff| {diff:.3g}); a wrong implementation is never timed"
            )
    return compiled, (x, y), compile_s


def measure_compiled_step(
    *,
    batch: int = 8,
    size: int = 16,
    width: int = 16,
    warmup: int = 2,
    reps: int = 10,
    backend: str = "inductor",
) -> dict:
    """Best seconds per compiled step of each variant (see the module doc), after checking
    that both compute the same training run."""
    t0 = time.perf_counter()
    compiled, (x, y), compile_s = prepare_compiled_steps(
        batch=batch, size=size, width=width, warmup=warmup, backend=backend
    )
    best = {k: float("inf") for k in compiled}
    for _ in range(reps):
        for name, c in compiled.items():
            t = time.perf_counter()
            c(x, y)
            best[name] = min(best[name], time.perf_counter() - t)
    return {
        "backend": backend,
        "batch": batch,
        "size": size,
        "width": width,
        "reps": reps,
        "best_s": best,
        "compile_s": compile_s,
        "speedup": best["torch"] / best["normreg"],
        "seconds": time.perf_counter() - t0,
    }


def format_compiled_step(r: dict) -> str:
    """A short table of :func:`measure_compiled_step`'s result."""
    if "skipped" in r:
        return f"compiled training step: skipped ({r['skipped']})"
    lines = [
        f"compiled training step (torch.compile backend={r['backend']}, GAN on {r['batch']}x3x{r['size']}x{r['size']}, "
        f"width {r['width']}; both agree before timing):",
        f"  normreg (fullgraph)  {r['best_s']['normreg'] * 1e3:8.2f} ms   (compile {r['compile_s']['normreg']:.1f} s)",
        f"  plain torch          {r['best_s']['torch'] * 1e3:8.2f} ms   (compile {r['compile_s']['torch']:.1f} s)",
        f"  speed-up of normreg  {r['speedup']:.2f}x",
    ]
    return "\n".join(lines)
