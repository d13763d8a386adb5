"""Shared test helpers: dtypes, tolerances, thread-count control.

The tests are laid out like the package (tests/optim, tests/gan, tests/study, ...; the
top level holds the core modules' tests). The helper modules beside this file
(_gan_util, dist_util, _fake_trainer) are imported by name from every folder.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import pytest
import torch

import normreg

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helper modules, for tests in sub-folders

# Under pytest-xdist (`-n auto`, the README's command) each worker gets its share of the cores
# as torch threads, so two workers on 2 cores do not fight over 4 threads; tests that need a
# thread count set it themselves (num_threads below).
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
if _workers > 1:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // _workers))

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
DTYPE_IDS = ["f32", "f64", "bf16", "f16"]

# relative tolerance of a value computed from inputs of each dtype (accumulated in double)
VALUE_RTOL = {torch.float32: 1e-6, torch.float64: 1e-12, torch.bfloat16: 1e-6, torch.float16: 1e-6}
# tolerance of an elementwise result stored in each dtype (rounded once)
ELEM_TOL = {
    torch.float32: dict(rtol=2e-6, atol=5e-7),
    torch.float64: dict(rtol=1e-12, atol=1e-14),
    torch.bfloat16: dict(rtol=8e-3, atol=1e-5),
    torch.float16: dict(rtol=1e-3, atol=1e-6),
}


@contextlib.contextmanager
def num_threads(n: int):
    """Run the kernels with exactly n threads."""
    old = normreg._C.thread_override()
    normreg.set_num_threads(n)
    try:
        yield
    finally:
        normreg.set_num_threads(old)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_thread_and_cache(monkeypatch, tmp_path_factory):
    """GAN tests (``pytestmark = pytest.mark.usefixtures("one_thread_and_cache")``): one torch thread (tiny models; the machine is shared) and a per-session cache folder."""
    monkeypatch.setenv("NORMREG_CACHE", str(tmp_path_factory.getbasetemp() / "normreg-cache"))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
