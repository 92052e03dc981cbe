"""What a torch twin borrows from its torch.optim class.

- **Validation**: the constructor's arguments go through torch's own constructor first (on the
  same parameters, a throwaway instance), so every input torch refuses is refused with the
  same exception type (`foreach=True` with a tensor lr, tensor betas mixed with floats, a
  tensor lr of two elements, duplicate parameters, …); the message is thalweg's (naming the
  argument and value) where thalweg's schema also objects, followed by torch's.
- **`differentiable=True` / `capturable=True`**: torch's own implementation (its for-loop,
  differentiable through `step()`; its CUDA-graph path) runs over this optimizer's param groups
  and state, which is torch's per-parameter layout anyway: `state_dict()` is the same, and
  loads into or from the flat mode. The memory options and `compile` do not apply there.
"""

from __future__ import annotations

import inspect
import types
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from thalweg.optim.registry import HyperparameterError

__all__ = ["check_like_torch", "delegate_step", "delegated_method", "torch_refusal"]

#: the options that make a twin run torch's own implementation (see the module docstring)
DELEGATED = ("differentiable", "capturable")


def _plain(value: Any) -> Any:
    """A thalweg-only value torch cannot check (an lr schedule) as one it can (its value at 0)."""
    if callable(value) and not isinstance(value, Tensor):
        return float(value(0))
    return value


def torch_refusal(torch_cls: type[torch.optim.Optimizer], params: Any,
                  kwargs: Mapping[str, Any]) -> Exception | None:
    """The exception torch's constructor raises for these arguments (None if it accepts them)."""
    accepted = set(inspect.signature(torch_cls.__init__).parameters)
    kw = {k: _plain(v) for k, v in kwargs.items() if k in accepted}
    if isinstance(params, list):
        params = [{k: _plain(v) for k, v in g.items()} if isinstance(g, dict) else g for g in params]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # our own construction warns where torch would
            torch_cls(params, **kw)
    except Exception as e:
        return e
    return None


def check_like_torch(torch_cls: type[torch.optim.Optimizer] | None, params: Any, kwargs: Mapping[str, Any],
                     check: Callable[[], None]) -> Any:
    """Run thalweg's own `check()` of the arguments and torch's constructor on them; refuse
    what either refuses, with torch's exception type where torch refuses (the message: ours,
    then torch's). Returns `params` as a list (an iterator is read twice)."""
    if not isinstance(params, (Tensor, dict)) and hasattr(params, "__iter__"):
        params = list(params)
    refusal = None if torch_cls is None else torch_refusal(torch_cls, params, kwargs)
    try:
        check()
    except (ValueError, TypeError) as ours:
        if refusal is None or not isinstance(refusal, (ValueError, TypeError, RuntimeError)):
            raise  # torch accepts it, or crashes on it (an IndexError is no refusal to copy)
        # an instance of both types: torch's (what torch users catch) and ours (what ours do)
        cls = type(ours) if isinstance(ours, type(refusal)) else type(type(ours).__name__, (type(ours), type(refusal)), {})
        # torch's own words where it refused on purpose (its ValueErrors); a TypeError from
        # comparing a string with a number says nothing ours does not
        words = "" if isinstance(refusal, TypeError) else f"torch.optim: {refusal}"
        if isinstance(ours, HyperparameterError):  # ours, naming the argument, then torch's words
            note = "; ".join(x for x in (ours.note, words) if x)
            raise cls(ours.where, ours.value, ours.problem, note) from None
        raise cls(f"{ours} ({words})" if words else str(ours)) from None
    if refusal is not None:
        raise refusal
    return params


def delegate_step(opt: torch.optim.Optimizer, torch_cls: type[torch.optim.Optimizer],
                  closure: Callable[[], Any] | None) -> Any:
    """torch's `step` of `torch_cls`, run over `opt`'s groups and state (not wrapped again by
    torch's step hooks: `opt.step` already runs them)."""
    fn = torch_cls.step
    if getattr(fn, "hooked", False):
        fn = fn.__wrapped__  # type: ignore[attr-defined]
    return fn(opt, closure)


def delegated_method(opt: Any, torch_cls: type[torch.optim.Optimizer] | None, name: str) -> Any:
    """`torch_cls.<name>` bound to `opt` (torch's step calls helpers such as `_init_group`)."""
    fn = getattr(torch_cls, name, None) if torch_cls is not None else None
    if fn is None:
        raise AttributeError(name)
    return types.MethodType(fn, opt)
