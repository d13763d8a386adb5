"""The bridge's C fast path (``_C.scan`` / ``_C.scan_grads``) against its Python slow path.

The scan must give exactly the kernel arguments the slow path gives, and hand every case
that is not plain back to the slow path (``None``), which raises the precise errors.
"""

from __future__ import annotations

import pytest
import torch

import normreg
from normreg import _bridge
from normreg._loader import _C

pytestmark = pytest.mark.skipif(not _bridge._SCAN, reason="the C scan is not available with this torch")


def _mixed():
    g = torch.Generator().manual_seed(0)
    return [
        torch.randn(3, 4, generator=g),
        torch.nn.Parameter(torch.randn(5, generator=g, dtype=torch.float64)),
        torch.randn(7, generator=g).to(torch.bfloat16),
        torch.randn(2, 2, generator=g).to(torch.float16),
        torch.empty(0),
    ]


def _slow(tensors):
    return (
        [t.data_ptr() for t in tensors],
        [t.numel() for t in tensors],
        [_bridge.DTYPE_CODES[t.dtype] for t in tensors],
    )


@pytest.mark.parametrize("inplace", [False, True])
def test_scan_matches_the_python_reading(inplace):
    ts = _mixed()
    ptrs, numels, codes, any_rg = _C.scan(ts, inplace, 1)
    assert (ptrs, numels, codes) == _slow(ts)
    assert any_rg is True  # the Parameter
    assert _C.scan([t.detach() for t in ts], inplace, 1)[3] is False
    assert _C.scan(ts, inplace, 2)[3] is False  # only one of them requires grad
    assert _C.scan([t.detach().requires_grad_() for t in ts], inplace, 2)[3] is True
    assert _C.scan(ts, inplace, 0)[3] is None
    assert _C.scan([], inplace, 2)[3] is True and _C.scan([], inplace, 1)[3] is False  # as all() / any()
    tl = _bridge.tensor_list(ts, inplace=inplace)
    assert (tl.ptrs, tl.numels, tl.dtypes) == _slow(ts) and tl.on_cpu


class _Sub(torch.Tensor):
    pass


@pytest.mark.parametrize(
    "odd",
    [
        lambda: torch.randn(4, 4).t(),  # not contiguous
        lambda: torch.arange(4),  # integer
        lambda: torch.randn(3, dtype=torch.complex64),
        lambda: torch.randn(3).as_subclass(_Sub),  # a subclass: its accessors may differ
        lambda: torch.empty(3, device="meta"),  # not on the CPU
        lambda: 3.0,  # not a tensor
    ],
)
def test_scan_hands_odd_tensors_to_the_slow_path(odd):
    ts = [torch.randn(2), odd()]
    assert _C.scan(ts, False, 1) is None


def test_scan_refuses_shared_memory_only_in_place():
    t = torch.randn(4)
    assert _C.scan([t, t], False, 0) is not None
    assert _C.scan([t, t], True, 0) is None
    with pytest.raises(ValueError, match=r"'params'\[1\] shares memory"):
        normreg.L1(1.0).prox_([t, t], 0.1)


def test_subclass_and_noncontiguous_still_give_the_reference_value():
    base = torch.randn(6, 5, dtype=torch.float64)
    ts = [base.t(), base.as_subclass(_Sub)]
    want = 2 * base.abs().sum().item()
    assert normreg.L1(1.0).value(ts).item() == pytest.approx(want, rel=1e-12)


def test_scan_grads():
    ps = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4))]
    tl = _bridge.tensor_list(ps)
    assert _C.scan_grads(tl.tensors, tl.numels, tl.dtypes) is None  # no grads yet
    for p in ps:
        p.grad = torch.randn_like(p)
    grads, gptrs = _C.scan_grads(tl.tensors, tl.numels, tl.dtypes)
    assert all(g is p.grad for g, p in zip(grads, ps))
    assert gptrs == [p.grad.data_ptr() for p in ps]
    # a param whose data was swapped for a larger tensor: its old grad no longer fits
    ps[1].data = torch.randn(8)
    tl = _bridge.tensor_list(ps)
    assert _C.scan_grads(tl.tensors, tl.numels, tl.dtypes) is None
    with pytest.raises(ValueError, match="grads"):
        normreg.L1(1.0).add_grad_(ps)
    # a sparse grad
    q = torch.nn.Parameter(torch.randn(4))
    q.grad = torch.randn(4).to_sparse()
    tl = _bridge.tensor_list([q])
    assert _C.scan_grads(tl.tensors, tl.numels, tl.dtypes) is None
    with pytest.raises(TypeError, match="sparse"):
        normreg.L1(1.0).add_grad_([q])


def test_torch_function_mode_is_respected():
    seen = []

    class Spy(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            seen.append(getattr(func, "__name__", str(func)))
            return func(*args, **(kwargs or {}))

    w = torch.randn(10, dtype=torch.float64)
    with Spy():
        v = normreg.L1(1.0).value([w])
    assert seen  # torch's accessors went through the mode, as attribute access does
    assert v.item() == pytest.approx(w.abs().sum().item(), rel=1e-12)


def test_kernel_argument_lists_read_fast_or_generic_alike():
    # The bindings read (ptrs, numels, dtypes) from exact lists of ints in a direct loop and
    # from any other sequence through pybind11's generic caster: same arguments, same value.
    ts = _mixed()
    tl = _bridge.tensor_list(ts)
    want = sum(t.double().abs().sum().item() for t in ts)
    fast = _C.penalty_value("l1", tl.ptrs, tl.numels, tl.dtypes, [1.0], [0.0])
    generic = _C.penalty_value("l1", tuple(tl.ptrs), tuple(tl.numels), tuple(tl.dtypes), [1.0], [0.0])
    assert fast == generic == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize(
    "bad",
    [
        lambda tl: (tl.ptrs, tl.numels, [0, 7]),  # dtype code out of range: the binding's own check
        lambda tl: (tl.ptrs, [1, -1], tl.dtypes),  # negative numel: the binding's own check
        lambda tl: ([-1, tl.ptrs[1]], tl.numels, tl.dtypes),  # negative pointer: refused by the caster
        lambda tl: (tl.ptrs, [1, 2**70], tl.dtypes),  # out of int64: refused by the caster
        lambda tl: (tl.ptrs, [1, 1.0], tl.dtypes),  # a float where an int belongs
    ],
)
def test_kernel_argument_lists_refuse_bad_values(bad):
    tl = _bridge.tensor_list([torch.randn(1), torch.randn(1)])
    with pytest.raises((TypeError, ValueError)):
        _C.penalty_value("l1", *bad(tl), [1.0], [0.0])


def test_plain_pair_and_plain_ptrs():
    """The losses' shortest path: plain_pair accepts only plain contiguous float32/float64 CPU
    tensors of one dtype and shape; plain_ptrs asserts what tensor_list would have checked."""
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    assert _bridge.plain_pair(a, b) and _bridge.plain_pair(torch.nn.Parameter(a), b)
    assert not _bridge.plain_pair(a, b.double())  # dtypes differ
    assert not _bridge.plain_pair(a.half(), b.half())  # narrow dtypes go the general way
    assert not _bridge.plain_pair(a, b.t().contiguous().t())  # not contiguous
    assert not _bridge.plain_pair(a, b[:, :3].contiguous())  # shapes differ
    assert not _bridge.plain_pair(a.to_sparse(), b.to_sparse())
    assert not _bridge.plain_pair(a.numpy(), b)

    class Sub(torch.Tensor):
        pass

    assert not _bridge.plain_pair(a.as_subclass(Sub), b)  # subclasses may override torch functions
    assert _bridge.plain_ptrs(a, a, None, b) == [a.data_ptr(), 0, b.data_ptr()]
    assert _bridge.pair_ptrs(a, b, None) == (a.data_ptr(), b.data_ptr(), 0)
    for bad in (a.t(), torch.randn(5), a.double(), a.to(torch.bfloat16)):
        with pytest.raises(RuntimeError, match="internal error"):
            _bridge.plain_ptrs(a, bad)
    # the compute type is allowed beside the storage dtype (a float32 gradient buffer for bf16)
    h = a.to(torch.bfloat16)
    assert _bridge.plain_ptrs(h, a) == [a.data_ptr()]
