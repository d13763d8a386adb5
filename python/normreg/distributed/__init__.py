"""Penalties over parameters sharded across processes (``torch.distributed``).

DTensor parameters (FSDP2 ``fully_shard``, ``distribute_tensor`` with ``Shard``/``Replicate``)
need no ``process_group``: ``penalty.value/grad/add_grad_/prox_`` and the optimizers' ``step``
detect them (:func:`dtensor_args`, :func:`groups_have_dtensor`) and land in ``dtensor_*``
below, which run the machinery of this module on each DTensor's local tensor over the process
group of its Shard mesh dim (see the section at the end and docs/distributed.md).

``penalty.value(shards, process_group=pg)``, ``penalty.add_grad_(shards, process_group=pg)`` and
``penalty.prox_(shards, step, process_group=pg)`` land here. Every rank passes its *local shards*; the call returns the value of the penalty
of the *logical* (unsharded) tensors on every rank, and gives each rank the gradient of
that global value with respect to its own shards.

Sharding layout
---------------
Tensor ``i`` of the list is one logical tensor; rank ``r`` holds the ``r``-th slice of it
along dim 0, and the logical tensor is ``torch.cat([shard_i on rank 0, on rank 1, ...])``.
This is the layout of FSDP2 / DTensor ``Shard(0)`` parameters and, for 1-D tensors, of the
flat shards of ZeRO / FSDP1 flat parameters. Every rank passes the same number of tensors in
the same order; a shard may be empty (0 rows). Penalties need, per kind:

* ``L1``, ``SquaredL2``, ``ElasticNet``, ``L0``: sums over elements, so the value is the
  all-reduced sum of the local values and the gradient is local. Any layout works.
* ``L2Norm``: the per-tensor sums of squares are all-reduced before ``λ / ||w||`` is
  computed; any layout in which tensor ``i`` on every rank is a piece of logical tensor
  ``i`` works (flat shards included).
* ``GroupLasso(dim)``: groups are slices along ``dim`` of the logical tensor. When ``dim``
  is the shard dim (0, or ``-ndim``), every group lives on one rank and its norm is local.
  Otherwise every group spans all ranks: the per-group sums of squares are all-reduced
  (every rank must then hold the same number of groups, i.e. the same size along ``dim``)
  before the gradient coefficients ``λ / ||w_g||`` are computed.
* ``Linf``: the per-tensor max ``|w|`` is all-gathered; the gradient goes to the first arg
  max of the logical tensor (the lowest rank holding the max, its first local arg max).
* ``Sum``: each term as above, with one all-reduce for all of them.

Collectives run in float64 on the process group's device (CPU for gloo, the tensors' CUDA
device for nccl). A call is collective: every rank of ``process_group`` must make it, with
the same penalty. The argument checks are collective too: when one rank's arguments are
bad, that rank raises its own error and every other rank raises a ``ValueError`` naming it,
instead of waiting forever. The backward of ``value`` needs no collective (the global norms
are kept from the forward); it is once-differentiable (no ``create_graph``).
"""

from __future__ import annotations

import sys

from .._dtensors import (
    dtensor_args,  # noqa: F401  (re-exported: part of this module's API)
    groups_have_dtensor,  # noqa: F401
    register_distributed,
)
from ._norms import check_process_group
from .dtensor import dtensor_add_grad_, dtensor_grad, dtensor_prox_, dtensor_value
from .dtensor_step import dtensor_step
from .sharded import sharded_add_grad_, sharded_prox_, sharded_value

__all__ = [
    "sharded_value",
    "sharded_add_grad_",
    "sharded_prox_",
    "check_process_group",
    "dtensor_value",
    "dtensor_add_grad_",
    "dtensor_prox_",
    "dtensor_grad",
    "dtensor_step",
]

register_distributed(sys.modules[__name__])
