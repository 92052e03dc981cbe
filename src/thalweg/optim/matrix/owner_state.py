"""State dicts of optimizers whose matrices have owner ranks (:mod:`.owners`): a rank holds
only its own matrices' state, so `state_dict()` makes it whole — every owner's entries on
every rank (replicas, as one process would save) or every entry as a DTensor laid out like
its parameter (FSDP2, as DCP saves and reshards) — and `load_state_dict` keeps each rank's
part. Both are collectives: every rank calls them, in the same order.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from thalweg.optim.engine.dtensor import is_dtensor

from .owners import Spread

__all__ = ["owned_part", "whole_state_dict"]


def whole_state_dict(spread: Spread, sd: dict[str, Any], order: list[Tensor]) -> dict[str, Any]:
    """A rank's state dict made whole (collective: every rank calls it). Replicas: every
    owner's entries on every rank, as plain tensors (what one process would save).
    DTensor: every entry as a DTensor with its parameter's layout (a state tensor of
    another shape is split along dimension 0), so DCP saves each shard once and loads
    it at another world size."""
    owners = [spread.owner(p) for p in order]
    state = sd["state"]
    if not spread.dtensor:
        mine = {i: {k: v.cpu() if isinstance(v, Tensor) else v for k, v in st.items()}
                for i, st in state.items() if owners[i] == spread.rank}
        every: list[Any] = [None] * spread.world
        dist.all_gather_object(every, mine, group=spread.group)
        dev = {i: p.device for i, p in enumerate(order)}
        for r, part in enumerate(every):
            for i, st in part.items():
                if owners[i] == r:
                    state[i] = {k: v.to(dev[i]) if isinstance(v, Tensor) else v for k, v in st.items()}
        sd["state"] = {i: state[i] for i in sorted(state)}
        return sd
    meta = {i: {k: (tuple(v.shape), v.dtype) if isinstance(v, Tensor) else v for k, v in st.items()}
            for i, st in state.items() if owners[i] == spread.rank}
    every = [None] * spread.world
    dist.all_gather_object(every, meta, group=spread.group)
    for r, part in enumerate(every):
        for i, entries in part.items():
            if owners[i] != r:
                continue
            mine = state.get(i, {}) if r == spread.rank else {}
            out = {}
            for k, m in entries.items():
                if not isinstance(m, tuple) or len(m) != 2 or not isinstance(m[1], torch.dtype):
                    out[k] = m  # a plain value, the same everywhere
                    continue
                out[k] = _spread_tensor(spread, mine.get(k), m[0], m[1], order[i], r)
            state[i] = out
    sd["state"] = {i: state[i] for i in sorted(state)}  # one order on every rank
    return sd

def _spread_tensor(spread: Spread, full: Tensor | None, shape: tuple[int, ...], dtype: torch.dtype, p: Tensor,
                   src: int) -> Tensor:
    """Owner `src`'s full state tensor as a DTensor laid out like `p` (or split along dim 0);
    a 0-d tensor (a step count) as a plain tensor on every rank."""
    from torch.distributed.tensor import DTensor, Shard

    dev = p.to_local().device
    if len(shape) == 0:
        t = full.clone() if full is not None else torch.empty((), dtype=dtype)
        t = t.to(dev)
        dist.broadcast(t, src=spread.global_rank(src), group=spread.group)
        return t
    d = p.placements[0].dim if tuple(shape) == tuple(p.shape) and p.placements[0].is_shard() else 0
    if tuple(shape) == tuple(p.shape) and p.placements[0].is_replicate():
        t = full.clone() if full is not None else torch.empty(shape, dtype=dtype, device=dev)
        dist.broadcast(t, src=spread.global_rank(src), group=spread.group)
        return DTensor.from_local(t, spread.mesh, p.placements, run_check=False)
    ranges = [spread.rows(shape[d], q) for q in range(spread.world)]
    pad = list(shape)
    pad[d] = ranges[0][1] - ranges[0][0]
    recv = torch.empty(pad, dtype=dtype, device=dev)
    pieces = None
    if full is not None:
        pieces = []
        for a, e in ranges:
            piece = torch.zeros(pad, dtype=dtype, device=dev)
            piece.narrow(d, 0, e - a).copy_(full.narrow(d, a, e - a))
            pieces.append(piece)
    dist.scatter(recv, pieces, src=spread.global_rank(src), group=spread.group)
    a, e = ranges[spread.rank]
    local = recv.narrow(d, 0, e - a).contiguous()
    return DTensor.from_local(local, spread.mesh, [Shard(d)], run_check=False, shape=torch.Size(shape),
                              stride=torch.empty(shape, device="meta").stride())

def owned_part(spread: Spread, sd: dict[str, Any], order: list[Tensor]) -> dict[str, Any]:
    """The part of a whole state dict this rank keeps: its matrices' entries (DTensor
    entries made full first — collective: every rank calls it) and every entry of a
    parameter that no owner holds (a helper optimizer's, replicated)."""
    owners = [spread.owner(p) for p in order]
    state = {}
    for i in sorted(sd["state"], key=str):  # every rank in one order (full_tensor is a collective)
        st = sd["state"][i]
        full = {k: v.full_tensor() if is_dtensor(v) else v for k, v in st.items()}
        if not isinstance(i, int) or i >= len(owners) or owners[i] in (None, spread.rank):
            state[i] = full
    return {**sd, "state": state}
