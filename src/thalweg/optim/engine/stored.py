"""How a low-precision segment's update is cut into kernel calls: whole int8 blocks go to
the (compiled) kernel in chunks, the partial blocks at either end of a range (a parameter's
or a bucket's edge, the segment's last block) run eagerly on the blocks that cover them.
A reducing transform's sums (`Transform.reduces`) walk the same ranges with the state
decoded as the update decodes it, so only one chunk is ever held in full precision."""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from thalweg.optim.transforms.chain import Chain, Totals

from .kernel import Unit, fresh_function, run_stored_pass, run_stored_stats
from .lowprec import Layout
from .memory import step_seed
from .segment import Segment
from .storage import clear_padding

__all__ = ["runner", "state_slice", "sums"]


def state_slice(st: list[Tensor], layout: Layout, a: int, b: int) -> tuple[list[Tensor], int]:
    """The kernel tensors for segment elements a … b−1 (int8: the whole blocks they touch,
    as blocks × block) and where element a sits in them."""
    out: list[Tensor] = []
    j, lo, block = 0, 0, layout.block
    for k, kind in enumerate(layout.states):
        if kind == "int8":
            b0, b1 = a // block, -(-b // block)
            out += [st[j].view(-1, block)[b0:b1], st[j + 1][b0:b1]]
            lo = a - b0 * block
        else:
            out.append(st[j][a:b])
        j += layout.n_tensors(k)
    return out, lo


def _piece(norm: Any, a: int, b: int, rows: Callable[[Tensor], Tensor]) -> Any:
    """A per-tensor reduction's (values, element → tensor) for elements a … b−1 of the range."""
    return (norm[0], rows(norm[1][a:b])) if isinstance(norm, tuple) else norm


def runner(seg: Segment, seed: int, compiled: bool, compile_options: Mapping[str, Any], chunk: int,
           chain: Chain | None = None, layout: Layout | None = None) -> Callable[..., None]:
    """`run(p, g, state, hp, norm, part, out, first=0)`: one pass over segment elements
    first … first+len(p) (`state`: the whole segment's kernel tensors), `chunk` elements per
    kernel call, so only one chunk is ever held in full precision. Compiled: one fused kernel
    per chunk (static for the first shape, then dynamic lengths with a static block).
    `chain`/`layout` default to the segment's (another one-pass chain over some of its state
    keys, e.g. schedule-free's switch between y and x, gives its own)."""
    chain, layout = chain or seg.chain, layout or seg.layout
    assert chain is not None and layout is not None
    kernel: Callable[..., None] = run_stored_pass
    if compiled:
        kernel = torch.compile(fresh_function(run_stored_pass), **{"fullgraph": True, "dynamic": None,
                                                                    **compile_options})
    size = max(layout.block, chunk // layout.block * layout.block)

    def call(fn: Callable[..., None], p: Tensor, g: Tensor, st: list[Tensor], hp: Any, norm: Tensor | None,
             part: int, out: Tensor | None, first: int, a: int, b: int, s: int, fast: bool) -> None:
        sl, lo = state_slice(st, layout, first + a, first + b)
        master = None if seg.master is None else seg.master[first + a : first + b]
        base: Any = first + a
        seed_a: Any = s
        if fast:  # compiled: per-call values are tensors (new values never recompile)
            base = torch.tensor(base, dtype=torch.int32)
            seed_a = torch.tensor(s, dtype=torch.int32)
        rows = (lambda t: t.view(-1, layout.block)) if fast and layout.quantized else (lambda t: t)
        fn(chain, layout, rows(p[a:b]), rows(g[a:b]), sl, hp, _piece(norm, a, b, rows), part,
           None if out is None else rows(out[a:b]), None if master is None else rows(master), lo, base, seed_a)

    def run(p: Tensor, g: Tensor, st: list[Tensor], hp: Any, norm: Tensor | None, part: int,
            out: Tensor | None, first: int = 0) -> None:
        s = step_seed(seed, seg.steps[0], part)
        n = p.numel()
        block = layout.block if layout.quantized else 1
        lo = min(n, -(-first // block) * block - first)
        hi = max(lo, (first + n) // block * block - first)
        eager_hp = hp.tolist() if isinstance(hp, Tensor) else hp
        for a, b in ((0, lo), (hi, n)):
            if b > a:
                if first + b == seg.numel:  # the last block: its padding starts from zero codes
                    clear_padding(seg, chain, layout)
                call(run_stored_pass, p, g, st, eager_hp, norm, part, out, first, a, b, s, False)
        for a in range(lo, hi, size):
            call(kernel, p, g, st, hp, norm, part, out, first, a, min(a + size, hi), s, compiled)

    return run


def sums(seg: Segment, first: int, chunk: int, unit: Unit, part: int, scope: str) -> Tensor:
    """The sums pass `part`'s reducing transform needs over `unit` (segment elements first …
    first+len(unit.p) of a low-precision segment), `chunk` elements at a time: a global total,
    or (m, k) per tensor of `unit.shapes` (chunks may cut tensors: their pieces are added)."""
    chain, layout = seg.chain, seg.layout
    assert chain is not None and layout is not None
    p, g, n = unit.p, unit.source(part), unit.p.numel()
    hp = unit.hp.tolist() if isinstance(unit.hp, Tensor) else unit.hp
    ends = list(itertools.accumulate(math.prod(s) for s in unit.shapes)) if scope == "tensor" else []
    total: Tensor | None = None
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        sl, lo = state_slice(unit.states, layout, first + a, first + b)
        master = None if seg.master is None else seg.master[first + a : first + b]
        i0 = i1 = 0
        lengths = None
        if scope == "tensor":  # the tensors this chunk touches, and how much of each
            i0 = bisect.bisect_right(ends, a)
            i1 = bisect.bisect_left(ends, b) + 1
            lengths = [min(ends[i], b) - max(ends[i - 1] if i else 0, a) for i in range(i0, i1)]
        x = run_stored_stats(chain, layout, p[a:b], g[a:b], sl, hp, part, Totals(lengths), master, lo)
        if scope != "tensor":
            total = x if total is None else total + x
            continue
        if total is None:
            total = x.new_zeros(x.shape[0], len(ends))
        total[:, i0:i1] += x
    assert total is not None
    return total
