"""A parameter group's tensors on one (device, dtype), packed into flat buffers.

`p.data` and `p.grad` become views of one parameter buffer and one gradient buffer, so
autograd accumulates into the flat gradient and a whole update is one pass over memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from thalweg.optim.transforms.chain import Chain
from thalweg.optim.transforms.context import scalar_dtype

__all__ = ["Segment"]


class Segment:
    """The parameters of one group on one (device, dtype), packed into flat buffers."""

    def __init__(self, group_index: int, params: list[Tensor]) -> None:
        self.group_index = group_index
        self.params = params
        self.numels = [p.numel() for p in params]
        self.offsets: list[int] = []
        off = 0
        for n in self.numels:
            self.offsets.append(off)
            off += n
        self.numel = off
        p0 = params[0]
        self.device, self.dtype = p0.device, p0.dtype
        self.flat_p = torch.empty(off, dtype=p0.dtype, device=p0.device)
        self.flat_g = torch.zeros(off, dtype=p0.dtype, device=p0.device)
        self.p_views = [self._view(self.flat_p, i) for i in range(len(params))]
        self.g_views = [self._view(self.flat_g, i) for i in range(len(params))]
        for p, pv, gv in zip(params, self.p_views, self.g_views, strict=True):
            pv.copy_(p.detach())
            had_grad = p.grad
            p.data = pv
            if had_grad is not None:
                gv.copy_(had_grad)
            p.grad = gv  # zeros until the first backward, which accumulates into it
        self.ptrs = [p.data_ptr() for p in params]
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
        # compiled functions are rebuilt on demand (they do not pickle or deep-copy)
        return {**self.__dict__, "fn": None, "compiled": False, "hp": None, "scratch": None, "range_fn": None}

    def _view(self, flat: Tensor, i: int) -> Tensor:
        return flat[self.offsets[i] : self.offsets[i] + self.numels[i]].view_as(self.params[i])

    def sync(self) -> list[bool]:
        """Bring user-replaced grads / rebound params back into the flat buffers.

        Returns which parameters have a gradient (torch skips the others).
        """
        active = []
        for i, p in enumerate(self.params):
            if p.data_ptr() != self.ptrs[i]:  # `p.data = ...` or load_state_dict(assign=True)
                old = self.p_views[i]
                if p.shape != old.shape:
                    raise ValueError(f"parameter {i} changed shape from {tuple(old.shape)} to {tuple(p.shape)}")
                if (p.dtype, p.device) != (old.dtype, old.device):
                    raise ValueError(
                        f"parameter {i} moved from {old.dtype} on {old.device} to {p.dtype} on {p.device} "
                        "after the optimizer was created; create the optimizer after moving the model"
                    )
                self.p_views[i].copy_(p.detach())
                p.data = self.p_views[i]
                self.ptrs[i] = p.data_ptr()
            g = p.grad
            if g is self.g_views[i]:
                active.append(True)
            elif g is None:
                active.append(False)
            else:
                if g.is_sparse:
                    raise RuntimeError("thalweg optimizers do not support sparse gradients")
                if g.shape != p.shape:
                    raise ValueError(f"gradient of parameter {i} has shape {tuple(g.shape)}, expected {tuple(p.shape)}")
                self.g_views[i].copy_(g)
                p.grad = self.g_views[i]
                active.append(True)
        return active
