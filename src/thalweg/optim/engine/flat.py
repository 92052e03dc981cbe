"""What the planner (:mod:`.plan`), the state-dict loader (:mod:`.statedict`) and the backward
stepper (:mod:`.backward`) use of a :class:`~thalweg.optim.engine.core.FlatOptimizer`.

They are the optimizer's machinery, split out of :mod:`.core` by topic; `core` imports them,
so they name the optimizer by this protocol instead of importing `core` back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from torch import Tensor

from thalweg.optim.registry import Hyperparameter
from thalweg.optim.transforms.chain import Chain

from .segment import Segment

__all__ = ["ChainRule", "FlatCore"]


class ChainRule(Protocol):
    """A parameter group → its transform chain (:class:`~thalweg.optim.engine.core.Rule`)."""

    def build(self, group: Mapping[str, Any]) -> Chain: ...


@runtime_checkable
class FlatCore(Protocol):
    """A flat optimizer as its machinery sees it: the param groups and torch's `state`, the
    segments (flat buffers) and loose parameters, and the hooks a step calls."""

    param_groups: list[dict[str, Any]]
    state: Any
    rule: ChainRule
    schema: tuple[Hyperparameter, ...]
    compile_options: dict[str, Any]
    _segments: list[Segment]
    _loose: list[tuple[int, Tensor]]
    _backward: Any
    _bucket_numel: int | None
    _seed: int

    def _ensure_chain(self, seg: Segment) -> Chain: ...

    def _function(self, seg: Segment) -> Callable[..., None]: ...

    def _start(self, seg: Segment, i: int) -> None: ...

    def _want_compile(self, seg: Segment) -> bool: ...

    def _reduced(self, part: int, totals: Tensor) -> None: ...

    def _begin_step(self) -> None: ...

    def _end_step(self) -> None: ...
