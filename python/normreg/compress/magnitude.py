"""The baseline: prune a dense model by channel magnitude, with no regularization.

Li et al. (2017, "Pruning Filters for Efficient ConvNets") rank each layer's filters by their
weights' norm and remove the same share of every layer. :func:`zero_smallest_channels` does
that by zeroing (the removal rule then holds exactly), :func:`magnitude_to_macs` finds the
share that brings the model to a MAC budget.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ._layers import _channel_rows, check_model, count_macs, prunable_layers
from .controller import macs_after_pruning

__all__ = ["zero_smallest_channels", "magnitude_to_macs", "channel_scores", "zero_below", "top_up_to_macs"]


@torch.no_grad()
def _zero_rows(p, rows: torch.Tensor) -> None:
    """Zero the channels ``rows`` (bool per channel) of prunable layer ``p``: weights, bias, and
    the norm's scale, shift and running mean, so that the removal rule holds."""
    m, norm, units = p.module, p.norm, p.units
    unit_rows = rows.repeat_interleave(units)
    if isinstance(m, nn.modules.conv._ConvTransposeNd):
        m.weight[:, unit_rows] = 0
    else:
        m.weight[unit_rows] = 0
    if m.bias is not None:
        m.bias[unit_rows] = 0
    if norm is not None:
        if norm.affine:
            norm.weight[rows] = 0
            norm.bias[rows] = 0
        if getattr(norm, "running_mean", None) is not None:
            norm.running_mean[rows] = 0


def channel_scores(model: nn.Module, kind: str = "norm") -> dict[str, torch.Tensor]:
    """Per prunable layer, a float64 score per output channel (small: first to go).

    ``"norm"``: the RMS of the channel's weights and bias (the L2 norm over the square root of
    the count, so that layers of different fan-in compare); ``"scale"``: ``|gamma|`` of the
    following norm layer (Network Slimming's criterion), the RMS where a layer has none."""
    if kind not in ("norm", "scale"):
        raise ValueError(f"'kind' must be 'norm' or 'scale', got {kind!r}")
    out = {}
    for p in prunable_layers(model):
        if kind == "scale" and p.norm is not None and p.norm.affine:
            out[p.name] = p.norm.weight.detach().double().abs()
        else:
            rows = _channel_rows(p.module, p.units).double()
            out[p.name] = rows.norm(dim=1) / rows.shape[1] ** 0.5
    return out


@torch.no_grad()
def zero_smallest_channels(model: nn.Module, fraction: float) -> int:
    """Zero, in every prunable layer, the ``round(fraction * channels)`` output channels of
    smallest L2 norm (weights and bias; at least one channel is kept per layer): their
    weights, bias, and the following norm layer's scale, shift and running mean. Returns
    the number of channels zeroed. ``model`` is modified in place."""
    check_model(model)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise ValueError(
            f"'fraction' is the share of each layer's channels to zero, in [0, 1); got {fraction!r}"
        )
    total = 0
    for p in prunable_layers(model):
        c = p.channels
        k = min(int(round(fraction * c)), c - 1)
        if k <= 0:
            continue
        order = _channel_rows(p.module, p.units).double().norm(dim=1).argsort(stable=True)
        rows = torch.zeros(c, dtype=torch.bool, device=order.device)
        rows[order[:k]] = True
        _zero_rows(p, rows)
        total += k
    return total


@torch.no_grad()
def zero_below(model: nn.Module, scores: dict[str, torch.Tensor], threshold: float) -> int:
    """Zero every channel whose score is ``<= threshold`` (keeping each layer's best one);
    returns how many channels that zeroed (with a non-zero score before). In place."""
    total = 0
    for p in prunable_layers(model):
        s = scores.get(p.name)
        if s is None:
            continue
        rows = s <= threshold
        if bool(rows.all()):
            rows[s.argmax()] = False
        if rows.any():
            _zero_rows(p, rows)
            total += int((rows & (s > 0)).sum())  # channels that were not zero already
    return total


def top_up_to_macs(model: nn.Module, example_input, target: float, kind: str = "norm"):
    """Meet a MAC budget by zeroing the channels of smallest score over all layers (one global
    threshold, found by bisection on the sorted scores). Returns ``(copy, channels zeroed)``;
    the copy is ``model`` itself, unchanged, when it already meets the budget."""
    shape = tuple(example_input.shape)
    dense = count_macs(model, shape)
    if macs_after_pruning(model, example_input, shape) <= target * dense:
        return model, 0
    scores = channel_scores(model, kind)
    flat = torch.cat([s[s > 0] for s in scores.values()]).sort().values
    lo, hi = -1, flat.numel() - 1  # index of the threshold: lo misses the budget, hi meets it

    def zeroed(i: int):
        m = copy.deepcopy(model)
        n = zero_below(m, scores, float(flat[i])) if i >= 0 else 0  # the copy scores as model
        return m, n, macs_after_pruning(m, example_input, shape) / dense

    best, n_best, f = zeroed(hi)
    if f > target:
        return best, n_best  # as far as it goes (one channel left per layer)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        m, n, f = zeroed(mid)
        if f <= target:
            hi, best, n_best = mid, m, n
        else:
            lo = mid
    return best, n_best


def magnitude_to_macs(
    model: nn.Module, example_input, target: float, steps: int = 24
) -> tuple[nn.Module, float]:
    """A copy of ``model`` with the smallest channels of every layer zeroed, the share the
    largest whose pruned MACs stay within ``target`` (a fraction of ``model``'s) — found by
    bisection. Returns ``(zeroed copy, share)``; ``model`` is not modified."""
    check_model(model)
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target <= 1:
        raise ValueError(f"'target' is the fraction of the dense MACs to keep, in (0, 1]; got {target!r}")
    shape = tuple(example_input.shape)
    dense = macs_after_pruning(model, example_input, shape)

    def zeroed(f: float) -> tuple[nn.Module, float]:
        m = copy.deepcopy(model)
        zero_smallest_channels(m, f)
        return m, macs_after_pruning(m, example_input, shape) / dense

    m0, f0 = zeroed(0.0)
    if f0 <= target:
        return m0, 0.0
    lo, hi = 0.0, 1.0 - 1e-9  # shares zeroed: lo misses the budget, hi meets it
    best, fh = zeroed(hi)
    if fh > target:
        raise ValueError(
            f"'target' = {target:g} is out of reach by magnitude pruning: with one channel left in every "
            f"prunable layer the model keeps {fh:.3g} of its MACs (the unprunable layers)"
        )
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        m, f = zeroed(mid)
        if f <= target:
            hi, best = mid, m
        else:
            lo = mid
    return best, hi
