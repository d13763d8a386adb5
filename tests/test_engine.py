"""The engine: dtype load/store, determinism across threads, accuracy, one OpenMP runtime."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
from conftest import num_threads

import normreg
from normreg._bridge import tensor_list
from normreg.bench import make_workload

KINDS = [
    normreg.L1(0.3),
    normreg.SquaredL2(0.7),
    normreg.ElasticNet(0.3, 0.7),
    normreg.L2Norm(0.5),
    normreg.Linf(0.9),
    normreg.L0(0.2),
    normreg.GroupLasso(0.4),
]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
def test_half_types_computed_in_float_and_rounded_once_to_nearest_even(dtype):
    # values spanning normal, subnormal (f16), overflow and ties
    x = torch.cat(
        [
            torch.randn(20000) * 10.0 ** torch.randint(-9, 6, (20000,)).float(),
            torch.tensor([0.0, -0.0, 65504.0, 65520.0, 1e6, 6e-8, 3e-8, 1e-7, float("inf"), -float("inf")]),
        ]
    )
    w = x.to(dtype)
    for l in [1.0, 0.7, 1.3e-3, 3.1]:  # noqa: E741
        got = normreg.SquaredL2(l).grad([w])[0]  # l * w computed in float32, stored once
        want = (w.float() * torch.tensor(l, dtype=torch.float32)).to(dtype)  # torch rounds RNE
        nz = want != 0  # bitwise on nonzeros; a zero may come out as +0 where torch gives -0
        assert torch.equal(got[nz].view(torch.int16), want[nz].view(torch.int16)), l
        assert (got[~nz] == 0).all()
    nan = torch.tensor([float("nan")], dtype=dtype)
    assert torch.isnan(normreg.SquaredL2(1.0).grad([nan])[0]).all()


@pytest.mark.parametrize("pen", KINDS, ids=repr)
def test_bitwise_identical_for_1_and_2_threads(pen):
    ts = make_workload("dcgan") if not isinstance(pen, normreg.GroupLasso) else make_workload("dcgan")[:1]
    ts += [torch.randn(3 * 65536 + 5)]
    with num_threads(1):
        v1 = float(pen.value(ts))
        g1 = pen.grad(ts) if not isinstance(pen, normreg.L0) else []
    with num_threads(2):
        v2 = float(pen.value(ts))
        g2 = pen.grad(ts) if not isinstance(pen, normreg.L0) else []
    assert v1 == v2
    assert all(torch.equal(a, b) for a, b in zip(g1, g2))


@pytest.mark.parametrize("order", ["big_then_small", "interleaved"])
def test_work_balanced_split_gives_the_same_results_for_any_thread_count(order):
    # The engine splits the chunks of a list by elements, not by count (100 big tensors then
    # 100 biases would leave one thread idle); who computes a chunk must not change a bit.
    g = torch.Generator().manual_seed(3)
    big = [torch.randn(70_001, generator=g) for _ in range(12)]
    small = [torch.randn(257, generator=g) for _ in range(12)]
    ts = big + small if order == "big_then_small" else [t for pair in zip(big, small) for t in pair]
    pen = normreg.ElasticNet(0.3, 0.7) + normreg.GroupLasso(0.1, dim=0)
    results = []
    for n in (1, 2, 3):
        with num_threads(n):
            w = [t.clone() for t in ts]
            v = float(pen.value(w))
            gr = pen.grad(w)
            normreg.L1(0.5).prox_(w, 0.1)
            results.append((v, gr, w))
    want = sum(float(t.double().abs().sum()) * 0.3 + 0.35 * float((t.double() ** 2).sum()) for t in ts)
    want += 0.1 * sum(float(t.double().abs().sum()) for t in ts)  # groups along dim 0 of 1-D: |w_i|
    assert math.isclose(results[0][0], want, rel_tol=1e-6)
    for v, gr, w in results[1:]:
        assert v == results[0][0]
        assert all(torch.equal(a, b) for a, b in zip(gr, results[0][1]))
        assert all(torch.equal(a, b) for a, b in zip(w, results[0][2]))


def test_value_of_1e8_float32_elements_within_1e6_of_float64():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(100_000_000, generator=g) + 0.25  # all positive: errors cannot cancel
    want_abs = float(x.double().abs().sum())
    want_sq = float((x.double() ** 2).sum())
    # the float the kernel returns (the 0-dim float32 tensor of .value() rounds it once more)
    tl = tensor_list([x])
    assert math.isclose(normreg.L1(1.0)._value(tl), want_abs, rel_tol=1e-6)
    assert math.isclose(normreg.SquaredL2(2.0)._value(tl), want_sq, rel_tol=1e-6)
    assert math.isclose(float(normreg.L1(1.0).value([x])), want_abs, rel_tol=1e-6)


def test_one_openmp_runtime_after_import():
    code = (
        "import normreg, torch, re\n"
        "normreg.L1(1.0).value([torch.randn(300000)])\n"
        "libs = set()\n"
        "for line in open('/proc/self/maps'):\n"
        "    p = line.split()[-1]\n"
        "    if re.search(r'lib(g|i)?omp[^/]*\\.so', p): libs.add(p)\n"
        "print(len(libs)); print(sorted(libs))\n"
    )
    if not os.path.exists("/proc/self/maps"):
        pytest.skip("needs /proc (Linux)")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[0] == "1", out[1]


def test_thread_count_follows_torch_unless_set():
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert normreg.get_num_threads() == 1
        assert normreg._C.get_num_threads() == 1
        normreg.set_num_threads(2)
        assert normreg.get_num_threads() == 2 and normreg._C.get_num_threads() == 2
        normreg.set_num_threads(None)
        assert normreg.get_num_threads() == 1
    finally:
        torch.set_num_threads(old)
        normreg.set_num_threads(0)


def test_build_info_reports_openmp_and_flags():
    info = normreg.build_info()
    assert info["openmp"] is True
    assert "-O3" in info["cxx_flags"]
    assert info["threads"] == normreg.get_num_threads()
    assert info["version"] == normreg.__version__


def test_info_command_runs():
    out = subprocess.run(
        [sys.executable, "-m", "normreg", "info"], capture_output=True, text=True, check=True
    ).stdout
    assert "openmp" in out and "cxx_flags" in out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["f32", "bf16", "f16"])
def test_float_block_partials_stay_within_1e6_of_float64(dtype):
    # The value kernels add a few float terms before each float64 accumulation. Measure the
    # error where it is largest: heavy-tailed magnitudes (8 decades), sizes that leave every
    # kind of tail, against the float64 sum of the very same (upcast) values.
    g = torch.Generator().manual_seed(5)
    for n in (1, 63, 64, 65, 1000, 65_537, 300_001):
        mag = torch.exp(torch.randn(n, generator=g, dtype=torch.float64) * 4.0).clamp(max=6e4)
        x = (mag * torch.sign(torch.randn(n, generator=g, dtype=torch.float64))).to(dtype)
        xd = x.double()
        tl = tensor_list([x])
        assert math.isclose(normreg.L1(1.0)._value(tl), float(xd.abs().sum()), rel_tol=1e-6), n
        assert math.isclose(normreg.SquaredL2(2.0)._value(tl), float((xd**2).sum()), rel_tol=1e-6), n


def test_c_stub_names_exactly_what_the_extension_exports():
    # python/normreg/_C.pyi (type checkers and editors read it) must not go stale
    import ast
    from pathlib import Path

    stub = Path(normreg.__file__).with_name("_C.pyi")
    tree = ast.parse(stub.read_text())
    declared = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    exported = {n for n in dir(normreg._C) if not n.startswith("_")}
    assert declared == exported, (sorted(declared - exported), sorted(exported - declared))
