"""Reductions inside a step: the sums a reducing transform (`Transform.reduces`) needs, taken
over the flat buffers by segment offsets (one `segment_reduce` / `_foreach_norm` per piece of
memory, never a Python loop over parameters), added over chunks, segments, groups and devices,
and turned by the transform's `combine` into what its `apply` reads.

Two scopes: "global" (one total over every parameter of the optimizer: Prodigy's d) and
"tensor" (one value per parameter tensor, spread over its elements: LAMB's and LARS's trust
ratios). The optimizer sees a global total first (`FlatOptimizer._reduced`), so a rule whose
global scalars are host state (Prodigy) updates them once per step.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from thalweg.optim.transforms.chain import Chain, StepContext, Totals

from .kernel import Unit, fresh_function, run_stats

__all__ = ["reduce_pass"]

Plan = tuple[Chain, list[Unit], Callable[[], None]]


def _numels(unit: Unit) -> list[int]:
    return [math.prod(s) for s in unit.shapes] if unit.shapes else [unit.p.numel()]


def _compiled_stats(chain: Chain) -> Callable[..., Tensor]:
    """`run_stats` compiled for one chain (a compiled segment's sums: one fused reduction)."""
    fn = getattr(chain, "_compiled_stats", None)
    if fn is None:
        fn = torch.compile(fresh_function(run_stats), fullgraph=True, dynamic=False)
        chain._compiled_stats = fn  # type: ignore[attr-defined]
    return fn


def _unit_sums(chain: Chain, part: int, unit: Unit, scope: str, chunk: int) -> Tensor:
    """The reducer's sums over one unit. A compiled segment's global sums (scalars as a
    tensor) are one compiled reduction; eagerly, global sums go chunk by chunk over a flat
    buffer (the temporaries of their expressions stay cache-sized); per-tensor sums take the
    whole buffer (`Totals.sumsq` reads views of it, one `_foreach_norm`, no temporaries).
    A low-precision unit brings its own (`Unit.stats`: chunk by chunk, state decoded)."""
    if unit.stats is not None:  # a low-precision segment: its state decoded as its update decodes it
        return unit.stats(unit, part, scope)
    src = unit.source(part)
    n = unit.p.numel()
    if isinstance(unit.hp, Tensor) and scope == "global":
        return _compiled_stats(chain)(chain, unit.p, src, unit.states, unit.hp, part, Totals(None))
    if scope == "tensor" or unit.p.dim() != 1 or n <= chunk:
        lengths = None if scope == "global" else _numels(unit)
        return run_stats(chain, unit.p, src, unit.states, unit.hp, part, Totals(lengths))
    total: Tensor | None = None
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        part_sums = run_stats(chain, unit.p[a:b], src[a:b], [s[a:b] for s in unit.states], unit.hp, part,
                              Totals(None))
        total = part_sums if total is None else total + part_sums
    assert total is not None
    return total


@functools.lru_cache(maxsize=32)
def _tensor_index(numels: tuple[int, ...], device: torch.device) -> Tensor:
    """Which tensor each element of a flat buffer belongs to (int32), made once per layout."""
    ids = torch.arange(len(numels), dtype=torch.int32, device=device)
    return torch.repeat_interleave(ids, torch.tensor(numels, device=device), output_size=sum(numels))


def _spread(values: Tensor, unit: Unit) -> Tensor | tuple[Tensor, Tensor]:
    """Per-tensor values (m, k) as `apply` reads them: over a flat buffer, the pair (values,
    each element's tensor), gathered inside the kernel (`Chain.update`; chunks slice the
    index); over one parameter's view, (m, 1, …, 1), which broadcasts."""
    values = values.to(unit.p.device)
    if unit.p.dim() == 1:
        return values, _tensor_index(tuple(_numels(unit)), unit.p.device)
    return values.reshape(values.shape[0], *([1] * unit.p.dim()))


def reduce_pass(part: int, plans: Sequence[Plan], reduced: Callable[[int, Tensor], None],
                chunk: int) -> dict[int, Any]:
    """For pass `part`: id(unit) → the `norm` its reducing transform's `apply` reads ({}
    when the pass does not reduce). `reduced(part, totals)` sees a global total before any
    `combine` (the optimizer's hook)."""
    work = [(chain, u) for chain, units, _ in plans for u in units if chain.passes[part].reducer is not None]
    if not work:
        return {}
    every = [(chain, u) for chain, units, _ in plans for u in units]
    scopes = {chain.passes[part].reducer.transform.reduces for chain, _ in work}  # type: ignore[union-attr]
    if len(work) != len(every) or len(scopes) != 1:
        raise ValueError("the param groups' chains reduce at different places; a reducing transform "
                         "must stand at the same place, with the same scope, in every group")
    scope = scopes.pop()
    assert scope is not None
    sums = [(chain, u, _unit_sums(chain, part, u, scope, chunk)) for chain, u in work]
    out: dict[int, Any] = {}
    if scope == "global":
        dev = sums[0][2].device
        totals = torch.stack([x.to(dev) for _, _, x in sums]).sum(0)
        reduced(part, totals)
    for chain, u, x in sums:
        op = chain.passes[part].reducer
        assert op is not None
        ctx: Any = StepContext(u.group, u.step)
        shapes = u.shapes or (u.p.shape,)
        if scope == "global":
            out[id(u)] = op.transform.combine(totals.to(u.p.device), ctx, shapes)
        else:
            out[id(u)] = _spread(op.transform.combine(x, ctx, shapes), u)
    return out
