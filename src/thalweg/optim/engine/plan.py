"""One `step()` of the flat core as kernel calls: each segment planned as one unit (the fast
path) or one unit per range of neighbouring parameters that step together (some without a
gradient, or step counts that differ: the same math on ranges), loose parameters, then the chain's passes run over every unit with the
global norm or a reducing transform's values (`Transform.reduces`) taken between passes.

A step-in-backward bucket is one more unit (:func:`range_unit`), and :func:`apply_chain`
runs another one-pass chain over a segment's own state (schedule-free's switch between y
and x) through the same storage path as a step: low-precision state is decoded and
re-encoded, master weights are the ones moved.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from thalweg.optim.transforms.chain import Chain, global_norm
from thalweg.optim.transforms.context import scalar_dtype

from . import kernel, storage, stored
from .flat import FlatCore
from .kernel import Unit, chunked, compute_dtype, fresh_function, run_pass
from .lowprec import Layout
from .reduction import reduce_pass

if TYPE_CHECKING:
    from .segment import Segment

__all__ = ["Plan", "apply_chain", "count_steps", "plan_loose", "plan_segment", "range_unit", "run", "runs"]

Plan = tuple[Chain, list[Unit], Callable[[], None]]


def run(plans: Sequence[Plan], reduced: Callable[[int, Tensor], None], chunk: int) -> None:
    """Run the chains' passes over every unit (a pass that needs the global norm gets it from
    the previous pass's output; a reducing pass its transform's values), then count the step."""
    plans = [pl for pl in plans if pl[1]]
    counts = {len(chain.passes) for chain, _, _ in plans}
    if len(counts) > 1:
        raise ValueError(
            "the param groups' chains take the global norm at different places; a "
            "clip_by_global_norm after other transforms must stand at the same place in every group"
        )
    last = counts.pop() - 1 if counts else 0
    for part in range(last + 1):
        norm = None
        if any(chain.passes[part].needs_norm for chain, _, _ in plans):
            bufs = [u.source(part) for _, units, _ in plans for u in units]
            norm = global_norm(bufs) if bufs else None
        values = reduce_pass(part, plans, reduced, chunk)  # Transform.reduces
        for _, units, _ in plans:
            for u in units:
                u.run(part, last, values.get(id(u), norm))
    for _, _, finish in plans:
        finish()


def _scratch(seg: Segment, chain: Chain) -> Tensor | None:
    if len(chain.passes) == 1:
        return None
    if seg.scratch is None:
        seg.scratch = torch.empty(seg.numel, dtype=compute_dtype(seg.dtype), device=seg.device)
    return seg.scratch


def _sums(seg: Segment, chain: Chain, first: int, chunk: int) -> Any:
    """A low-precision unit's reduction (`Unit.stats`), None where nothing reduces."""
    return functools.partial(stored.sums, seg, first, chunk) if chain.reduces else None


def plan_segment(opt: FlatCore, seg: Segment, active: list[bool], chunk: int) -> Plan:
    """The units of one segment: the whole buffer, or one per parameter with a gradient."""
    chain = opt._ensure_chain(seg)
    group = opt.param_groups[seg.group_index]
    scratch = _scratch(seg, chain)
    layout = seg.layout
    assert layout is not None
    s0 = seg.steps[0]
    if all(active) and all(s == s0 for s in seg.steps):
        t = s0 + 1
        vals = chain.scalars(group, t)
        fn = opt._function(seg)
        if seg.compiled:
            if seg.hp is None or seg.hp.numel() != max(len(vals), 1):
                seg.hp = torch.zeros(max(len(vals), 1), dtype=compute_dtype(seg.dtype), device=seg.device)
            seg.hp.copy_(torch.tensor(vals or [0.0], dtype=torch.float64))
            hp: Any = seg.hp
        else:
            hp = vals
        states = storage.kernel_state(seg, chain, layout)
        unit = Unit(fn, seg.flat_p, seg.flat_g, states, hp, scratch, tuple(seg.shapes), group, t,
                    None if layout.plain else _sums(seg, chain, 0, chunk))

        def finish() -> None:
            seg.steps = [t] * len(seg.params)
            if storage.keeps_step(chain, layout):
                seg.step_t.add_(1)
            for i in range(len(seg.params)):
                if not seg.started[i]:
                    opt._start(seg, i)

        return chain, [unit], finish
    # Some params without a gradient, or different step counts: the same math over each
    # maximal range of neighbours that step together (one unit each; few units, not one per
    # parameter, when a few parameters are idle)
    units, taken = [], []
    for i0, i1 in runs(active, seg.steps):
        a, b = seg.offsets[i0], seg.offsets[i1 - 1] + seg.numels[i1 - 1]
        units.append(range_unit(opt, seg, chain, group, seg.steps[i0] + 1, i0, i1, seg.flat_g[a:b], chunk,
                                None if scratch is None else scratch[a:b]))
        taken.extend(range(i0, i1))
    return chain, units, lambda: count_steps(opt, seg, chain, taken)


def runs(active: Sequence[bool], steps: Sequence[int]) -> list[tuple[int, int]]:
    """Maximal ranges [i0, i1) of neighbouring parameters that have a gradient and equal
    step counts (each is one kernel call over its range of the flat buffers)."""
    out: list[tuple[int, int]] = []
    i = 0
    n = len(active)
    while i < n:
        if not active[i]:
            i += 1
            continue
        j = i + 1
        while j < n and active[j] and steps[j] == steps[i]:
            j += 1
        out.append((i, j))
        i = j
    return out


def count_steps(opt: FlatCore, seg: Segment, chain: Chain, idx: Sequence[int]) -> None:
    """After a step of parameters `idx`: their step counters move on, their state is exposed."""
    for i in idx:
        seg.steps[i] += 1
        if storage.keeps_step(chain, seg.layout):
            seg.step_t[i] += 1
        if not seg.started[i]:
            opt._start(seg, i)


def _range_function(opt: FlatCore, seg: Segment, first: int) -> Callable[..., None]:
    """The low-precision update of the segment elements from `first` on."""
    fn = opt._function(seg)
    return lambda p, g, st, hp, n, k, o: fn(p, g, st, hp, n, k, o, first)


def range_unit(opt: FlatCore, seg: Segment, chain: Chain, group: Any, t: int, i0: int, i1: int,
               g: Tensor, chunk: int, scratch: Tensor | None = None) -> Unit:
    """Parameters i0 … i1−1 of `seg` (a step-in-backward bucket, or part of one) with
    gradient `g` over their range of the flat buffer, as one unit: the segment's
    low-precision update on that range, or the plain pass (compiled once for every range
    length, or eager in chunks)."""
    layout = seg.layout
    assert layout is not None
    first, stop = seg.offsets[i0], seg.offsets[i1 - 1] + seg.numels[i1 - 1]
    shapes = tuple(seg.shapes[i0:i1])
    vals = chain.scalars(group, t)
    compiled = opt._want_compile(seg)
    hp: Any = vals
    if compiled:
        hp = torch.tensor(vals or [0.0], dtype=compute_dtype(seg.dtype), device=seg.device)
    if scratch is None and len(chain.passes) > 1:
        scratch = torch.empty(stop - first, dtype=compute_dtype(seg.dtype), device=seg.device)
    p = seg.flat_p[first:stop]
    if not layout.plain:
        return Unit(_range_function(opt, seg, first), p, g, storage.kernel_state(seg, chain, layout), hp, scratch,
                    shapes, group, t, _sums(seg, chain, first, chunk))
    states = [seg.state[k][first:stop] for k in chain.state_keys]
    if compiled:
        fn = getattr(seg, "range_fn", None)
        if fn is None:  # one compilation for every bucket size
            fn = torch.compile(fresh_function(run_pass), fullgraph=True, dynamic=None, **opt.compile_options)
            seg.range_fn = fn  # type: ignore[attr-defined]
        call = lambda p, g, st, hp, n, k, o: fn(chain, p, g, st, hp, n, k, o)  # noqa: E731
    else:
        call = lambda p, g, st, hp, n, k, o: chunked(run_pass, chain, p, g, st, hp, n, k, o)  # noqa: E731
    return Unit(call, p, g, states, hp, scratch, shapes, group, t)


def plan_loose(opt: FlatCore, gi: int, p: Tensor) -> Plan:
    """A parameter created with requires_grad=False that has a gradient anyway."""
    group = opt.param_groups[gi]
    chain = opt.rule.build(group)
    st = opt.state[p]
    if not st:
        st.update({"step": torch.zeros((), dtype=scalar_dtype())} if chain.counts_steps else {})
        st.update(chain.init(p.detach()))
    if "_thalweg_steps" not in st:  # fresh, or loaded from torch.optim
        st["_thalweg_steps"] = torch.tensor(int(float(st.get("step", 0))), dtype=torch.int64)
    t = int(st["_thalweg_steps"]) + 1
    loose = lambda p, g, s, hp, n, k, o: run_pass(chain, p, g, s, hp, n, k, o)  # noqa: E731
    assert p.grad is not None
    real = torch.view_as_real if p.is_complex() else (lambda t: t)  # complex: its real view, as torch
    x = real(p.data)
    scratch = None if len(chain.passes) == 1 else torch.empty_like(x, dtype=compute_dtype(x.dtype))
    unit = Unit(loose, x, real(p.grad), [real(st[k]) for k in chain.state_keys], chain.scalars(group, t), scratch,
                (x.shape,), group, t)

    def finish() -> None:
        st["_thalweg_steps"] += 1
        if "step" in st:
            st["step"] += 1

    return chain, [unit], finish


#: the switch's stochastic roundings draw other bits than any step's
_ASIDE_SEED = 0x2545F491


def apply_chain(opt: FlatCore, seg: Segment, chain: Chain, hp: list[float], indices: Sequence[int]) -> None:
    """Run the one-pass, gradient-free `chain` (whose state keys are some of the segment's)
    over parameters `indices` of `seg`, through the storage path a step takes."""
    layout = seg.layout
    if not indices:
        return
    whole = len(indices) == len(seg.params)
    if layout is None or layout.plain:
        for i in [None] if whole else indices:
            p = seg.flat_p if i is None else seg.p_views[i]
            st = [seg.state[k] if i is None else seg._view(seg.state[k], i) for k in chain.state_keys]
            run_pass(chain, p, p, st, hp, None, 0, None)  # the gradient is not read
        return
    assert seg.chain is not None
    sub = Layout(tuple(layout.states[seg.chain.state_keys.index(k)] for k in chain.state_keys), layout.block,
                 layout.param_sr, layout.master)
    fn = stored.runner(seg, opt._seed ^ _ASIDE_SEED, False, {}, kernel.EAGER_CHUNK, chain, sub)
    st = storage.kernel_state(seg, chain, sub)
    for i in [None] if whole else indices:
        p = seg.flat_p if i is None else seg.p_views[i].view(-1)
        fn(p, p, st, hp, None, 0, None, 0 if i is None else seg.offsets[i])
