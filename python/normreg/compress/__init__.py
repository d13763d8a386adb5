"""Structured sparsity that makes a model smaller: channel norms, channel penalty groups,
the multiply-add count, and the physical removal of exactly-zero channels.

>>> import torch, normreg
>>> from normreg.compress import channel_groups, prune_zero_channels, count_macs
>>> # opt = normreg.optim.ProxAdam(channel_groups(G, "group_lasso", 1e-3), lr=2e-4)
>>> # ... train: the proximal step zeroes whole channels ...
>>> # small = prune_zero_channels(G, example_input)   # same outputs, fewer channels

See docs/compress.md for the removal rule. ``prune_zero_channels`` needs torch-pruning
(``pip install 'normreg[compress]'``); the rest needs only torch.
"""

from __future__ import annotations

from ._layers import (
    PrunableLayer,
    channel_norms,
    count_macs,
    count_zero_channels,
    prunable_layers,
    zero_channels,
)
from .controller import ChannelSparsityController, MacController, macs_after_pruning
from .groups import METHODS, channel_groups
from .magnitude import channel_scores, magnitude_to_macs, top_up_to_macs, zero_below, zero_smallest_channels
from .prune import TOLERANCE, PruneError, prune_zero_channels
from .resize import fit_to_state_dict, settle_zero_channels

__all__ = [
    "channel_norms",
    "channel_groups",
    "METHODS",
    "count_macs",
    "prunable_layers",
    "PrunableLayer",
    "zero_channels",
    "count_zero_channels",
    "prune_zero_channels",
    "PruneError",
    "TOLERANCE",
    "ChannelSparsityController",
    "MacController",
    "macs_after_pruning",
    "settle_zero_channels",
    "fit_to_state_dict",
    "zero_smallest_channels",
    "magnitude_to_macs",
    "channel_scores",
    "zero_below",
    "top_up_to_macs",
]
