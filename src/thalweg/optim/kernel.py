"""One kernel call of the flat core: a pass of a chain over matching tensors (low precision
computes in float32), the unit a step is planned in, and the compile/autocast helpers."""

from __future__ import annotations

import contextlib
import types
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .chain import Chain, Totals

__all__ = ["LOW_PRECISION", "Unit", "autocast_off", "compute_dtype", "fresh_function", "run_pass", "run_stats"]

LOW_PRECISION = (torch.float16, torch.bfloat16)


def run_pass(chain: Chain, p: Tensor, g: Tensor, state: list[Tensor], hp: Any, norm: Tensor | None,
            part: int, out: Tensor | None) -> None:
    """Pass `part` of one update over matching tensors, in place (or into `out` when more
    passes follow). Low-precision tensors compute in float32."""
    if p.dtype in LOW_PRECISION:
        p32, st32 = p.float(), [s.float() for s in state]
        chain.update(p32, g.float(), st32, hp, norm, part, out)
        p.copy_(p32)
        for buf, new in zip(state, st32, strict=True):
            buf.copy_(new)
    else:
        chain.update(p, g, state, hp, norm, part, out)


def run_stats(chain: Chain, p: Tensor, g: Tensor, state: list[Tensor], hp: Any, part: int,
              total: Totals) -> Tensor:
    """The sums pass `part`'s reducing transform needs, over matching tensors; reads the
    state as :func:`run_pass` does (low precision in float32) and changes nothing."""
    if p.dtype in LOW_PRECISION:
        p, g, state = p.float(), g.float(), [s.float() for s in state]
    return chain.statistics(p, g, state, hp, part, total)


@contextlib.contextmanager
def autocast_off(device_types: Iterable[str]) -> Iterator[None]:
    """The update runs in the parameters' own precision even inside a user's autocast
    region (autocast would run matrix products of matrix rules in bf16)."""
    with contextlib.ExitStack() as stack:
        for dt in sorted(set(device_types)):
            if torch.amp.is_autocast_available(dt):
                stack.enter_context(torch.autocast(dt, enabled=False))
        yield


@dataclass
class Unit:
    """One kernel call per pass: a whole segment (fast path) or one parameter's views."""

    fn: Callable[..., None]  # fn(p, g, states, hp, norm, part, out)
    p: Tensor
    g: Tensor
    states: list[Tensor]
    hp: Any
    scratch: Tensor | None  # the update between passes (multi-pass chains only)
    # for reducing transforms (`Transform.reduces`): the tensors' shapes (in order, as packed
    # in `p`), the parameter group and the step these scalars are for
    shapes: tuple[torch.Size, ...] = ()
    group: Any = None
    step: int = 0

    def source(self, part: int) -> Tensor:
        return self.g if part == 0 else self.scratch  # type: ignore[return-value]

    def run(self, part: int, last: int, norm: Tensor | None) -> None:
        self.fn(self.p, self.source(part), self.states, self.hp, norm, part,
                None if part == last else self.scratch)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in LOW_PRECISION else dtype



def fresh_function(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A copy of `fn` with its own code object, so dynamo keeps a separate cache for it and
    many optimizers never exhaust one function's recompile limit."""
    return types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
