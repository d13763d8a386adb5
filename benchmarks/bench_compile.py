"""A torch.compile'd GAN training step with normreg (penalty value, l1_loss, ProxAdam's
fused prox; one fullgraph graph) against the same step in plain torch (explicit ridge term,
F.l1_loss, torch's Adam, soft threshold): see normreg.bench.compiled_step. Both are checked
to agree before timing. Compiling takes seconds with aot_eager and minutes with inductor on
a small machine: this benchmark runs only with ``--compile`` (``--compile-backend``
picks the backend, default inductor)."""

from __future__ import annotations

import pytest

from normreg.bench.compiled_step import prepare_compiled_steps


@pytest.fixture(scope="module")
def compiled_steps(request):
    if not request.config.getoption("--compile"):
        pytest.skip("the compiled training step runs with --compile")
    backend = request.config.getoption("--compile-backend")
    steps, inputs, _ = prepare_compiled_steps(backend=backend)
    return steps, inputs


@pytest.mark.benchmark(group="compiled-gan-step")
@pytest.mark.parametrize("impl", ["normreg", "torch"])
def test_compiled_gan_step(benchmark, compiled_steps, impl):
    steps, (x, y) = compiled_steps
    benchmark.pedantic(lambda: steps[impl](x, y), rounds=20, iterations=1, warmup_rounds=2)
