"""What a transform's math works with: hyperparameter values and references to param-group
keys (`Hyper`, `resolve`), the per-step context, the totals a reducing transform asks for,
the scaled in-place ops that keep torch.optim's rounding, and the dtype of step counters."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

__all__ = [
    "Hyper",
    "HyperValue",
    "NoScalars",
    "NoState",
    "StepContext",
    "Totals",
    "add_scaled",
    "add_scaled_",
    "addcmul",
    "addcmul_",
    "resolve",
    "scalar_dtype",
]


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


@dataclass(frozen=True)
class StepContext:
    """What a transform's :meth:`Transform.scalars` sees: the parameter group, the step
    (counting from 1) and `scale`, the product of the pure scales that follow the transform
    and that the chain folded into it (1 unless the transform `absorbs_scale`)."""

    group: Mapping[str, Any]
    step: int
    scale: float = 1.0

    def __call__(self, value: Any) -> float:
        """The value of a hyperparameter at this step (schedules get `step − 1`)."""
        return resolve(value, self.group, self.step - 1)


class NoState(NamedTuple):
    """The state of a stateless transform."""


class NoScalars(NamedTuple):
    """The scalars of a transform that needs none."""


# ------------------------------------------------------------------ elementwise helpers
# Eagerly the scalars are Python floats and these call torch's own fused ops (add with
# alpha, addcmul), so the rounding is torch.optim's to the bit; compiled, the scalars are
# 0-d tensors (new values never recompile) and the same math is written out for inductor.


def add_scaled(x: Tensor, y: Tensor, a: Any) -> Tensor:
    """x + a·y (torch's `x.add(y, alpha=a)`)."""
    return x + y * a if isinstance(a, Tensor) else x.add(y, alpha=a)


def add_scaled_(x: Tensor, y: Tensor, a: Any) -> Tensor:
    """x += a·y in place (torch's `x.add_(y, alpha=a)`)."""
    return x.add_(y * a) if isinstance(a, Tensor) else x.add_(y, alpha=a)


def addcmul(x: Tensor, y: Tensor, z: Tensor, a: Any) -> Tensor:
    """x + a·y·z (torch's `x.addcmul(y, z, value=a)`)."""
    return x + a * y * z if isinstance(a, Tensor) else x.addcmul(y, z, value=a)


def addcmul_(x: Tensor, y: Tensor, z: Tensor, a: Any) -> Tensor:
    """x += a·y·z in place (torch's `x.addcmul_(y, z, value=a)`)."""
    return x.add_(a * y * z) if isinstance(a, Tensor) else x.addcmul_(y, z, value=a)


class Totals:
    """The sums a reducing transform asks for, over one piece of memory: everything
    (`lengths` None: a global reduction, 0-d results) or each tensor (`lengths[i]` elements of
    tensor i lie in this piece, in order: (k,) results).
    The core adds the pieces up (over chunks, segments, groups and devices)."""

    def __init__(self, lengths: Sequence[int] | None = None) -> None:
        self.lengths = None if lengths is None else list(lengths)

    def sum(self, x: Tensor) -> Tensor:
        """Σx over the scope (accumulated in float64 for a global sum)."""
        x = x.reshape(-1)
        if self.lengths is None:
            return x.sum(dtype=torch.float64)
        return torch.segment_reduce(x, "sum", lengths=torch.tensor(self.lengths, device=x.device))

    def sumsq(self, x: Tensor) -> Tensor:
        """Σx² over the scope (per tensor: one `_foreach_norm` over views, squared)."""
        x = x.reshape(-1)
        if self.lengths is None:
            return torch.linalg.vector_norm(x, dtype=torch.float64).square()
        return torch.stack(torch._foreach_norm(list(x.split(self.lengths)))).square()


def scalar_dtype() -> torch.dtype:
    """torch.optim's dtype for the per-parameter `step` counter."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
