"""Agreement, the first step of the benchmark runner: every peer's result against
normreg's, by ``torch.testing.assert_close`` at the case's tolerance; a disagreement raises
:class:`AgreementError` and the case is not timed (see :mod:`normreg.bench.runner`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .cases import Case, Impl


class AgreementError(AssertionError):
    """An implementation's result differs from normreg's beyond the case's tolerance."""

    def __init__(self, case: Case, impl: str, detail: str) -> None:
        self.group, self.impl, self.detail = case.group, impl, detail
        rtol, atol = case.impl(impl).tol or case.tol
        super().__init__(
            f"{case.group}: {impl} disagrees with normreg (rtol={rtol:g}, atol={atol:g}); "
            f"it is not timed. {detail}"
        )


def _to_compare(x):
    if isinstance(x, (tuple, list)):
        return tuple(_to_compare(v) for v in x)
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, (int, float)):
        return torch.tensor(float(x), dtype=torch.float64)
    return x


def _result(case: Case, impl: Impl):
    inputs = case.make_inputs()
    thunk = impl.bind(inputs)
    ret = None
    for _ in range(case.check_calls):
        ret = thunk()
    return _to_compare(case.result(inputs, ret))


def _compare(a, b, rtol: float, atol: float) -> None:
    """assert_close for nested tuples, casting each pair to a common dtype."""
    if isinstance(a, tuple):
        if not isinstance(b, tuple) or len(a) != len(b):
            raise AssertionError(
                f"results have different structure: {type(a).__name__} vs {type(b).__name__}"
            )
        tensors = all(isinstance(x, torch.Tensor) for x in a + b)
        if tensors and len(a) > 1 and all(x.shape == y.shape for x, y in zip(a, b, strict=False)):
            # one comparison of the concatenation: a list of 200 tensors costs one call, not 200
            dt = torch.promote_types(a[0].dtype, b[0].dtype)
            flat_a = torch.cat([x.reshape(-1).to(dt) for x in a])
            flat_b = torch.cat([y.reshape(-1).to(dt) for y in b])
            torch.testing.assert_close(flat_a, flat_b, rtol=rtol, atol=atol, equal_nan=True)
            return
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            try:
                _compare(x, y, rtol, atol)
            except AssertionError as exc:
                raise AssertionError(f"item {i}: {exc}") from None
        return
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        dt = torch.promote_types(a.dtype, b.dtype)
        torch.testing.assert_close(a.to(dt), b.to(dt), rtol=rtol, atol=atol, equal_nan=True)
        return
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


def check_agreement(case: Case, impls: Sequence[str] | None = None) -> None:
    """Raise :class:`AgreementError` unless every peer (or those named) matches normreg."""
    ours = _result(case, case.ours)
    for impl in case.peers:
        if impls is not None and impl.name not in impls:
            continue
        theirs = _result(case, impl)
        rtol, atol = impl.tol or case.tol
        try:
            _compare(theirs, ours, rtol, atol)
        except AssertionError as exc:
            raise AgreementError(
                case, impl.name, str(exc).strip().splitlines()[0] if str(exc) else ""
            ) from None
