"""FlatOptimizer: a `torch.optim.Optimizer` that keeps parameters, gradients and state in one
flat buffer per (param group, device, dtype) and runs a transform chain over it.

Why: an update rule over 60 tensors costs 60 kernel launches (or a foreach list walk); over
one flat buffer it is one pass, and `torch.compile` fuses the whole chain into one kernel.
`p.data` and `p.grad` become views of the flat buffers, so autograd accumulates straight into
them and `state_dict()` hands out torch's exact per-parameter layout (as views).

Correct first: a gradient the user replaced (or set to None), a parameter rebound with
`p.data = ...`, params with different step counts: all are noticed at `step()` and handled
(the odd cases on a slower per-parameter path that runs the same math).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import torch
from torch import Tensor

from .chain import Chain, global_norm
from .kernel import Unit, autocast_off, compute_dtype, fresh_function, run_pass
from .reduction import reduce_pass
from .registry import Hyperparameter
from .segment import Segment, scalar_dtype
from .statedict import check_loadable

__all__ = ["AUTO_COMPILE_MIN_NUMEL", "FlatOptimizer", "Rule"]

log = logging.getLogger("thalweg.optim")

CompileMode = bool | Literal["auto"]

#: `compile="auto"` compiles a segment when it holds at least this many elements (below it,
#: the seconds spent compiling are not repaid), a C++ compiler / CUDA is present, and the
#: chain is more than one pass eagerly (plain SGD is one `add_` already).
AUTO_COMPILE_MIN_NUMEL = 1_000_000

class Rule:
    """Maps a parameter group to its transform chain; groups differing only in scalar values
    (lr, betas, …) share one chain and one compiled kernel."""

    #: torch creates this rule's state at construction (Adagrad), not at the first step.
    eager_state: bool = False

    def key(self, group: Mapping[str, Any]) -> tuple[Any, ...]:
        """Structural choices that change the chain (not its scalar values)."""
        return ()

    def build(self, group: Mapping[str, Any]) -> Chain:
        raise NotImplementedError


class _FixedRule(Rule):
    def __init__(self, chain: Chain) -> None:
        self.chain = chain

    def build(self, group: Mapping[str, Any]) -> Chain:
        return self.chain


def _compiler_available(device: torch.device) -> bool:
    if device.type == "cuda":
        return True
    return device.type == "cpu" and (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")) is not None


#: eager updates walk the flat buffer in chunks of this many elements, so each chunk stays in
#: cache across the chain's several elementwise ops (one pass over memory, not one per op)
EAGER_CHUNK = 1 << 18


def _chunked(kernel: Callable[..., None], chain: Chain, p: Tensor, g: Tensor, state: list[Tensor],
             hp: Any, norm: Tensor | None, part: int, out: Tensor | None) -> None:
    """Run an elementwise kernel chunk by chunk (exact: every transform is elementwise)."""
    n = p.numel()
    if n <= EAGER_CHUNK:
        kernel(chain, p, g, state, hp, norm, part, out)
        return
    for a in range(0, n, EAGER_CHUNK):
        b = min(a + EAGER_CHUNK, n)
        piece = (norm[0], norm[1][a:b]) if isinstance(norm, tuple) else norm  # per-tensor values, element index
        kernel(chain, p[a:b], g[a:b], [s[a:b] for s in state], hp, piece, part,
               None if out is None else out[a:b])


class FlatOptimizer(torch.optim.Optimizer):
    """Run a transform chain (or a :class:`Rule`) over flat parameter buffers.

    `FlatOptimizer(params, chain(...))` makes any optax-style chain an optimizer;
    the named optimizers (:class:`thalweg.optim.Adam`, …) are subclasses with torch's
    signatures. `compile`: True, False, or "auto" (compile segments of at least
    :data:`AUTO_COMPILE_MIN_NUMEL` elements); `compile_options` go to `torch.compile`.

    Differences from torch.optim, by design: `p.grad` is a zero view from construction on and
    `zero_grad()` zeroes in place (torch's `set_to_none=False`); create the optimizer after
    moving the model to its device.
    """

    #: hyperparameter schema of the param groups (the named optimizers set theirs)
    schema: tuple[Hyperparameter, ...] = ()

    def __init__(
        self,
        params: Iterable[Any],
        rule: Rule | Chain,
        defaults: dict[str, Any] | None = None,
        *,
        compile: CompileMode = "auto",
        compile_options: Mapping[str, Any] | None = None,
    ) -> None:
        if compile not in (True, False, "auto"):
            raise ValueError(f"compile must be True, False or 'auto', got {compile!r}")
        self.rule = rule if isinstance(rule, Rule) else _FixedRule(rule)
        self.compile_mode: CompileMode = compile
        self.compile_options = dict(compile_options or {})
        self._segments: list[Segment] = []
        self._loose: list[tuple[int, Tensor]] = []  # params with requires_grad=False
        self._built = False
        super().__init__(params, dict(defaults or {"lr": 1.0}))
        self._build_segments(range(len(self.param_groups)))
        self._built = True

    # ------------------------------------------------------------------ construction
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        if getattr(self, "_built", False):
            self._build_segments([len(self.param_groups) - 1])

    def _build_segments(self, group_indices: Iterable[int]) -> None:
        for gi in group_indices:
            buckets: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
            for p in self.param_groups[gi]["params"]:
                if p.is_complex():
                    raise ValueError("thalweg optimizers do not support complex parameters yet")
                if not p.requires_grad:
                    self._loose.append((gi, p))
                    continue
                buckets.setdefault((p.device, p.dtype), []).append(p)
            for plist in buckets.values():
                seg = Segment(gi, plist)
                self._segments.append(seg)
                if self.rule.eager_state:
                    self._ensure_chain(seg)
                    for i in range(len(plist)):
                        self._start(seg, i)

    def _ensure_chain(self, seg: Segment) -> Chain:
        group = self.param_groups[seg.group_index]
        key = self.rule.key(group)
        if seg.chain is None or key != seg.chain_key:
            chain = self.rule.build(group)
            if seg.chain is not None and chain.state_keys != seg.chain.state_keys:
                # e.g. momentum switched on: new buffers start fresh, as torch's would
                old = seg.state
                seg.state = {k: old.get(k, v) for k, v in chain.init(seg.flat_p).items()}
                for i in range(len(seg.params)):
                    if seg.started[i]:
                        self._expose(seg, i, chain)
            seg.chain, seg.chain_key, seg.fn = chain, key, None
        if not seg.state:
            seg.state = seg.chain.init(seg.flat_p.detach())
        return seg.chain

    def _start(self, seg: Segment, i: int) -> None:
        seg.started[i] = True
        assert seg.chain is not None
        self._expose(seg, i, seg.chain)

    def _expose(self, seg: Segment, i: int, chain: Chain) -> None:
        """Per-parameter state dict entries as views of the flat buffers (torch's layout)."""
        st: dict[str, Tensor] = {}
        if chain.counts_steps:
            st["step"] = seg.step_t[i]
        for k in chain.state_keys:
            st[k] = seg._view(seg.state[k], i)
        if st:
            self.state[seg.params[i]] = st
        else:  # a stateless rule (plain SGD) has no entry, as in torch
            self.state.pop(seg.params[i], None)

    # ------------------------------------------------------------------ compilation
    def _want_compile(self, seg: Segment) -> bool:
        if self.compile_mode == "auto":
            assert seg.chain is not None
            return (seg.numel >= AUTO_COMPILE_MIN_NUMEL and not seg.chain.single_pass
                    and _compiler_available(seg.device))
        return bool(self.compile_mode)

    def _function(self, seg: Segment) -> Callable[..., None]:
        if seg.fn is None:
            chain = seg.chain
            eager = fresh_function(run_pass)
            if self._want_compile(seg):
                log.info(
                    "thalweg: compiling the %s update for %d parameters on %s (first step only)",
                    type(self).__name__, seg.numel, seg.device,
                )
                options = {"fullgraph": True, "dynamic": False, **self.compile_options}
                compiled = torch.compile(eager, **options)
                seg.fn = lambda p, g, st, hp, n, k, o: compiled(chain, p, g, st, hp, n, k, o)
                seg.compiled = True
            else:
                if chain.single_pass:  # already one pass; chunks would only add overhead
                    seg.fn = lambda p, g, st, hp, n, k, o: eager(chain, p, g, st, hp, n, k, o)
                else:
                    seg.fn = lambda p, g, st, hp, n, k, o: _chunked(eager, chain, p, g, st, hp, n, k, o)
                seg.compiled = False
        return seg.fn

    # ------------------------------------------------------------------ stepping
    def _schedule_step(self, seg: Segment) -> int:
        return max(seg.steps) if seg.steps else 0

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Apply one update to every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        devices = [seg.device.type for seg in self._segments] + [p.device.type for _, p in self._loose]
        with autocast_off(devices):
            self._update()
        return loss

    def _update(self) -> None:
        """Plan every kernel call, run the chain's passes over all of them (a pass that needs
        the global norm gets it from the previous pass's output), then count the step."""
        self._begin_step()
        actives = [seg.sync() for seg in self._segments]
        plans = [self._plan_segment(seg, act) for seg, act in zip(self._segments, actives, strict=True)]
        plans += [self._plan_loose(gi, p) for gi, p in self._loose if p.grad is not None]
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
            reduced = reduce_pass(part, plans, self._reduced, EAGER_CHUNK)  # Transform.reduces
            for _, units, _ in plans:
                for u in units:
                    u.run(part, last, reduced.get(id(u), norm))
        for _, _, finish in plans:
            finish()
        self._end_step()

    # hooks for rules with host state of their own (see docs/CONTRACTS.md): once per step()
    def _begin_step(self) -> None:
        """Before any scalars are computed (schedule-free's and Prodigy's group bookkeeping)."""

    def _reduced(self, part: int, totals: Tensor) -> None:
        """A global reduction's totals, before its transforms' `combine` (Prodigy's d)."""

    def _end_step(self) -> None:
        """After every update of the step."""

    def _scratch(self, seg: Segment, chain: Chain) -> Tensor | None:
        if len(chain.passes) == 1:
            return None
        if seg.scratch is None:
            seg.scratch = torch.empty(seg.numel, dtype=compute_dtype(seg.dtype), device=seg.device)
        return seg.scratch

    def _plan_segment(self, seg: Segment, active: list[bool]) -> tuple[Chain, list[Unit], Callable[[], None]]:
        chain = self._ensure_chain(seg)
        group = self.param_groups[seg.group_index]
        scratch = self._scratch(seg, chain)
        s0 = seg.steps[0]
        if all(active) and all(s == s0 for s in seg.steps):
            t = s0 + 1
            vals = chain.scalars(group, t)
            fn = self._function(seg)
            if seg.compiled:
                if seg.hp is None or seg.hp.numel() != max(len(vals), 1):
                    seg.hp = torch.zeros(max(len(vals), 1), dtype=compute_dtype(seg.dtype), device=seg.device)
                seg.hp.copy_(torch.tensor(vals or [0.0], dtype=torch.float64))
                hp: Any = seg.hp
            else:
                hp = vals
            states = [seg.state[k] for k in chain.state_keys]
            unit = Unit(fn, seg.flat_p, seg.flat_g, states, hp, scratch,
                        tuple(p.shape for p in seg.params), group, t)

            def finish() -> None:
                seg.steps = [t] * len(seg.params)
                if chain.counts_steps:
                    seg.step_t.add_(1)
                for i in range(len(seg.params)):
                    if not seg.started[i]:
                        self._start(seg, i)

            return chain, [unit], finish
        # Odd case: some params without a gradient, or different step counts. Same math,
        # one parameter at a time, on views of the flat buffers.
        per_param = lambda p, g, st, hp, n, k, o: run_pass(chain, p, g, st, hp, n, k, o)  # noqa: E731
        units, taken = [], []
        for i, a in enumerate(active):
            if not a:
                continue
            states = [seg._view(seg.state[k], i) for k in chain.state_keys]
            vals = chain.scalars(group, seg.steps[i] + 1)
            sv = None if scratch is None else seg._view(scratch, i)
            units.append(Unit(per_param, seg.p_views[i], seg.g_views[i], states, vals, sv,
                              (seg.params[i].shape,), group, seg.steps[i] + 1))
            taken.append(i)

        def finish_each() -> None:
            for i in taken:
                seg.steps[i] += 1
                if chain.counts_steps:
                    seg.step_t[i] += 1
                if not seg.started[i]:
                    self._start(seg, i)

        return chain, units, finish_each

    def _plan_loose(self, gi: int, p: Tensor) -> tuple[Chain, list[Unit], Callable[[], None]]:
        """A parameter created with requires_grad=False that has a gradient anyway."""
        group = self.param_groups[gi]
        chain = self.rule.build(group)
        st = self.state[p]
        if not st:
            st.update({"step": torch.zeros((), dtype=scalar_dtype())} if chain.counts_steps else {})
            st.update(chain.init(p.detach()))
        if "_thalweg_steps" not in st:  # fresh, or loaded from torch.optim
            st["_thalweg_steps"] = torch.tensor(int(float(st.get("step", 0))), dtype=torch.int64)
        t = int(st["_thalweg_steps"]) + 1
        loose = lambda p, g, s, hp, n, k, o: run_pass(chain, p, g, s, hp, n, k, o)  # noqa: E731
        scratch = None if len(chain.passes) == 1 else torch.empty_like(p, dtype=compute_dtype(p.dtype))
        assert p.grad is not None
        unit = Unit(loose, p.data, p.grad, [st[k] for k in chain.state_keys], chain.scalars(group, t), scratch,
                    (p.shape,), group, t)

        def finish() -> None:
            st["_thalweg_steps"] += 1
            if "step" in st:
                st["step"] += 1

        return chain, [unit], finish

    def zero_grad(self, set_to_none: bool | None = None) -> None:
        """Zero the flat gradient buffers in place (keeps the fast path).

        `set_to_none=True` (torch's meaning, explicit only) sets `p.grad = None`; parameters
        still without a gradient at `step()` are then skipped, as in torch.
        """
        for seg in self._segments:
            if set_to_none:
                for p in seg.params:
                    p.grad = None
            else:
                seg.flat_g.zero_()
                for p, gv in zip(seg.params, seg.g_views, strict=True):
                    if p.grad is not gv:
                        p.grad = gv
        for _, p in self._loose:
            if p.grad is not None:
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.zero_()

    # ------------------------------------------------------------------ state dicts
    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        for gi, g in enumerate(sd["param_groups"]):
            lr = self.param_groups[gi]["lr"]
            if callable(lr) and not isinstance(lr, Tensor):
                segs = [s for s in self._segments if s.group_index == gi]
                step = max((self._schedule_step(s) for s in segs), default=0)
                g["lr"] = float(lr(step))
                g["lr_schedule_step"] = step
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch.optim's (or our own) state dict, checked whole before anything changes: a
        bad one raises a ValueError naming the group, parameter and key, and leaves this
        optimizer exactly as it was."""
        check_loadable(self, state_dict)
        schedules = {
            i: g["lr"] for i, g in enumerate(self.param_groups)
            if callable(g["lr"]) and not isinstance(g["lr"], Tensor)
        }
        super().load_state_dict(state_dict)
        schedule_steps: dict[int, int] = {}
        for i, g in enumerate(self.param_groups):
            if "lr_schedule_step" in g:
                schedule_steps[i] = int(g.pop("lr_schedule_step"))
            if i in schedules:
                g["lr"] = schedules[i]
        for seg in self._segments:
            chain = self._ensure_chain(seg)
            seg.fn = None
            for i, p in enumerate(seg.params):
                loaded = self.state.get(p)
                if not loaded:  # never stepped (or a stateless rule such as plain SGD)
                    seg.started[i] = False
                    seg.steps[i] = schedule_steps.get(seg.group_index, 0)
                    seg.step_t[i] = 0
                    continue
                for k in chain.state_keys:
                    seg._view(seg.state[k], i).copy_(loaded[k])
                if "step" in loaded:
                    n = float(loaded["step"])
                else:  # SGD keeps no step; a momentum buffer means at least one step was taken
                    n = float(max(1, schedule_steps.get(seg.group_index, 1)))
                seg.steps[i] = int(n)
                seg.step_t[i] = n
                self._start(seg, i)

    def __getstate__(self) -> dict[str, Any]:
        # torch.optim keeps only defaults/state/param_groups; the flat buffers are needed too
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for g in self.param_groups:
            for k, v in self.defaults.items():
                g.setdefault(k, v)

    # ------------------------------------------------------------------ introspection
    @property
    def num_segments(self) -> int:
        """How many flat buffers (one per group × device × dtype) this optimizer runs over."""
        return len(self._segments)
