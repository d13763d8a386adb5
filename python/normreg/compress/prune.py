"""Physical removal of exactly-zero channels, through torch-pruning's dependency graph.

The rule (docs/compress.md): a channel is removed only when its output *after its
normalization layer* is identically zero, so that every consumer (through ReLU / LeakyReLU
/ tanh / dropout, which keep 0 at 0, and through concatenations) receives exactly what it
received before. A constant non-zero channel (a zeroed conv followed by a BatchNorm whose
shift is not zero) is kept: folding the constant into the consumer's bias is not exact,
since the consumer's zero padding makes its contribution differ at the borders.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn

from ._layers import _CHANNEL_NORMS, _PRODUCERS, channel_is_zero, check_model, check_threshold, out_channels

__all__ = ["prune_zero_channels", "PruneError", "TOLERANCE"]

#: largest max-abs difference allowed between the pruned and the unpruned model's outputs
TOLERANCE = 1e-5


class PruneError(ValueError):
    """The pruned model's outputs differ from the model's: nothing is returned."""


def _tp():
    try:
        import torch_pruning
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "normreg.compress.prune_zero_channels needs torch-pruning's dependency graph: "
            "pip install 'normreg[compress]' (or pip install torch-pruning)"
        ) from e
    return torch_pruning


def _outputs(model: nn.Module, x) -> list[Tensor]:
    with torch.no_grad():
        y = model(*x) if isinstance(x, tuple) else model(x)
    ys = list(y) if isinstance(y, (tuple, list)) else [y]
    if not all(isinstance(t, Tensor) for t in ys):
        raise TypeError("prune_zero_channels: 'model' must return a tensor or a tuple of tensors")
    return ys


def _plan(tp, DG, model: nn.Module, threshold: float) -> list[tuple[nn.Module, object, list[int]]]:
    """(root module, pruning fn, channel indices) for every layer with removable channels."""
    norm_fns = {
        nn.modules.batchnorm._BatchNorm: tp.prune_batchnorm_out_channels,
        nn.modules.instancenorm._InstanceNorm: tp.prune_instancenorm_out_channels,
    }
    plans = []
    for m in model.modules():
        if not isinstance(m, _PRODUCERS):
            continue
        fn = tp.prune_linear_out_channels if isinstance(m, nn.Linear) else tp.prune_conv_out_channels
        try:
            g0 = DG.get_pruning_group(m, fn, idxs=[0])
        except Exception:  # a layer the graph does not know (e.g. unused): leave it
            continue
        producers, norms, consumers, other = [], [], 0, False
        for dep, _ in g0:
            t = dep.target.module
            if DG.is_out_channel_pruning_fn(dep.handler):
                if isinstance(t, _PRODUCERS):
                    producers.append(t)
                elif isinstance(t, _CHANNEL_NORMS):
                    norms.append(t)
                elif isinstance(t, nn.Module) and any(True for _ in t.parameters(recurse=False)):
                    other = True  # GroupNorm, LayerNorm, PReLU...: channels not independent here
            elif DG.is_in_channel_pruning_fn(dep.handler) and isinstance(t, _PRODUCERS):
                consumers += 1
        # one producer, at most one channel norm, someone consuming the channel (not an output)
        if producers != [m] or len(norms) > 1 or other or consumers == 0:
            continue
        norm = norms[0] if norms else None
        c = out_channels(m)
        if norm is not None and norm.num_features != c:
            if c % norm.num_features:
                continue
            units, root = c // norm.num_features, norm
            rfn = next(f for k, f in norm_fns.items() if isinstance(norm, k))
        else:
            units, root, rfn = 1, m, fn
        n = c // units
        if units > 1:  # the unit <-> channel map the graph uses must be the contiguous one
            g = DG.get_pruning_group(root, rfn, idxs=list(range(n)))
            idx = next(
                list(i) for d, i in g if d.target.module is m and DG.is_out_channel_pruning_fn(d.handler)
            )
            if idx != list(range(c)):
                continue
        zero = channel_is_zero(m, norm, units, threshold)
        keep_one = bool(zero.all())  # a layer keeps at least one channel (torch-pruning refuses 0)
        idxs = [int(i) for i in torch.nonzero(zero).flatten()]
        if keep_one:
            idxs = idxs[:-1]
        if idxs:
            plans.append((root, rfn, idxs))
    return plans


def _fix_unflatten(model: nn.Module, x) -> None:
    """``nn.Unflatten`` keeps its size as an attribute torch-pruning does not update: set the
    leading size from what it now receives (the channels that remain)."""

    def pre(mod, args):
        size = tuple(mod.unflattened_size)
        have = args[0].shape[mod.dim]
        rest = math.prod(size[1:])
        if math.prod(size) != have and have % rest == 0:
            mod.unflattened_size = (have // rest, *size[1:])

    hs = [m.register_forward_pre_hook(pre) for m in model.modules() if isinstance(m, nn.Unflatten)]
    try:
        _outputs(model, x)
    finally:
        for h in hs:
            h.remove()


def prune_zero_channels(model: nn.Module, example_input, threshold: float = 0.0) -> nn.Module:
    """A smaller copy of ``model`` without its exactly-zero output channels.

    Every conv, transposed conv and linear layer whose output channels feed other layers
    loses the channels whose output after its normalization layer is identically zero
    (:func:`normreg.compress.zero_channels`' rule): their weights, bias, the norm layer's
    entries (scale, shift, running statistics) and the consumers' input channels go, followed
    through activations, ``torch.cat`` skip connections and ``Unflatten`` by torch-pruning's
    dependency graph. Output layers keep their channels; a layer whose channels are all zero
    keeps one.

    Parameters
    ----------
    model : nn.Module
        Not modified.
    example_input : Tensor or tuple of Tensors
        What ``model`` is called with: used to trace the graph and to check the result.
    threshold : float >= 0
        Entries with ``|v| <= threshold`` count as zero (default 0: exactly zero). The check
        below still applies, so this only absorbs negligible values; to prune by magnitude,
        zero the channels first.

    Returns
    -------
    nn.Module
        The pruned copy, with ``model``'s train/eval modes. Before it is returned its outputs
        on ``example_input`` are compared with ``model``'s, both in eval mode: a max abs
        difference above ``TOLERANCE`` (1e-5) raises :class:`PruneError` (a ``ValueError``).

    Raises
    ------
    TypeError / ValueError
        Bad arguments; a model torch-pruning cannot trace.
    ImportError
        torch-pruning is not installed (``pip install 'normreg[compress]'``).
    """
    check_model(model)
    if isinstance(example_input, (tuple, list)):
        example_input = tuple(example_input)
        ok = bool(example_input) and all(isinstance(t, Tensor) for t in example_input)
    else:
        ok = isinstance(example_input, Tensor)
    if not ok:
        raise TypeError(
            "'example_input' must be a tensor (or a tuple of tensors) that the model is called with, "
            f"got {type(example_input).__name__}"
        )
    threshold = check_threshold(threshold)
    tp = _tp()
    modes = {n: m.training for n, m in model.named_modules()}
    pruned = copy.deepcopy(model)
    try:
        model.eval()
        ref = _outputs(model, example_input)
    finally:
        for n, m in model.named_modules():
            m.training = modes[n]
    pruned.eval()
    try:
        with torch.enable_grad():  # the graph is traced through autograd (also under no_grad)
            DG = tp.DependencyGraph().build_dependency(pruned, example_inputs=example_input)
    except Exception as e:
        raise ValueError(
            f"prune_zero_channels: torch-pruning cannot trace 'model' ({type(model).__name__}): {e}"
        ) from e
    with torch.no_grad():
        for root, fn, idxs in _plan(tp, DG, pruned, threshold):
            DG.get_pruning_group(root, fn, idxs=idxs).prune()
    _fix_unflatten(pruned, example_input)
    try:
        out = _outputs(pruned, example_input)
    except RuntimeError as e:
        raise PruneError(f"prune_zero_channels: the pruned model no longer runs: {e}") from e
    if len(out) != len(ref) or any(a.shape != b.shape for a, b in zip(out, ref)):
        raise PruneError("prune_zero_channels: the pruned model's outputs have other shapes than the model's")
    diff = max(float((a.double() - b.double()).abs().max()) if a.numel() else 0.0 for a, b in zip(out, ref))
    if not diff <= TOLERANCE:
        raise PruneError(
            f"prune_zero_channels: the pruned model's outputs differ from the model's by {diff:.3g} "
            f"(> {TOLERANCE:g}) on 'example_input' in eval mode: 'model' has an operation between a "
            "removed channel and its consumers that does not keep zero at zero (e.g. adds a constant), "
            "or a layout torch-pruning does not handle; nothing was pruned"
        )
    for n, m in pruned.named_modules():
        if n in modes:
            m.training = modes[n]
    return pruned
