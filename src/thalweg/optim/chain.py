"""The machinery of transform chains: hyperparameter references, the `Transform` base
class and `Chain`, which runs transforms in order as one in-place update (eagerly, or traced
by `torch.compile` into one fused kernel)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["Chain", "Hyper", "HyperValue", "Transform", "chain", "global_norm", "resolve"]


@dataclass(frozen=True)
class Hyper:
    """A hyperparameter read from the parameter group at every step (`group[key][index]`)."""

    key: str
    index: int | None = None

    def value(self, group: Mapping[str, Any]) -> Any:
        v = group[self.key]
        return v if self.index is None else v[self.index]


HyperValue = float | int | bool | Callable[[int], float] | Hyper


def resolve(value: Any, group: Mapping[str, Any], step: int) -> float:
    """Turn a hyperparameter (number, 0-d tensor, schedule, or group reference) into a float.

    `step` is the number of updates already taken (0 for the first), the argument schedules get.
    """
    if isinstance(value, Hyper):
        value = value.value(group)
    if isinstance(value, Tensor):
        return float(value.item())
    if callable(value):
        return float(value(step))
    return float(value)


class Transform:
    """One stage of an update rule.

    Subclasses set `state_keys` (buffers created by :meth:`init`), `counts_steps` (the rule
    keeps torch's per-parameter `step`), `needs_global_norm`, implement :meth:`scalars`
    (host-side floats for this step) and :meth:`apply` (elementwise math on tensors).
    """

    state_keys: tuple[str, ...] = ()
    counts_steps: bool = False
    needs_global_norm: bool = False
    n_scalars: int = 0
    #: the transform only multiplies u by its one scalar (eager chains fold it into the add)
    final_scale: bool = False

    def init(self, p: Tensor) -> dict[str, Tensor]:
        """Fresh state buffers shaped like `p` (default: zeros)."""
        return {k: torch.zeros_like(p, memory_format=torch.contiguous_format) for k in self.state_keys}

    def scalars(self, group: Mapping[str, Any], step: int) -> tuple[float, ...]:
        """Per-step scalars, in the order :meth:`apply` reads them; `step` counts from 1."""
        return ()

    def apply(
        self, u: Tensor, p: Tensor, state: Sequence[Tensor], s: Sequence[Any], gnorm: Tensor | None
    ) -> Tensor:
        """Return the new update. State buffers (and `p`, for decoupled decay) are updated in
        place; `u` may be the gradient buffer itself, so it is never modified in place."""
        raise NotImplementedError

    def structure(self) -> tuple[Any, ...]:
        """Whatever changes the traced graph (not the scalar values)."""
        return (type(self).__name__,)


class Chain:
    """Transforms applied in order; the result `u` is added to the parameter."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        for t in transforms:
            if not isinstance(t, Transform):
                raise TypeError(f"chain() takes Transform objects, got {type(t).__name__}")
        self.transforms = tuple(transforms)
        keys = [k for t in self.transforms for k in t.state_keys]
        if len(set(keys)) != len(keys):
            raise ValueError(f"two transforms in the chain use the same state name: {keys}")
        self.state_keys = tuple(keys)
        self.counts_steps = any(t.counts_steps for t in self.transforms)
        self.needs_global_norm = any(t.needs_global_norm for t in self.transforms)
        #: eagerly this chain is already one pass over memory (plain SGD: p.add_(g, alpha=−lr)),
        #: so compiling it buys nothing
        self.single_pass = len(self.transforms) == 1 and self.transforms[0].final_scale

    def init(self, p: Tensor) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for t in self.transforms:
            out.update(t.init(p))
        return out

    def scalars(self, group: Mapping[str, Any], step: int) -> list[float]:
        vals: list[float] = []
        for t in self.transforms:
            vals.extend(t.scalars(group, step))
        return vals

    def structure(self) -> tuple[Any, ...]:
        return tuple(t.structure() for t in self.transforms)

    def update(
        self, p: Tensor, g: Tensor, state: Sequence[Tensor], hp: Any, gnorm: Tensor | None
    ) -> None:
        """One step in place: `p` and `state` change, `g` does not. `hp` holds the scalars
        (floats when eager, a 1-D tensor when compiled so new values never recompile)."""
        u = g
        si = 0
        hi = 0
        eager = not isinstance(hp, Tensor)
        last = len(self.transforms) - 1
        for k, t in enumerate(self.transforms):
            ns = len(t.state_keys)
            nh = t.n_scalars
            s = [hp[hi + j] for j in range(nh)]
            if k == last and eager and t.final_scale:
                # p ← p + s·u as one pass (torch's `add_(u, alpha=−lr)`), not a product then a sum
                p.add_(u, alpha=s[0])
                return
            u = t.apply(u, p, state[si : si + ns], s, gnorm)
            si += ns
            hi += nh
        p.add_(u)


def chain(*transforms: Transform) -> Chain:
    """Compose transforms into one update rule (pass the result to `FlatOptimizer`)."""
    return Chain(transforms)


def global_norm(grads: Sequence[Tensor]) -> Tensor:
    """Euclidean norm over several flat gradient buffers, as a 0-d float32+ tensor."""
    sq = [g.float().pow(2).sum() if g.dtype in (torch.float16, torch.bfloat16) else g.pow(2).sum() for g in grads]
    return torch.stack([x.to(sq[0].device) for x in sq]).sum().sqrt()
