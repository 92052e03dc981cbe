"""DTensor parameters (FSDP2's `fully_shard`, any 1-D mesh with `Shard(d)` placements) on the
flat core: one segment per (group, mesh, placements, device, dtype) packs the *local shards*.

Copy in, copy out — not views. FSDP2 keeps its own references to each shard's storage (the
padded `_sharded_param_data` it all-gathers, re-pointed by `reset_sharded_param` at lazy
init and after `load_state_dict(assign=True)` or `model.to(...)`); rebinding a shard to a
view of our buffer would silently detach the optimizer from what FSDP2 gathers (FSDP1's
bug, issue 21). So every step reads each parameter's current local tensor and gradient into
the flat buffers, runs the one fused update, and writes the new values back into the local
tensor in place — whatever tensor FSDP2 holds at that moment. The copies move ~12 bytes per
parameter (docs/distributed.md measures what they cost against torch.optim's DTensor path).

Reductions that span a tensor or the model (clip by global norm, LAMB/LARS trust ratios,
Prodigy's d) sum the local shards and all-reduce the sums over the mesh, so they equal the
one-process values up to summation order. State-dict entries are DTensors laid out like
their parameter, views of the flat state (DCP writes into them in place); int8 state is
presented decoded (float32), its block scales being per rank.

int8 blocks and shards: each rank's blocks tile its own flat buffer of local shards; a block
never spans ranks (it may span tensors, as in one process), so the codes differ from one
process's, each value within the format's bound (`lowprec.int8_error_bound`) of its block's
absolute maximum — on a rank, over that rank's elements of the block.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from .segment import Segment, real_dtype

__all__ = ["ShardSegment", "check_layout", "decode_int8", "is_dtensor", "local_part", "norm_over", "present", "reduce_over",
           "refuse_dtensor", "segment_key"]


def is_dtensor(t: Any) -> bool:
    """Whether `t` is a DTensor (False where torch.distributed is absent)."""
    if not dist.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def refuse_dtensor(groups: Sequence[dict[str, Any]], who: str) -> None:
    """A rule that cannot run on DTensor parameters (FSDP2) says so at construction."""
    if any(is_dtensor(p) for g in groups for p in g["params"]):
        raise ValueError(f"{who} does not support DTensor parameters (FSDP2's fully_shard) yet: it needs whole "
                         'tensors for its curvature products; train it with DDP ([distributed] strategy = "ddp") '
                         "or pick a first-order or matrix rule")


def segment_key(p: Tensor) -> tuple[Any, ...]:
    """What parameters must share to be packed into one segment."""
    if not is_dtensor(p):
        return (p.device, real_dtype(p.dtype))
    local = p.to_local()
    return (local.device, real_dtype(local.dtype), p.device_mesh, tuple(p.placements))


def check_layout(p: Tensor, who: str, replicate: bool = False) -> None:
    """Refuse, naming the setting, a DTensor parameter this library cannot split: a mesh of
    more than one dimension (HSDP, tensor parallel), a placement other than Shard(d) (or
    Replicate, where `replicate`), CPU offload."""
    mesh = p.device_mesh
    if mesh.ndim != 1:
        raise ValueError(f"{who}: a {mesh.ndim}-D device mesh (HSDP or tensor parallel) is not supported; "
                         "use fully_shard over a 1-D mesh (FSDP2) or DDP")
    for pl in p.placements:
        if not (pl.is_shard() or (replicate and pl.is_replicate())):
            raise ValueError(f"{who}: placement {pl} of a DTensor parameter is not supported (Shard(d) on a 1-D "
                             "mesh, as fully_shard makes)")
    if p.to_local().device.type != mesh.device_type:
        raise ValueError(f"{who}: FSDP2 CPU offload (offload_policy=CPUOffloadPolicy) is not supported; keep "
                         "the parameters on the mesh's device")


class ShardSegment(Segment):
    """The local shards of one group's DTensor parameters on one (mesh, placements, device,
    dtype), packed into flat buffers that are copied from and back to the shards each step."""

    def __init__(self, group_index: int, params: list[Tensor], who: str = "optimizer") -> None:
        for p in params:
            check_layout(p, who)
        self.mesh = params[0].device_mesh
        self.placements = tuple(params[0].placements)
        self.over = self.mesh.get_group()
        super().__init__(group_index, params)
        self.outside = list(range(len(params)))

    @staticmethod
    def _local(p: Tensor) -> Tensor:
        return p.to_local()

    def _bind(self, i: int) -> None:
        """Copy the shard in; the parameter keeps its own storage (FSDP2's)."""
        self.p_views[i].copy_(self.params[i].to_local().detach())

    def watch(self, i: int) -> None:
        """Nothing to hook: FSDP2 sets each gradient after its reduce-scatter."""

    def pull(self, indices: Any) -> list[int]:
        """Every shard of `indices` copied in (its values are FSDP2's, not ours)."""
        out = list(indices)
        for i in out:
            self.p_views[i].copy_(self.params[i].to_local().detach())
        return out

    def push(self, outside: Any = None) -> None:
        """The updated values back into each parameter's local tensor, in place."""
        for i in self.outside if outside is None else outside:
            self.params[i].to_local().detach().copy_(self.p_views[i])

    def sync(self) -> list[bool]:
        """Before a step: every shard and local gradient copied in; which have a gradient."""
        self.outside = self.pull(range(len(self.params)))
        self.sparse = {}  # DTensor gradients are dense: no sparse path
        active = []
        for i, p in enumerate(self.params):
            g = p.grad
            if g is None:
                active.append(False)
                continue
            self.g_views[i].copy_(local_part(g, p))
            self.clean[i] = False
            active.append(True)
        return active


def local_part(v: Tensor, p: Tensor) -> Tensor:
    """This rank's part of `v` laid out like DTensor parameter `p`: a DTensor's local tensor
    (redistributed first if its placements differ, e.g. a Partial gradient), or the rows of
    a full plain tensor (a one-process checkpoint) that this rank's shard holds."""
    if is_dtensor(v):
        if tuple(v.placements) != tuple(p.placements):
            v = v.redistribute(p.device_mesh, p.placements)
        return v.to_local()
    if not is_dtensor(p) or tuple(v.shape) != tuple(p.shape):
        return v
    d = p.placements[0].dim
    mesh = p.device_mesh
    size, world, rank = v.shape[d], mesh.size(), mesh.get_local_rank()
    c = -(-size // world)
    a, e = min(rank * c, size), min((rank + 1) * c, size)
    return v.narrow(d, a, e - a)


def present(seg: ShardSegment, i: int, entries: dict[str, Any], decode: Any = None) -> dict[str, Any]:
    """Parameter i's state-dict entries as DTensors with its layout (views of the flat
    state); int8 codes decoded by `decode(key)` (float32), their scales and offset left out."""
    from torch.distributed.tensor import DTensor

    p = seg.params[i]
    out: dict[str, Any] = {}
    for k, v in entries.items():
        if k.endswith(".scale") or k == "block_offset":
            continue
        if decode is not None and k != "master_param" and isinstance(v, Tensor) and v.dtype == torch.int8:
            v = decode(k)
        if isinstance(v, Tensor) and tuple(v.shape) == tuple(seg.shapes[i]):
            v = DTensor.from_local(v, seg.mesh, seg.placements, run_check=False, shape=p.shape, stride=p.stride())
        out[k] = v
    return out


def decode_int8(opt: Any, sd: dict[str, Any]) -> None:
    """In a state dict, int8 state of DTensor segments as float32 DTensors (the codes' block
    scales are per rank, so no layout of them fits every world size); their param groups say
    so (`state_decoded`), and loading re-encodes them (exactly, at the same world size)."""
    from . import storage

    index = {id(p): k for k, p in enumerate(q for g in opt.param_groups for q in g["params"])}
    for seg in opt._segments:
        if not isinstance(seg, ShardSegment) or seg.layout is None or not seg.layout.quantized:
            continue
        sd["param_groups"][seg.group_index]["state_decoded"] = True
        for i, p in enumerate(seg.params):
            entry = sd["state"].get(index[id(p)])
            if entry:
                entry.update(present(seg, i, {k: storage.read_param(seg, seg.layout, k, i).float()
                                             for k in seg.chain.state_keys}))


def _sumsq(bufs: Sequence[Tensor]) -> Tensor | None:
    if not bufs:
        return None
    sq = [b.float().pow(2).sum() if b.dtype in (torch.float16, torch.bfloat16) else b.pow(2).sum() for b in bufs]
    return torch.stack([x.to(sq[0].device) for x in sq]).sum()


def norm_over(units: Sequence[Any], part: int) -> Tensor | None:
    """The global norm of the units' pass-`part` inputs: shards' squares all-reduced over
    their mesh, plain (replicated) tensors' added once."""
    plain = _sumsq([u.source(part) for u in units if u.over is None])
    groups: dict[Any, list[Any]] = {}
    for u in units:
        if u.over is not None:
            groups.setdefault(u.over, []).append(u)
    total = plain
    for group, us in groups.items():
        sq = _sumsq([u.source(part) for u in us])
        assert sq is not None
        dist.all_reduce(sq, group=group)
        total = sq if total is None else total + sq.to(total.device)
    return None if total is None else total.sqrt()


def reduce_over(sums: list[tuple[Any, Any, Tensor]]) -> list[tuple[Any, Any, Tensor]]:
    """A reducing pass's per-unit sums with every shard unit's summed over its mesh (one
    all-reduce per mesh for all of them)."""
    groups: dict[Any, list[int]] = {}
    for j, (_, u, _) in enumerate(sums):
        if u.over is not None:
            groups.setdefault(u.over, []).append(j)
    if not groups:
        return sums
    out = list(sums)
    for group, idx in groups.items():
        parts = [sums[j][2] for j in idx]
        flat = torch.cat([x.reshape(-1).to(parts[0].device, parts[0].dtype) for x in parts])
        dist.all_reduce(flat, group=group)
        at = 0
        for j, x in zip(idx, parts, strict=True):
            n = math.prod(x.shape)
            out[j] = (sums[j][0], sums[j][1], flat[at:at + n].view(x.shape).to(x.dtype))
            at += n
    return out
