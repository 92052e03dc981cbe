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
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import torch
from torch import Tensor

from .chain import Chain, global_norm
from .segment import Segment, scalar_dtype

__all__ = ["AUTO_COMPILE_MIN_NUMEL", "FlatOptimizer", "Rule"]

log = logging.getLogger("thalweg.optim")

CompileMode = bool | Literal["auto"]

#: `compile="auto"` compiles a segment when it holds at least this many elements (below it,
#: the seconds spent compiling are not repaid), a C++ compiler / CUDA is present, and the
#: chain is more than one pass eagerly (plain SGD is one `add_` already).
AUTO_COMPILE_MIN_NUMEL = 1_000_000

_LOW_PRECISION = (torch.float16, torch.bfloat16)


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


def _kernel(chain: Chain, p: Tensor, g: Tensor, state: list[Tensor], hp: Any, gnorm: Tensor | None) -> None:
    """One update over matching tensors, in place. Low-precision tensors compute in float32."""
    if p.dtype in _LOW_PRECISION:
        p32, st32 = p.float(), [s.float() for s in state]
        chain.update(p32, g.float(), st32, hp, gnorm)
        p.copy_(p32)
        for buf, new in zip(state, st32, strict=True):
            buf.copy_(new)
    else:
        chain.update(p, g, state, hp, gnorm)


#: eager updates walk the flat buffer in chunks of this many elements, so each chunk stays in
#: cache across the chain's several elementwise ops (one pass over memory, not one per op)
EAGER_CHUNK = 1 << 18


def _chunked(kernel: Callable[..., None], chain: Chain, p: Tensor, g: Tensor, state: list[Tensor],
             hp: Any, gnorm: Tensor | None) -> None:
    """Run an elementwise kernel chunk by chunk (exact: every transform is elementwise)."""
    n = p.numel()
    if n <= EAGER_CHUNK:
        kernel(chain, p, g, state, hp, gnorm)
        return
    for a in range(0, n, EAGER_CHUNK):
        b = min(a + EAGER_CHUNK, n)
        kernel(chain, p[a:b], g[a:b], [s[a:b] for s in state], hp, gnorm)


def _fresh_function(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A copy of `fn` with its own code object, so dynamo keeps a separate cache for it and
    many optimizers never exhaust one function's recompile limit."""
    return types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)


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
            eager = _fresh_function(_kernel)
            if self._want_compile(seg):
                log.info(
                    "thalweg: compiling the %s update for %d parameters on %s (first step only)",
                    type(self).__name__, seg.numel, seg.device,
                )
                options = {"fullgraph": True, "dynamic": False, **self.compile_options}
                compiled = torch.compile(eager, **options)
                seg.fn = lambda p, g, st, hp, gn: compiled(chain, p, g, st, hp, gn)
                seg.compiled = True
            else:
                if chain.single_pass:  # already one pass; chunks would only add overhead
                    seg.fn = lambda p, g, st, hp, gn: eager(chain, p, g, st, hp, gn)
                else:
                    seg.fn = lambda p, g, st, hp, gn: _chunked(eager, chain, p, g, st, hp, gn)
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
        actives = [seg.sync() for seg in self._segments]
        gnorm = None
        if any(self._ensure_chain(seg).needs_global_norm for seg in self._segments):
            grads = [seg.flat_g for seg, act in zip(self._segments, actives, strict=True) if all(act)]
            grads += [
                seg.g_views[i] for seg, act in zip(self._segments, actives, strict=True) if not all(act)
                for i, a in enumerate(act) if a
            ]
            grads += [p.grad for _, p in self._loose if p.grad is not None]
            gnorm = global_norm(grads) if grads else None
        for seg, active in zip(self._segments, actives, strict=True):
            self._step_segment(seg, active, gnorm)
        for gi, p in self._loose:
            if p.grad is not None:
                self._step_loose(gi, p, gnorm)
        return loss

    def _step_segment(self, seg: Segment, active: list[bool], gnorm: Tensor | None) -> None:
        chain = self._ensure_chain(seg)
        group = self.param_groups[seg.group_index]
        s0 = seg.steps[0]
        if all(active) and all(s == s0 for s in seg.steps):
            t = s0 + 1
            vals = chain.scalars(group, t)
            fn = self._function(seg)
            if seg.compiled:
                cd = torch.float32 if seg.dtype in _LOW_PRECISION else seg.dtype
                if seg.hp is None or seg.hp.numel() != len(vals):
                    seg.hp = torch.zeros(max(len(vals), 1), dtype=cd, device=seg.device)
                seg.hp.copy_(torch.tensor(vals or [0.0], dtype=torch.float64))
                hp: Any = seg.hp
            else:
                hp = vals
            states = [seg.state[k] for k in chain.state_keys]
            fn(seg.flat_p, seg.flat_g, states, hp, gnorm)
            seg.steps = [t] * len(seg.params)
            if chain.counts_steps:
                seg.step_t.add_(1)
            if not all(seg.started):
                for i in range(len(seg.params)):
                    if not seg.started[i]:
                        self._start(seg, i)
            return
        # Odd case: some params without a gradient, or different step counts. Same math,
        # one parameter at a time, on views of the flat buffers.
        for i, a in enumerate(active):
            if not a:
                continue
            t = seg.steps[i] + 1
            states = [seg._view(seg.state[k], i) for k in chain.state_keys]
            _kernel(chain, seg.p_views[i], seg.g_views[i], states, chain.scalars(group, t), gnorm)
            seg.steps[i] = t
            if chain.counts_steps:
                seg.step_t[i] += 1
            if not seg.started[i]:
                self._start(seg, i)

    def _step_loose(self, gi: int, p: Tensor, gnorm: Tensor | None) -> None:
        """A parameter created with requires_grad=False that has a gradient anyway."""
        group = self.param_groups[gi]
        chain = self.rule.build(group)
        st = self.state[p]
        if not st:
            st.update({"step": torch.zeros((), dtype=scalar_dtype())} if chain.counts_steps else {})
            st.update(chain.init(p.detach()))
            st["_thalweg_steps"] = torch.zeros((), dtype=torch.int64)
        t = int(st["_thalweg_steps"]) + 1
        _kernel(chain, p.data, p.grad, [st[k] for k in chain.state_keys], chain.scalars(group, t), gnorm)
        st["_thalweg_steps"] += 1
        if "step" in st:
            st["step"] += 1

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
                missing = [k for k in chain.state_keys if k not in loaded]
                if missing:
                    raise ValueError(f"state of parameter {i} lacks {missing} needed by {type(self).__name__}")
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
