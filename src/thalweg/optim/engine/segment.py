"""A parameter group's tensors on one (device, dtype), packed into flat buffers.

`p.data` is a view of one parameter buffer, and `p.grad` a view of one gradient buffer
exactly while torch would hold a gradient for `p`: None until a backward reaches it (or
after `zero_grad()`), so a parameter without a gradient is skipped as torch skips it.
A pre-hook on each parameter's AccumulateGrad node installs the (zeroed) view as `p.grad`
just before autograd accumulates into it, so autograd adds in place into the flat buffer
and a whole update is one pass over memory. The hook runs only when the node runs (a real
`backward()`), never for `torch.autograd.grad`, which leaves `p.grad` alone as in torch.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from thalweg.optim.transforms.chain import Chain
from thalweg.optim.transforms.context import scalar_dtype

__all__ = ["Segment", "clear_grad", "real_dtype"]


def real_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of a tensor's real view (complex64 → float32; a real dtype is its own)."""
    return {torch.complex64: torch.float32, torch.complex128: torch.float64,
            torch.complex32: torch.float16}.get(dtype, dtype)


def clear_grad(p: Tensor, set_to_none: bool) -> None:
    """torch's `zero_grad` of one parameter: `p.grad` None, or zeroed in place (detached)."""
    g = p.grad
    if g is None:
        return
    if set_to_none:
        p.grad = None
        return
    if g.grad_fn is not None:
        g.detach_()
    else:
        g.requires_grad_(False)
    g.zero_()


def _arrive_hook(ref: weakref.ref[Segment], i: int) -> Callable[[Any], None]:
    """The AccumulateGrad pre-hook of parameter i (a weak reference: the hook never keeps a
    dropped optimizer's buffers alive)."""

    def hook(grads: Any) -> None:
        seg = ref()
        if seg is not None:
            seg.arrive(i)

    return hook


class Segment:
    """The parameters of one group on one (device, dtype), packed into flat buffers."""

    def __init__(self, group_index: int, params: list[Tensor]) -> None:
        self.group_index = group_index
        self.params = params
        #: a complex parameter is kept as its real view (…, 2), as torch's own rules run it
        self.complex = [p.is_complex() for p in params]
        self.shapes = [torch.Size((*p.shape, 2)) if c else p.shape for p, c in zip(params, self.complex, strict=True)]
        self.numels = [math.prod(s) for s in self.shapes]
        self.offsets: list[int] = []
        off = 0
        for n in self.numels:
            self.offsets.append(off)
            off += n
        self.numel = off
        p0 = params[0]
        self.device, self.dtype = p0.device, real_dtype(p0.dtype)
        self.flat_p = torch.empty(off, dtype=self.dtype, device=p0.device)
        self.flat_g = torch.zeros(off, dtype=self.dtype, device=p0.device)
        self.p_views = [self._view(self.flat_p, i) for i in range(len(params))]
        self.g_views = [self._view(self.flat_g, i) for i in range(len(params))]
        #: g_views[i] holds zeros (set by zero_grad, cleared when autograd starts adding into it)
        self.clean = [True] * len(params)
        #: whether `p.grad` may be a view of `flat_g` (False while step-in-backward owns the gradients)
        self.grad_views = True
        self._nodes: list[Any] = [None] * len(params)  # AccumulateGrad nodes (kept: their hooks live on them)
        self._handles: list[Any] = [None] * len(params)
        for i, (p, pv) in enumerate(zip(params, self.p_views, strict=True)):
            pv.copy_(p.detach())
            p.data = pv  # a gradient the user set stays `p.grad` (read by `sync`, never written)
            self.watch(i)
        self.ptrs = [p.data_ptr() for p in params]
        self.outside: list[int] = []  # parameters whose data another owner rebound (see `sync`)
        self.state: dict[str, Tensor] = {}  # per state key: its buffer (int8: codes, padded to whole blocks)
        self.scales: dict[str, Tensor] = {}  # int8 state: one float32 scale per block
        self.master: Tensor | None = None  # float32 master copy of bf16/fp16 parameters
        self.layout: Any = None  # lowprec.Layout: how the state is stored (set with the chain)
        self.steps = [0] * len(params)  # updates taken per parameter
        self.started = [False] * len(params)
        self.step_t = torch.zeros(len(params), dtype=scalar_dtype())  # torch's per-param 'step'
        self.chain: Chain | None = None
        self.chain_key: tuple[Any, ...] | None = None
        self.fn: Callable[..., None] | None = None
        self.compiled = False
        self.hp: Tensor | None = None
        self.scratch: Tensor | None = None  # the update between passes of a multi-pass chain

    def __getstate__(self) -> dict[str, Any]:
        # compiled functions are rebuilt on demand (they do not pickle or deep-copy); autograd
        # nodes and hook handles belong to these very tensors (a copy watches its own)
        return {**self.__dict__, "fn": None, "compiled": False, "hp": None, "scratch": None, "range_fn": None,
                "_nodes": [None] * len(self.params), "_handles": [None] * len(self.params)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        for i in range(len(self.params)):
            self.watch(i)

    def _view(self, flat: Tensor, i: int) -> Tensor:
        v = flat[self.offsets[i] : self.offsets[i] + self.numels[i]].view(self.shapes[i])
        return torch.view_as_complex(v) if self.complex[i] and flat.dtype == self.dtype else v

    # ------------------------------------------------------------------ gradient presence
    def watch(self, i: int) -> None:
        """Hook parameter i's AccumulateGrad node (once it requires grad; a parameter frozen
        at the time is hooked when it is first seen unfrozen)."""
        p = self.params[i]
        if self._nodes[i] is not None or not p.requires_grad or type(p).__name__ == "FlatParameter":
            # FSDP1's flat parameter changes shape between sharded and unsharded every step: a
            # node kept from the sharded one would pin the wrong shape into autograd (its
            # gradient, set by FSDP, is copied in at step instead)
            return
        node = torch.autograd.graph.get_gradient_edge(p).node
        self._nodes[i] = node  # autograd keeps only a weak reference: without ours, hook and node go
        self._handles[i] = node.register_prehook(_arrive_hook(weakref.ref(self), i))

    def arrive(self, i: int) -> None:
        """Autograd is about to accumulate into parameter i: if it has no gradient (torch's
        None), its zeroed view of the flat buffer becomes `p.grad`, so autograd adds into it."""
        p = self.params[i]
        if p.grad is not None or not self.grad_views or p.shape != self.g_views[i].shape:
            return  # a wrapper's resized parameter (FSDP's unsharded flat parameter): its own gradient
        with torch.no_grad():
            if not self.clean[i]:  # the user set p.grad = None by hand: the view holds old values
                self.g_views[i].zero_()
            p.grad = self.g_views[i]
        self.clean[i] = False

    def zero_grad(self, set_to_none: bool = True) -> None:
        """torch's `zero_grad`: one memset of the flat gradient; `p.grad` None (the default)
        or, with `set_to_none=False`, zeroed where present (a parameter without a gradient
        keeps none, as in torch)."""
        self.flat_g.zero_()
        self.clean = [True] * len(self.params)
        for i, p in enumerate(self.params):
            if set_to_none or p.grad is not self.g_views[i]:  # the user's own tensor: zeroed in place
                clear_grad(p, set_to_none)

    def pull(self, indices: Iterable[int]) -> list[int]:
        """Parameters among `indices` whose data was rebound (`p.data = t`: ZeRO's or FSDP's
        flat buffers, `load_state_dict(assign=True)`): they keep it, as torch would, so their
        values are copied in here (and the updated ones back by :meth:`push`)."""
        out = []
        for i in indices:
            p = self.params[i]
            if p.data_ptr() == self.ptrs[i]:
                continue
            old = self.p_views[i]
            if p.shape != old.shape:
                raise ValueError(f"parameter {i} changed shape from {tuple(old.shape)} to {tuple(p.shape)}")
            if (p.dtype, p.device) != (old.dtype, old.device):
                raise ValueError(
                    f"parameter {i} moved from {old.dtype} on {old.device} to {p.dtype} on {p.device} "
                    "after the optimizer was created; create the optimizer after moving the model"
                )
            old.copy_(p.detach())
            out.append(i)
        return out

    def push(self, outside: Iterable[int] | None = None) -> None:
        """After a step: the updated values of rebound parameters (`outside`, default those
        :meth:`sync` found) into their own storage."""
        for i in self.outside if outside is None else outside:
            self.params[i].detach().copy_(self.p_views[i])
        if outside is None:
            self.outside = []

    def sync(self) -> list[bool]:
        """Before a step: bring user-set gradients (copied; `p.grad` stays the user's
        tensor, never written) and rebound parameters (:meth:`pull`) into the flat buffers. Returns which parameters have a gradient (torch skips the
        others)."""
        self.outside = self.pull(range(len(self.params)))
        self.sparse: dict[int, Tensor] = {}  # parameter index → its sparse gradient this step
        active = []
        for i, p in enumerate(self.params):
            g = p.grad
            if g is self.g_views[i]:
                active.append(True)
            elif g is None:
                active.append(False)
            elif g.layout != torch.strided:  # sparse: stepped by the rule's sparse path (torch's)
                self.sparse[i] = g
                active.append(True)
            else:
                if g.shape != p.shape:
                    raise ValueError(f"gradient of parameter {i} has shape {tuple(g.shape)}, expected {tuple(p.shape)}")
                self.g_views[i].copy_(g)  # read only: the user's tensor stays `p.grad`, as in torch
                self.clean[i] = False
                active.append(True)
            self.watch(i)
        return active
