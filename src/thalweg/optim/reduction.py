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

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .chain import Chain, StepContext, Totals
from .kernel import Unit, run_stats

__all__ = ["reduce_pass"]

Plan = tuple[Chain, list[Unit], Callable[[], None]]


def _numels(unit: Unit) -> list[int]:
    return [math.prod(s) for s in unit.shapes] if unit.shapes else [unit.p.numel()]


def _unit_sums(chain: Chain, part: int, unit: Unit, scope: str, chunk: int) -> Tensor:
    """The reducer's sums over one unit, chunk by chunk for a flat buffer (each chunk's
    temporaries stay cache-sized)."""
    src = unit.source(part)
    numels = _numels(unit)
    n = unit.p.numel()
    if unit.p.dim() != 1 or n <= chunk:
        lengths = None if scope == "global" else torch.tensor(numels)
        return run_stats(chain, unit.p, src, unit.states, unit.hp, part, Totals(lengths))
    ends = np.cumsum(numels)
    starts = ends - np.asarray(numels)
    total: Tensor | None = None
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        lengths = None
        if scope == "tensor":
            lengths = torch.from_numpy(np.clip(ends, a, b) - np.clip(starts, a, b))
        part_sums = run_stats(chain, unit.p[a:b], src[a:b], [s[a:b] for s in unit.states], unit.hp, part,
                              Totals(lengths))
        total = part_sums if total is None else total + part_sums
    assert total is not None
    return total


def _spread(values: Tensor, unit: Unit) -> Tensor:
    """Per-tensor values (m, k) as `apply` reads them: (m, n) over a flat buffer (chunked
    eager runs slice it), or (m, 1, …, 1) broadcasting over one parameter's view."""
    values = values.to(unit.p.device)
    if unit.p.dim() == 1:
        counts = torch.tensor(_numels(unit), device=values.device)
        return torch.repeat_interleave(values, counts, dim=1, output_size=unit.p.numel())
    return values.reshape(values.shape[0], *([1] * unit.p.dim()))


def reduce_pass(part: int, plans: Sequence[Plan], reduced: Callable[[int, Tensor], None],
                chunk: int) -> dict[int, Tensor]:
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
    out: dict[int, Tensor] = {}
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
