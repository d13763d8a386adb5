"""Argument checks of the bridge that need no kernel: a strength, an in-place write that
autograd would not see, tensors whose memory overlaps. Beside :mod:`.lists`, which calls
:func:`check_overlap` on the lists it builds; re-exported by :mod:`normreg._bridge`."""

from __future__ import annotations

import torch
from torch import Tensor


def check_strength(value, arg: str) -> float:
    """A strength (penalty weight, step): a real number, finite and >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, Tensor) and value.numel() == 1 and not value.requires_grad:
            if value.dtype.is_complex or value.dtype == torch.bool:
                raise TypeError(
                    f"'{arg}' must be a real number, got a {value.dtype} tensor; "
                    "pass a float or a one-element floating or integer tensor"
                )
            value = value.item()
        else:
            raise TypeError(f"'{arg}' must be a real number, got {type(value).__name__}")
    value = float(value)
    if value != value or value < 0 or value == float("inf"):
        raise ValueError(f"'{arg}' must be finite and >= 0, got {value}")
    return value


def check_writable(tensors, arg: str = "params") -> None:
    """Refuse in-place writes autograd cannot see through, as torch refuses them.

    With grad mode on, a tensor that requires grad may not be written in place by normreg
    (torch raises for an in-place op on such a leaf); wrap the call in ``torch.no_grad()``
    as optimizers do.
    """
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        for i, t in enumerate(tensors):
            if t.requires_grad:
                kind = "a leaf Variable" if t.is_leaf else "a tensor"
                raise RuntimeError(
                    f"'{arg}'[{i}] is {kind} that requires grad and is being used in an in-place "
                    "operation; call this under `with torch.no_grad():` (as optimizers do)"
                )


def check_overlap(tensors: list[Tensor], ptrs: list[int], numels: list[int], arg: str) -> None:
    """Refuse tensors whose memory ranges overlap (an in-place op would update them twice)."""
    spans = sorted(
        (p, p + n * t.element_size(), i) for i, (t, p, n) in enumerate(zip(tensors, ptrs, numels)) if n
    )
    for (_, end_a, a), (start_b, _, b) in zip(spans, spans[1:]):
        if start_b < end_a:
            a, b = min(a, b), max(a, b)
            raise ValueError(
                f"'{arg}'[{b}] shares memory with '{arg}'[{a}]; an in-place op would update the "
                "shared elements twice. Pass each tensor once, and no overlapping views of one tensor"
            )
