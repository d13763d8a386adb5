"""The DTensors of one call checked (placements: Shard or Replicate over at most one mesh
dim, even chunks) and split into parts by the process group of their Shard mesh dim, each
local tensor with where it lies in its logical tensor; and a local result wrapped back into
a DTensor. :mod:`.dtensor` (value, gradient, prox) and :mod:`.dtensor_step` use them."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor

from ._norms import _Geo


class _Part(NamedTuple):
    """The tensors of one call that share a process group (None: fully replicated)."""

    pg: object
    idx: list[int]  # positions in the call's list
    local: list[Tensor]  # their local tensors
    geo: list[_Geo]


def _no_pg(process_group, what: str) -> None:
    if process_group is not None:
        raise ValueError(
            f"'process_group' was given but 'params' are DTensors: a DTensor's device mesh says where its "
            f"shards live, so {what} combines them over the mesh by itself. Pass process_group=None, or pass "
            "plain local shards (not DTensors) with process_group"
        )


def _at(arg: str, i: int) -> str:
    """``'params'[3]`` for an argument, ``param_groups[0]['params'][3]`` for a path."""
    return f"{arg}[{i}]" if "[" in arg else f"'{arg}'[{i}]"


def _dt_parts(tensors: list, arg: str = "params") -> list[_Part]:
    """Check the DTensors of one call and split them into parts by process group."""
    from torch.distributed.tensor import DTensor, Shard

    first = next(i for i, t in enumerate(tensors) if isinstance(t, DTensor))
    parts: dict[object, _Part] = {}
    for i, p in enumerate(tensors):
        if not isinstance(p, DTensor):
            what = type(p).__name__ if not isinstance(p, Tensor) else "a regular (non-DTensor) tensor"
            raise TypeError(
                f"{_at(arg, i)} is {what} but {_at(arg, first)} is a DTensor: one call takes DTensors only. "
                "Distribute every tensor (e.g. fully_shard the whole model), or pass the regular tensors in "
                "a separate call"
            )
        mesh, placements = p.device_mesh, tuple(p.placements)
        if mesh.get_coordinate() is None:
            raise ValueError(f"{_at(arg, i)}: this rank is not part of the DTensor's device mesh")
        sharded = []
        for m, q in enumerate(placements):
            if q.is_replicate():
                continue
            if type(q) is not Shard:
                raise ValueError(
                    f"{_at(arg, i)} has placement {q} on mesh dim {m}; normreg takes DTensors whose placements "
                    "are Shard(d) or Replicate() (redistribute a Partial DTensor first, e.g. "
                    "t.redistribute(placements=[Replicate()]))"
                )
            sharded.append((m, q.dim + p.dim() if q.dim < 0 else q.dim))
        if len(sharded) > 1:
            raise ValueError(
                f"{_at(arg, i)} is sharded over {len(sharded)} mesh dims (placements {placements}); normreg "
                "takes DTensors sharded over at most one mesh dim (FSDP2, HSDP, 1-D tensor parallel). "
                "Redistribute it to a single Shard placement first"
            )
        with torch.no_grad():
            local = p.to_local()
        if not sharded:
            key, g = None, _Geo(0, tuple(p.shape), 0)
        else:
            m, d = sharded[0]
            n, w = p.shape[d], mesh.size(m)
            r = mesh.get_local_rank(m)
            chunk = -(-n // w) if n else 0
            offset = min(r * chunk, n)
            if tuple(local.shape[:d]) + tuple(local.shape[d + 1 :]) != tuple(p.shape[:d]) + tuple(
                p.shape[d + 1 :]
            ) or local.shape[d] != max(min(chunk, n - offset), 0):
                raise ValueError(
                    f"{_at(arg, i)}: its local tensor of shape {tuple(local.shape)} is not the even chunk "
                    f"of Shard({d}) of shape {tuple(p.shape)} that normreg expects (a padded or strided layout); "
                    "redistribute it"
                )
            pg = mesh.get_group(m)
            if dist.get_rank(pg) != r:
                raise ValueError(
                    f"{_at(arg, i)}: the mesh's process group does not rank its members in mesh order"
                )
            key, g = pg, _Geo(d, tuple(p.shape), offset)
        part = parts.get(key)
        if part is None:
            part = parts[key] = _Part(key, [], [], [])
        part.idx.append(i)
        part.local.append(local)
        part.geo.append(g)
    return list(parts.values())


def _as_dtensor(local: Tensor, like) -> Tensor:
    from torch.distributed.tensor import DTensor

    return DTensor.from_local(
        local, like.device_mesh, like.placements, run_check=False, shape=like.shape, stride=like.stride()
    )
