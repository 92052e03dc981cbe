"""StackedOptimizer: the base of the per-tensor and matrix rules (Adafactor, Muon, Shampoo,
SOAP). Parameters of one group with equal (device, dtype, shape) are packed into one buffer
that reads as a stack (k, *shape), so a rule's matrix work is one batched call over the
stack (`torch.bmm`, `torch.linalg.eigh`) instead of one Python iteration per parameter.

As in the flat core, `p.data` is a view of the stack and `p.grad` one while torch would hold a
gradient (autograd accumulates into it), and `state_dict()` hands out torch.optim's
per-parameter layout as views of the stacked state, so checkpoints load both ways. A
parameter without a gradient takes no part in a step (torch's rule); one with a different
step count runs the same math on its own slice of the stack. A parameter frozen
(`requires_grad=False`) when the optimizer is made joins a stack of its own the first time it
has a gradient, so unfreezing it trains it as torch would.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from thalweg.optim.engine.segment import Segment, clear_grad

__all__ = ["Stack", "StackedOptimizer", "resolve_params"]


def resolve_params(params: Any) -> tuple[list[Any], dict[int, str]]:
    """Parameters or groups as torch takes them; also (name, tensor) pairs or a module, whose
    names are kept (id(param) → name) for rules that split parameters by role."""
    if isinstance(params, torch.nn.Module):
        params = params.named_parameters()
    if isinstance(params, Tensor):
        raise TypeError("params must be an iterable of Tensors or dicts, got a Tensor")
    items = list(params)
    names: dict[int, str] = {}
    if items and all(isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str) for x in items):
        names = {id(p): n for n, p in items}
        items = [p for _, p in items]
    return items, names


@dataclass(eq=False)
class Stack:
    """The parameters of one group with equal (device, dtype, shape), as one buffer (k, *shape)."""

    seg: Segment
    shape: torch.Size
    state: dict[str, Tensor] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    ready: bool = False  # state created (at the first step or load)

    @property
    def k(self) -> int:
        return len(self.seg.params)

    @property
    def params(self) -> Tensor:
        return self.seg.flat_p.view(self.k, *self.shape)

    @property
    def grads(self) -> Tensor:
        return self.seg.flat_g.view(self.k, *self.shape)


class StackedOptimizer(torch.optim.Optimizer):
    """A `torch.optim.Optimizer` over stacks of equal-shape parameters.

    Subclasses write :meth:`_init_state` (stacked state, created at the first step as torch
    does), :meth:`_param_state` (torch's per-parameter layout as views) and :meth:`_update`
    (one step over `stack.params[sl]`; `sl` selects all of the stack or one parameter).
    """

    #: torch's state for this rule has a per-parameter "step" (Muon's has none).
    counts_steps: bool = True

    def __init__(self, params: Any, defaults: dict[str, Any]) -> None:
        self._stacks: list[Stack] = []
        self._loose: list[tuple[int, Tensor]] = []  # frozen when built: stacked once they have a gradient
        self._built = False
        super().__init__(params, defaults)
        for gi in range(len(self.param_groups)):
            self._build(gi)
        self._built = True

    # ------------------------------------------------------------------ construction
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        if self._built:
            self._build(len(self.param_groups) - 1)

    def _stacked(self, p: Tensor, group: Mapping[str, Any]) -> bool:
        """Whether this rule stacks `p` (others are left to a helper optimizer)."""
        return True

    def _build(self, gi: int) -> None:
        group = self.param_groups[gi]
        buckets: dict[tuple[Any, ...], list[Tensor]] = {}
        for p in group["params"]:
            if not self._stacked(p, group):
                continue
            if p.requires_grad and not p.is_complex():  # complex: refused at step, as torch does
                buckets.setdefault((p.device, p.dtype, tuple(p.shape)), []).append(p)
            else:
                self._loose.append((gi, p))
        for (_, _, shape), plist in buckets.items():
            self._stacks.append(Stack(Segment(gi, plist), torch.Size(shape)))

    def _promote(self) -> None:
        """Loose parameters that have a gradient now (unfrozen) join stacks of their own, with
        any state a loaded checkpoint gave them."""
        ready = [(gi, p) for gi, p in self._loose if p.grad is not None]
        if not ready:
            return
        if any(p.is_complex() for _, p in ready):
            raise RuntimeError(f"{type(self).__name__} does not support complex parameters")
        self._loose = [(gi, p) for gi, p in self._loose if p.grad is None]
        buckets: dict[tuple[Any, ...], list[Tensor]] = {}
        for gi, p in ready:
            buckets.setdefault((gi, p.device, p.dtype, tuple(p.shape)), []).append(p)
        for (gi, _, _, shape), plist in buckets.items():
            st = Stack(Segment(gi, plist), torch.Size(shape))
            self._stacks.append(st)
            if any(self.state.get(p) for p in plist):
                self._load_stack(st)

    # ------------------------------------------------------------------ subclass hooks
    def _init_state(self, st: Stack, group: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def _param_state(self, st: Stack, i: int) -> dict[str, Tensor]:
        raise NotImplementedError

    def _update(self, st: Stack, sl: slice, group: Mapping[str, Any], step: int) -> None:
        raise NotImplementedError

    def _load_param_state(self, st: Stack, i: int, loaded: Mapping[str, Any]) -> None:
        """Copy a loaded per-parameter state into the stacked buffers (default: view by view)."""
        views = self._param_state(st, i)
        missing = [k for k in views if k != "step" and k not in loaded]
        if missing:
            raise ValueError(f"state of parameter {i} lacks {missing} needed by {type(self).__name__}")
        for k, view in views.items():
            if k == "step":
                continue
            value = torch.as_tensor(loaded[k])
            if value.shape != view.shape:
                raise ValueError(
                    f"state {k!r} of a parameter has shape {tuple(value.shape)}, "
                    f"{type(self).__name__} expects {tuple(view.shape)}"
                )
            view.copy_(value)

    # ------------------------------------------------------------------ stepping
    def _expose(self, st: Stack, i: int) -> None:
        step = {"step": st.seg.step_t[i]} if self.counts_steps else {}
        self.state[st.seg.params[i]] = {**step, **self._param_state(st, i)}

    def _ensure_state(self, st: Stack) -> None:
        if not st.ready:
            self._init_state(st, self.param_groups[st.seg.group_index])
            st.ready = True

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Apply one update to every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._promote()
        for st in self._stacks:
            self._step_stack(st, st.seg.sync())
            st.seg.push()
        self._after_step()
        return loss

    def _after_step(self) -> None:
        """Hook for rules with a helper optimizer (Muon's AdamW)."""

    def _step_stack(self, st: Stack, active: list[bool]) -> None:
        seg, group = st.seg, self.param_groups[st.seg.group_index]
        if not any(active):
            return
        self._ensure_state(st)
        s0 = seg.steps[0]
        if all(active) and all(s == s0 for s in seg.steps):
            self._update(st, slice(None), group, s0 + 1)
            seg.steps = [s0 + 1] * st.k
            seg.step_t.add_(1)
            todo = [i for i in range(st.k) if not seg.started[i]]
        else:  # the odd case: the same math, one parameter at a time
            todo = []
            for i, a in enumerate(active):
                if a:
                    self._update(st, slice(i, i + 1), group, seg.steps[i] + 1)
                    seg.steps[i] += 1
                    seg.step_t[i] += 1
                    if not seg.started[i]:
                        todo.append(i)
        for i in todo:
            seg.started[i] = True
            self._expose(st, i)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """torch's `zero_grad`: `p.grad` None (the default), or zeroed where present."""
        for st in self._stacks:
            st.seg.zero_grad(set_to_none)
        for _, p in self._loose:
            clear_grad(p, set_to_none)

    # ------------------------------------------------------------------ state dicts
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        for st in self._stacks:
            self._load_stack(st)

    def _load_stack(self, st: Stack) -> None:
        """Move the state torch's loader put in `self.state` into the stack's buffers."""
        seg = st.seg
        self._ensure_state(st)
        for i, p in enumerate(seg.params):
            loaded = self.state.get(p)
            if not loaded:
                seg.started[i], seg.steps[i] = False, 0
                seg.step_t[i] = 0
                self.state.pop(p, None)
                continue
            if self.counts_steps and "step" not in loaded:
                raise ValueError(f"state of parameter {i} lacks ['step'] needed by {type(self).__name__}")
            self._load_param_state(st, i, loaded)
            n = float(loaded["step"]) if "step" in loaded else 1.0  # a buffer: ≥ 1 step taken
            seg.steps[i], seg.started[i] = int(n), True
            seg.step_t[i] = n
        self._loaded(st)
        for i in range(st.k):
            if seg.started[i]:
                self._expose(st, i)

    def _loaded(self, st: Stack) -> None:
        """Hook: every parameter of `st` has had its state loaded."""

    def __getstate__(self) -> dict[str, Any]:
        # torch.optim keeps only defaults/state/param_groups; the stacks are needed too
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # groups loaded from another implementation's state dict lack this rule's own keys
        super().__setstate__(state)
        for g in self.param_groups:
            for k, v in self.defaults.items():
                g.setdefault(k, v)
