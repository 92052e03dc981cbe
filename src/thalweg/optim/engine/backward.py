"""The optimizer step fused into backward: each bucket of parameters is updated from its
post-accumulate-grad hook as soon as its last gradient has arrived, and its gradients are
freed there, so a training step holds the gradients of one bucket, not of the model.

Gradient memory: the flat core normally keeps one gradient buffer per segment (`p.grad` are
views of it), which would stay allocated for the whole of backward. In this mode a segment
has no flat gradient: its parameters are cut into buckets of at most `bucket_numel` elements
(contiguous in the flat parameter buffer, whole parameters; backward meets the last ones
first). A bucket's gradient buffer is allocated just before backward reaches it (when the
bucket before it completes) and its parameters' `p.grad` are views of it, into which
autograd accumulates in place; when its last gradient arrives the update runs over the
bucket's range of the flat buffers and the buffer is freed. A bucket of one parameter uses
autograd's own gradient tensor. So at any moment one bucket's gradients are alive, besides
the gradient autograd is computing.
Parameters that got no gradient in a backward are skipped (torch's rule), by a callback at
the end of backward that updates what its incomplete buckets received.

Reductions and hooks: a bucket holds whole parameters, so a per-tensor reduction (LAMB's and
LARS's trust ratios) is taken over the bucket, exactly as over the segment in `step()`; the
optimizer's step hooks (`_begin_step`, `_end_step`: schedule-free's group bookkeeping) run
once per backward, before its first bucket's update and after its last.
Refused, with a clear error: a chain that needs a global norm (`clip_by_global_norm`) or a
global reduction (`reduces = "global"`: Prodigy's d): the sum over all gradients is not
known until backward ends, and by then most parameters have been updated; clip each bucket
yourself, or use the ordinary step. One backward is one step (no gradient accumulation
across backward calls).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from thalweg.optim.transforms.chain import Chain

from . import kernel, plan
from .flat import FlatCore
from .kernel import autocast_off
from .memory import DEFAULT_BUCKET

if TYPE_CHECKING:
    from .segment import Segment

__all__ = ["BackwardStepper", "refuse_distributed", "step_in_backward"]


def refuse_distributed(opt: Any) -> None:
    """Step-in-backward under DDP (or any data parallelism over plain tensors) would update
    each rank from its own local gradient, before the all-reduce: ranks would train apart."""
    from torch import distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return
    from torch.distributed.tensor import DTensor

    if all(isinstance(p, DTensor) for seg in opt._segments for p in seg.params):
        return
    raise RuntimeError(
        f"in_backward=True: {type(opt).__name__} would update each of the {dist.get_world_size()} ranks from "
        "its own gradient before DistributedDataParallel averages them, so the ranks would train apart; "
        "use in_backward=False (the ordinary step) under torch.distributed")


def step_in_backward(model: torch.nn.Module | Any, opt: FlatCore, bucket_numel: int | None = None) -> FlatCore:
    """Switch `opt` (a flat optimizer over `model`'s parameters) to updating during
    backward; returns `opt`, whose `step()` then only runs a closure and `zero_grad()`
    nothing. Same as constructing it with `in_backward=True`."""
    if not isinstance(opt, FlatCore):
        raise TypeError(f"step_in_backward needs a thalweg flat optimizer, got {type(opt).__name__}")
    params = set(map(id, model.parameters() if isinstance(model, torch.nn.Module) else model))
    ours = {id(p) for seg in opt._segments for p in seg.params}
    if not params <= ours | {id(p) for _, p in opt._loose}:
        raise ValueError("step_in_backward: the model has parameters this optimizer does not update")
    if opt._backward is None:
        opt._backward = BackwardStepper(opt, bucket_numel or opt._bucket_numel)
    return opt


@dataclass(eq=False)
class _Bucket:
    seg: Segment
    first: int  # index of the first parameter
    stop: int  # one past the last
    buf: Tensor | None = None
    arrived: set[int] = field(default_factory=set)

    @property
    def start(self) -> int:  # first element in the segment
        return self.seg.offsets[self.first]

    @property
    def numel(self) -> int:
        return self.seg.offsets[self.stop - 1] + self.seg.numels[self.stop - 1] - self.start


class BackwardStepper:
    """The hooks and buckets of one optimizer in step-in-backward mode."""

    def __init__(self, opt: FlatCore, bucket_numel: int | None = None) -> None:
        self.opt = opt
        self.bucket_numel = int(bucket_numel or DEFAULT_BUCKET)
        self.handles: list[Any] = []
        self.buckets: list[_Bucket] = []
        self.queued = False
        for seg in opt._segments:
            self.check(opt._ensure_chain(seg))
        self.attach()

    def check(self, chain: Chain) -> None:
        """Refuse chains that need every gradient before any update."""
        if chain.needs_global_norm:
            raise ValueError(
                "in_backward: clip_by_global_norm needs the norm of every gradient before any parameter "
                "is updated, but step-in-backward updates each bucket as soon as its gradients arrive; "
                "use the ordinary step (or clip per parameter with clip())")
        for ps in chain.passes:
            if ps.reducer is not None and ps.reducer.transform.reduces == "global":
                raise ValueError(
                    f"in_backward: {type(self.opt).__name__}'s {ps.reducer.transform.name} reduces over every "
                    "parameter (reduces='global') before any is updated, but step-in-backward updates each "
                    "bucket as soon as its gradients arrive; use the ordinary step")

    def attach(self) -> None:
        """(Re)build the buckets and hooks of every segment; frees the flat gradients."""
        for h in self.handles:
            h.remove()
        self.handles, self.buckets = [], []
        for seg in self.opt._segments:
            seg.flat_g = seg.flat_g.new_empty(0)
            seg.g_views = [None] * len(seg.params)  # type: ignore[list-item]
            seg.grad_views = False  # the buckets own the gradients now
            stop = len(seg.params)
            while stop > 0:  # backward meets the last parameters first
                first, size = stop - 1, seg.numels[stop - 1]
                while first > 0 and size + seg.numels[first - 1] <= self.bucket_numel:
                    first -= 1
                    size += seg.numels[first]
                bucket = _Bucket(seg, first, stop)
                self.buckets.append(bucket)
                for i in range(first, stop):
                    seg.params[i].grad = None
                    self.handles.append(seg.params[i].register_post_accumulate_grad_hook(self._hook(bucket, i)))
                stop = first
        if self.buckets:
            self._prepare(self.buckets[0])

    def _hook(self, bucket: _Bucket, i: int) -> Callable[[Tensor], None]:
        def hook(p: Tensor) -> None:
            with torch.no_grad(), autocast_off([p.device.type]):
                self._arrive(bucket, i, p)

        return hook

    def _arrive(self, bucket: _Bucket, i: int, p: Tensor) -> None:
        if not self.queued:  # the first gradient of this backward: the step begins
            refuse_distributed(self.opt)
            self.opt._begin_step()
            torch.autograd.Variable._execution_engine.queue_callback(self.flush)
            self.queued = True
        if bucket.stop - bucket.first == 1:  # one parameter: its own gradient is the bucket
            bucket.buf = p.grad.reshape(-1) if p.grad is not None else None
            p.grad = None
        else:
            if bucket.buf is None:  # not ready (backward came in another order): allocate now
                self._prepare(bucket)
            view = self._view(bucket, i)
            if p.grad is not None and p.grad.data_ptr() != view.data_ptr():
                view.copy_(p.grad)
            p.grad = None
        if bucket.buf is None:
            return
        bucket.arrived.add(i)
        if len(bucket.arrived) == bucket.stop - bucket.first:
            self._update(bucket)
            k = self.buckets.index(bucket) + 1  # backward meets the next one soon: ready its buffer
            if k < len(self.buckets) and not self.buckets[k].arrived:
                self._prepare(self.buckets[k])

    def _prepare(self, bucket: _Bucket) -> None:
        """Allocate a bucket's gradient buffer and make its parameters' `p.grad` views of it,
        so autograd accumulates into it in place (no copy, no second gradient alive)."""
        if bucket.buf is not None or bucket.stop - bucket.first == 1:
            return
        seg = bucket.seg
        bucket.buf = torch.zeros(bucket.numel, dtype=seg.dtype, device=seg.device)
        for j in range(bucket.first, bucket.stop):
            seg.params[j].grad = self._view(bucket, j)

    @staticmethod
    def _view(bucket: _Bucket, j: int) -> Tensor:
        seg, a = bucket.seg, bucket.seg.offsets[j] - bucket.start
        assert bucket.buf is not None
        v = bucket.buf[a : a + seg.numels[j]].view(seg.shapes[j])
        return torch.view_as_complex(v) if seg.complex[j] else v

    def flush(self) -> None:
        """End of backward: update what incomplete buckets received (the rest is skipped) and
        ready the first bucket of the next backward."""
        self.queued = False
        with torch.no_grad(), autocast_off({b.seg.device.type for b in self.buckets}):
            for bucket in self.buckets:
                if bucket.arrived:
                    self._update(bucket)
                elif bucket.buf is not None and bucket is not self.buckets[0]:
                    self._release(bucket)
            loose = [(gi, p) for gi, p in self.opt._loose if p.grad is not None]  # unfrozen since construction
            if loose:
                plan.run([plan.plan_loose(self.opt, gi, p) for gi, p in loose], self.opt._reduced,
                         kernel.EAGER_CHUNK)
                for _, p in loose:
                    p.grad = None
            if self.buckets:
                self._prepare(self.buckets[0])
            self.opt._end_step()

    @staticmethod
    def _release(bucket: _Bucket) -> None:
        for j in range(bucket.first, bucket.stop):
            bucket.seg.params[j].grad = None
        bucket.buf, bucket.arrived = None, set()

    def _update(self, bucket: _Bucket) -> None:
        seg, opt = bucket.seg, self.opt
        chain = opt._ensure_chain(seg)
        group = opt.param_groups[seg.group_index]
        idx = sorted(bucket.arrived)
        assert bucket.buf is not None
        # the parameters that got a gradient, in ranges of neighbours with equal step counts
        active = [i in bucket.arrived for i in range(bucket.first, bucket.stop)]
        outside = seg.pull(range(bucket.first, bucket.stop))
        for r0, r1 in plan.runs(active, seg.steps[bucket.first : bucket.stop]):
            i0, i1 = bucket.first + r0, bucket.first + r1
            a = seg.offsets[i0]
            b = seg.offsets[i1 - 1] + seg.numels[i1 - 1]
            g = bucket.buf[a - bucket.start : b - bucket.start]
            unit = plan.range_unit(opt, seg, chain, group, seg.steps[i0] + 1, i0, i1, g, kernel.EAGER_CHUNK)
            plan.run([(chain, [unit], lambda: None)], opt._reduced, kernel.EAGER_CHUNK)
        seg.push(outside)
        plan.count_steps(opt, seg, chain, idx)
        self._release(bucket)
