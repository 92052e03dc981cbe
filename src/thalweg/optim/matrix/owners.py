"""Matrix work split across ranks: every matrix of a stacked rule (Muon, Shampoo, SOAP,
Adafactor) has one *owner* rank, which runs the one-process update on the whole matrix and
hands the new values to the other ranks.

Two cases, one idea:

- **Replicas** (DDP: every rank holds the same parameters and, after DDP's all-reduce, the
  same gradients). Each rank stacks only the matrices it owns (views of the parameters, as
  without ranks), steps them, and broadcasts their new values. The work of a matrix is done
  once; its state lives on its owner only (ZeRO-1 by matrix).
- **DTensor parameters** (FSDP2's `fully_shard`: a 1-D mesh, `Shard(d)` or `Replicate`). The
  owner gathers the local shards of the gradient and the parameter into full-size buffers,
  steps them as one process would, and scatters each rank its rows back into the
  parameter's local tensor in place (what FSDP2 all-gathers next). Not "Shampoo on local
  shards": the factors see the whole gradient.

Owners are chosen by cost, largest first, each to the least-loaded rank (LPT), in the order
the parameters were given, so every rank computes the same assignment without talking.
The state of a matrix lives on its owner; :meth:`Spread.state_dict` makes a rank-local
state dict whole again (DDP) or presents it with the parameters' layout (DTensor).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from thalweg.optim.engine.dtensor import check_layout, is_dtensor
from thalweg.optim.engine.segment import Segment, clear_grad, scalar_dtype

__all__ = ["FullCopy", "Spread", "matrix_cost"]


def matrix_cost(shape: Sequence[int], ns_steps: int = 0, block: int = 0, frequency: int = 1) -> float:
    """Relative cost of one matrix's update: Newton–Schulz (`ns_steps`: per iteration
    2·s²·l + s³ for an s×l matrix, s ≤ l), Kronecker factors (`block`: accumulate and apply
    ~ 2(m²n + mn²) per block, an eigendecomposition ~ 10(m³ + n³) every `frequency` steps),
    else elementwise (the element count)."""
    numel = math.prod(shape)
    if len(shape) < 2:
        return float(numel)
    m, n = shape[0], numel // shape[0]
    if ns_steps:
        s, big = min(m, n), max(m, n)
        return float(ns_steps * (2 * s * s * big + s**3))
    if block:
        bm, bn = min(m, block), min(n, block)
        blocks = math.ceil(m / bm) * math.ceil(n / bn)
        return float(blocks * (4 * (bm * bm * bn + bm * bn * bn) + 10 * (bm**3 + bn**3) / frequency))
    return float(numel)


class FullCopy:
    """The owner's full-size copy of some DTensor parameters of one shape (k, *shape), laid
    out as a :class:`~thalweg.optim.engine.segment.Segment` is, so a Stack runs over it unchanged.
    The parameters themselves stay DTensors; :class:`Spread` fills and empties the copy."""

    def __init__(self, group_index: int, params: list[Tensor], shape: torch.Size) -> None:
        self.group_index = group_index
        self.params = params
        n = math.prod(shape)
        self.numels = [n] * len(params)
        self.offsets = [i * n for i in range(len(params))]
        self.numel = n * len(params)
        local = params[0].to_local()
        self.device, self.dtype = local.device, local.dtype
        self.flat_p = torch.zeros(self.numel, dtype=self.dtype, device=self.device)
        self.flat_g = torch.zeros(self.numel, dtype=self.dtype, device=self.device)
        self.p_views = [self.flat_p[o:o + n].view(shape) for o in self.offsets]
        self.g_views = [self.flat_g[o:o + n].view(shape) for o in self.offsets]
        self.active = [False] * len(params)
        self.steps = [0] * len(params)
        self.started = [False] * len(params)
        self.step_t = torch.zeros(len(params), dtype=scalar_dtype())

    def sync(self) -> list[bool]:
        """Which parameters have a gradient this step (set when the gradients were gathered)."""
        return list(self.active)

    def push(self) -> None:
        """Nothing to write back here: :meth:`Spread.after_step` scatters the new values."""

    def zero_grad(self, set_to_none: bool = True) -> None:
        """The parameters' own gradients are cleared by :meth:`Spread.zero_grad`."""


@dataclass(eq=False)
class _Bucket:
    """Parameters of one group with one shape (a stack across ranks) and their owners."""

    group_index: int
    shape: torch.Size
    params: list[Tensor]
    owners: list[int]
    mine: Any = None  # this rank's Segment (replicas) or FullCopy (DTensor), None if it owns none
    shard_dim: int | None = None  # DTensor Shard(d); None: replicated
    recv: dict[int, Tensor] = field(default_factory=dict)  # broadcast landing buffers per owner

    def owned_by(self, r: int) -> list[int]:
        return [i for i, o in enumerate(self.owners) if o == r]


class Spread:
    """Owners for the matrices of one optimizer, and the collectives that move them.

    `group`: the process group over which parameters are replicated (DDP) or sharded (the
    DTensor mesh's). Every collective passes through it, so its timeout bounds each one.
    """

    def __init__(self, group: Any, dtensor: bool, mesh: Any = None) -> None:
        self.group = group
        self.dtensor = dtensor
        self.mesh = mesh
        self.world = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        self.loads = [0.0] * self.world
        self.buckets: list[_Bucket] = []
        self._owner_of: dict[int, int] = {}  # id(param) → its owner

    # ------------------------------------------------------------------ set-up
    @classmethod
    def detect(cls, params: Iterable[Tensor], process_group: Any, who: str) -> Spread | None:
        """A Spread for DTensor parameters (their mesh) or for `process_group` (replicas);
        None for plain tensors without a group. Refuses, naming the setting, what it cannot
        split: a mesh of more than one dimension (HSDP, tensor parallel), Partial
        placements, DTensors mixed with plain tensors, CPU offload."""
        params = list(params)
        dts = [p for p in params if is_dtensor(p)]
        if not dts:
            if process_group is None:
                return None
            if not dist.is_initialized():
                raise ValueError(f"{who}: process_group was given but torch.distributed is not initialized")
            return cls(process_group, dtensor=False)
        if len(dts) != len(params):
            raise ValueError(f"{who}: DTensor parameters (FSDP2) mixed with plain tensors; shard every "
                             "parameter of this optimizer (fully_shard on the root module too) or none")
        mesh = dts[0].device_mesh
        for p in dts:
            if p.device_mesh != mesh:
                raise ValueError(f"{who}: parameters on different device meshes; one optimizer per mesh")
            check_layout(p, who, replicate=True)
        group = mesh.get_group()
        if process_group is not None and (dist.get_process_group_ranks(process_group)
                                          != dist.get_process_group_ranks(group)):
            raise ValueError(f"{who}: process_group differs from the DTensor parameters' mesh; leave it out")
        return cls(group, dtensor=True, mesh=mesh)

    def assign(self, costs: Sequence[float]) -> list[int]:
        """Owners for matrices of these costs: largest first, each to the least-loaded rank
        (ties: the lower rank), continuing the loads of earlier groups."""
        owners = [0] * len(costs)
        for i in sorted(range(len(costs)), key=lambda j: -costs[j]):
            r = min(range(self.world), key=lambda q: (self.loads[q], q))
            owners[i] = r
            self.loads[r] += costs[i]
        return owners

    def take(self, gi: int, buckets: list[tuple[torch.Size, list[Tensor], float]]) -> list[tuple[torch.Size, Any]]:
        """Assign owners to one group's buckets (shape, params, cost of one matrix); returns
        (shape, segment) for each bucket this rank owns part of."""
        costs = [c for _, plist, c in buckets for _ in plist]
        owners = self.assign(costs)
        out, at = [], 0
        for shape, plist, _ in buckets:
            b = _Bucket(gi, shape, plist, owners[at:at + len(plist)])
            at += len(plist)
            self._owner_of.update({id(p): r for p, r in zip(plist, b.owners, strict=True)})
            if self.dtensor:
                pl = plist[0].placements[0]
                b.shard_dim = pl.dim if pl.is_shard() else None
                for p in plist:
                    if p.placements != plist[0].placements:
                        raise ValueError("parameters of one shape with different placements; shard them alike")
                    self._check_local(p, b.shard_dim)
            own = [plist[i] for i in b.owned_by(self.rank)]
            if own:
                b.mine = FullCopy(gi, own, shape) if self.dtensor else Segment(gi, own)
                out.append((shape, b.mine))
            self.buckets.append(b)
        return out

    def rows(self, size: int, q: int) -> tuple[int, int]:
        """Rank q's range along a sharded dimension of `size` (torch.chunk's split, as DTensor's)."""
        c = -(-size // self.world)
        return min(q * c, size), min((q + 1) * c, size)

    def _check_local(self, p: Tensor, d: int | None) -> None:
        want = list(p.shape)
        if d is not None:
            a, b = self.rows(p.shape[d], self.rank)
            want[d] = b - a
        if list(p.to_local().shape) != want:
            raise ValueError(f"local shard of shape {tuple(p.to_local().shape)} where {tuple(want)} was expected; "
                             "only torch.chunk-style Shard(d) layouts (FSDP2's) are supported")

    # ------------------------------------------------------------------ a step
    def before_step(self) -> None:
        """DTensor: gather every owned matrix's gradient and parameter to its owner."""
        if not self.dtensor:
            return
        works = []
        for b in self.buckets:
            for r in range(self.world):
                idx = b.owned_by(r)
                if not idx:
                    continue
                send = torch.cat([self._local_pair(b, b.params[i]) for i in idx])
                bufs = [torch.empty_like(send) for _ in range(self.world)] if r == self.rank else None
                works.append((b, r, idx, bufs, dist.gather(send, bufs, dst=self.global_rank(r), group=self.group,
                                                            async_op=True)))
        for b, r, idx, bufs, w in works:
            w.wait()
            if r == self.rank:
                self._assemble(b, idx, bufs)

    def after_step(self) -> None:
        """Hand every rank its new parameter values: broadcast (replicas) or scatter (shards)."""
        works: list[tuple[Any, Callable[[], None]]] = []
        for b in self.buckets:
            for r in range(self.world):
                idx = b.owned_by(r)
                if idx:
                    works.append(self._send_back(b, r, idx))
        for w, done in works:
            w.wait()
            done()

    def global_rank(self, r: int) -> int:
        """Rank r of the group, as torch.distributed numbers it."""
        return dist.get_global_rank(self.group, r) if self.group is not None else r

    def _padded(self, b: _Bucket) -> int:
        """Elements of one rank's padded shard of one matrix (the largest shard)."""
        n = math.prod(b.shape)
        if b.shard_dim is None:
            return n
        a, e = self.rows(b.shape[b.shard_dim], 0)
        return n // b.shape[b.shard_dim] * (e - a)

    def _local_pair(self, b: _Bucket, p: Tensor) -> Tensor:
        """This rank's shard of a parameter's gradient (zeros if none) and value, padded, with a
        presence flag: (2·padded + 1,)."""
        size = self._padded(b)
        out = torch.zeros(2 * size + 1, dtype=p.dtype, device=p.to_local().device)
        loc = p.to_local().detach().reshape(-1)
        out[size:size + loc.numel()].copy_(loc)
        if p.grad is not None:
            g = p.grad
            if is_dtensor(g) and g.placements != p.placements:  # e.g. Partial: reduce it first
                g = g.redistribute(p.device_mesh, p.placements)
            g = g.to_local() if is_dtensor(g) else g
            out[:g.numel()].copy_(g.reshape(-1))
            out[-1] = 1
        return out

    def _assemble(self, b: _Bucket, idx: list[int], bufs: list[Tensor]) -> None:
        size, fc = self._padded(b), b.mine
        per = 2 * size + 1
        for j in range(len(idx)):
            gs, ps = [], []
            for q in range(self.world):
                chunk = bufs[q][j * per:(j + 1) * per]
                shape = self._local_shape(b, q)
                n = math.prod(shape)
                gs.append(chunk[:n].view(shape))
                ps.append(chunk[size:size + n].view(shape))
                if q == self.rank:
                    fc.active[j] = bool(chunk[-1] != 0)
            if b.shard_dim is None:
                gs, ps = gs[:1], ps[:1]
            d = b.shard_dim or 0
            torch.cat(gs, dim=d, out=fc.g_views[j])
            torch.cat(ps, dim=d, out=fc.p_views[j])

    def _local_shape(self, b: _Bucket, q: int) -> list[int]:
        shape = list(b.shape)
        if b.shard_dim is not None:
            a, e = self.rows(shape[b.shard_dim], q)
            shape[b.shard_dim] = e - a
        return shape

    def _send_back(self, b: _Bucket, r: int, idx: list[int]) -> tuple[Any, Callable[[], None]]:
        params = [b.params[i] for i in idx]
        mine = r == self.rank
        if not self.dtensor:  # replicas: the owner's segment is the parameters themselves
            buf = b.mine.flat_p if mine else b.recv.setdefault(r, torch.empty(
                len(idx) * math.prod(b.shape), dtype=params[0].dtype, device=params[0].device))
            w = dist.broadcast(buf, src=self.global_rank(r), group=self.group, async_op=True)

            def done() -> None:
                if not mine:
                    torch._foreach_copy_([p.data for p in params], list(buf.view(len(idx), *b.shape)))
            return w, done
        if b.shard_dim is None:  # replicated DTensors
            buf = b.mine.flat_p if mine else torch.empty(len(idx) * math.prod(b.shape), dtype=params[0].dtype,
                                                         device=params[0].to_local().device)
            w = dist.broadcast(buf, src=self.global_rank(r), group=self.group, async_op=True)
            return w, lambda: torch._foreach_copy_([p.to_local() for p in params],
                                                   list(buf.view(len(idx), *b.shape)))
        size = self._padded(b)
        recv = torch.empty(len(idx) * size, dtype=params[0].dtype, device=params[0].to_local().device)
        scatter = None
        if mine:
            scatter = []
            for q in range(self.world):
                out = torch.zeros(len(idx) * size, dtype=recv.dtype, device=recv.device)
                a, e = self.rows(b.shape[b.shard_dim], q)
                for j in range(len(idx)):
                    piece = b.mine.p_views[j].narrow(b.shard_dim, a, e - a)
                    out[j * size:j * size + piece.numel()].copy_(piece.reshape(-1))
                scatter.append(out)
        w = dist.scatter(recv, scatter, src=self.global_rank(r), group=self.group, async_op=True)

        def place() -> None:
            for j, p in enumerate(params):
                loc = p.to_local()
                loc.copy_(recv[j * size:j * size + loc.numel()].view_as(loc))
        return w, place

    # ------------------------------------------------------------------ gradients
    def zero_grad(self, set_to_none: bool) -> None:
        """torch's `zero_grad` for the gradients no stack holds as views: every DTensor's (the
        full copies are refilled each step), and the other owners' matrices on replicas."""
        for b in self.buckets:
            views = set() if self.dtensor or b.mine is None else {id(p) for p in b.mine.params}
            for p in b.params:
                if id(p) not in views:
                    clear_grad(p, set_to_none)

    def owner(self, p: Tensor) -> int | None:
        """The rank whose state holds `p`'s matrix state (None: not one of ours)."""
        return self._owner_of.get(id(p))
