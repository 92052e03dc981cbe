"""FlatOptimizer: a `torch.optim.Optimizer` that keeps parameters, gradients and state in one
flat buffer per (param group, device, dtype) and runs a transform chain over it.

Why: an update rule over 60 tensors costs 60 kernel launches (or a foreach list walk); over
one flat buffer it is one pass, and `torch.compile` fuses the whole chain into one kernel.
`p.data` is a view of the flat buffer, and `p.grad` one exactly while torch would hold a
gradient (None until a backward reaches the parameter, or after `zero_grad()`), so autograd
accumulates straight into the flat gradient and `state_dict()` hands out torch's exact
per-parameter layout (as views).

Correct first, torch's semantics exactly: a parameter without a gradient takes no part in a
step (no update, no decay, no state); a gradient the user replaced, a parameter rebound with
`p.data = ...`, params with different step counts: all are noticed at `step()` and handled
(the parameters that step run as few contiguous ranges of the flat buffers as they allow).

Fewer bytes (docs/memory.md): every flat optimizer takes `state_dtype` ("fp32", "bf16" with
stochastic rounding, "int8" block-wise codes), `param_rounding="stochastic"` and
`master_weights` for bf16 parameters, and `in_backward=True` (the update runs from each
bucket's post-accumulate-grad hook). Storage is the core's business: a transform never sees
anything but full-precision tensors of one range of the segment.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import torch
from torch import Tensor

from thalweg.optim.registry import Hyperparameter
from thalweg.optim.transforms.chain import Chain

from . import dtensor, kernel, plan, storage, stored
from .backward import BackwardStepper
from .dtensor import ShardSegment
from .kernel import autocast_off
from .lowprec import Layout
from .memory import MEMORY_OPTIONS, accepts_memory_options, memory_options
from .segment import Segment, clear_grad, real_dtype
from .statedict import apply_loaded, check_loadable

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


#: a compiled low-precision update runs in chunks of this many elements: the float32 values
#: inductor keeps between the block reduction and the re-quantization are one chunk's
COMPILED_CHUNK = 1 << 18


class FlatOptimizer(torch.optim.Optimizer):
    """Run a transform chain (or a :class:`Rule`) over flat parameter buffers.

    `FlatOptimizer(params, chain(...))` makes any optax-style chain an optimizer;
    the named optimizers (:class:`thalweg.optim.Adam`, …) are subclasses with torch's
    signatures. `compile`: True, False, or "auto" (compile segments of at least
    :data:`AUTO_COMPILE_MIN_NUMEL` elements); `compile_options` go to `torch.compile`.

    Memory options (every subclass takes them, see docs/memory.md): `state_dtype` None (the
    parameter's dtype, as torch), "fp32", "bf16" or "int8"; `state_block_size` (int8);
    `param_rounding` "nearest" or "stochastic" and `master_weights` (bf16 parameters);
    `in_backward` (update during backward, `bucket_numel` elements at a time). The first
    four may also be set per param group.

    As in torch.optim, a parameter steps exactly when its `p.grad` is not None (`zero_grad()`
    sets it to None; `zero_grad(set_to_none=False)` keeps a zero gradient, which steps).
    Difference by design: create the optimizer after moving the model to its device.
    """

    #: hyperparameter schema of the param groups (the named optimizers set theirs)
    schema: tuple[Hyperparameter, ...] = ()
    #: keyword arguments every flat optimizer accepts besides its hyperparameters
    memory_options = MEMORY_OPTIONS
    #: False: no flat buffers; a subclass steps the param groups another way (a torch twin's
    #: `differentiable=True` runs torch's own implementation, rules/torch_twin.py)
    _flat: bool = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        accepts_memory_options(cls)

    def __init__(
        self,
        params: Iterable[Any],
        rule: Rule | Chain,
        defaults: dict[str, Any] | None = None,
        *,
        compile: CompileMode = "auto",
        compile_options: Mapping[str, Any] | None = None,
        **memory: Any,
    ) -> None:
        if compile not in (True, False, "auto"):
            raise ValueError(f"compile must be True, False or 'auto', got {compile!r}")
        opts = memory_options(memory)
        self.rule = rule if isinstance(rule, Rule) else _FixedRule(rule)
        self.compile_mode: CompileMode = compile
        self.compile_options = dict(compile_options or {})
        self._segments: list[Segment] = []
        self._loose: list[tuple[int, Tensor]] = []  # params with requires_grad=False
        self._built = False
        self._backward: Any = None
        self._seed = torch.initial_seed() & 0x7FFFFFFF  # stochastic rounding (not the user's streams)
        defaults = dict(defaults or {"lr": 1.0})
        defaults.update({k: v for k, v in opts.items() if k in storage.MEMORY_KEYS})
        super().__init__(params, defaults)
        if self._flat:
            self._build_segments(range(len(self.param_groups)))
            self._built = True
        self._bucket_numel = opts.get("bucket_numel")
        if opts.get("in_backward"):
            self._backward = BackwardStepper(self, opts.get("bucket_numel"))

    # ------------------------------------------------------------------ construction
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        memory_options({k: v for k, v in param_group.items() if k in storage.MEMORY_KEYS},
                       where=f"param group {len(self.param_groups)}: ")
        super().add_param_group(param_group)
        if getattr(self, "_built", False):
            self._build_segments([len(self.param_groups) - 1])
            if self._backward is not None:
                self._backward.attach()

    def _build_segments(self, group_indices: Iterable[int]) -> None:
        for gi in group_indices:
            storage.refuse_rounded_weights(self.param_groups[gi], self.rule.build(self.param_groups[gi]), gi)
            buckets: dict[tuple[Any, ...], list[Tensor]] = {}
            group = self.param_groups[gi]
            for p in group["params"]:
                storage.refuse_complex(group, p, gi)
                if not p.requires_grad:
                    self._loose.append((gi, p))
                    continue
                buckets.setdefault(dtensor.segment_key(p), []).append(p)
            for plist in buckets.values():
                self._segments.append(self._new_segment(gi, plist))

    def _new_segment(self, gi: int, plist: list[Tensor]) -> Segment:
        if dtensor.is_dtensor(plist[0]):  # DTensors (FSDP2): their local shards, copied in and out
            seg: Segment = ShardSegment(gi, plist, type(self).__name__)
        else:  # complex parameters (real views (…, 2)) first: each starts at an even offset
            seg = Segment(gi, sorted(plist, key=lambda p: not p.is_complex()))
        if self.rule.eager_state:
            self._ensure_chain(seg)
            for i in range(len(plist)):
                self._start(seg, i)
        return seg

    def _repack_moved(self) -> None:
        """A segment whose parameters moved to another device or dtype before its first step
        (a model built on the meta device, then `to_empty`) is packed anew where they are now;
        after a step, `Segment.pull` refuses the move with a clear error."""
        if self._backward is not None:
            return
        for k, seg in enumerate(list(self._segments)):
            if any(s for s in seg.steps) or all(
                    p.device == seg.device and real_dtype(p.dtype) == seg.dtype for p in seg.params):
                continue
            buckets: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
            for p in seg.params:
                buckets.setdefault((p.device, real_dtype(p.dtype)), []).append(p)
            for p in seg.params:
                self.state.pop(p, None)
            self._segments[k:k + 1] = [self._new_segment(seg.group_index, plist) for plist in buckets.values()]

    def _ensure_chain(self, seg: Segment) -> Chain:
        group = self.param_groups[seg.group_index]
        key = self.rule.key(group)
        if seg.chain is None or key != seg.chain_key:
            chain = self.rule.build(group)
            layout = storage.layout_for(group, seg, chain)
            if seg.layout is not None and layout.block != seg.layout.block:
                raise ValueError("state_block_size is fixed once the optimizer has state; make a new optimizer")
            if seg.chain is not None and chain.state_keys != seg.chain.state_keys:
                # e.g. momentum switched on: new buffers start fresh, as torch's would
                new = tuple(k for k in chain.state_keys if k not in seg.state)
                seg.state = {k: seg.state[k] for k in chain.state_keys if k in seg.state}
                seg.scales = {k: seg.scales[k] for k in seg.state if k in seg.scales}
                storage.init_state(seg, chain, layout, group, new)
                for i in range(len(seg.params)):
                    if seg.started[i]:
                        self._expose(seg, i, chain, layout)
            if self._backward is not None:
                self._backward.check(chain)
            seg.chain, seg.chain_key, seg.fn, seg.layout = chain, key, None, layout
        if (not seg.state and seg.chain.state_keys) or (seg.layout.master and seg.master is None):
            storage.init_state(seg, seg.chain, seg.layout, group)
        return seg.chain

    def _start(self, seg: Segment, i: int) -> None:
        seg.started[i] = True
        assert seg.chain is not None and seg.layout is not None
        self._expose(seg, i, seg.chain, seg.layout)

    def _expose(self, seg: Segment, i: int, chain: Chain, layout: Layout) -> None:
        """Per-parameter state dict entries as views of the flat buffers (torch's layout)."""
        st: dict[str, Any] = {}
        if storage.keeps_step(chain, layout):
            st["step"] = seg.step_t[i]
        entries = storage.param_entries(seg, chain, layout, i)
        st.update(dtensor.present(seg, i, entries) if isinstance(seg, ShardSegment) else entries)
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
        assert seg.layout is not None
        if seg.fn is None and not seg.layout.plain:
            seg.fn = self._stored_function(seg)
        if seg.fn is None:  # a full-precision segment (see :func:`kernel.plain_runner`)
            compiled = self._want_compile(seg)
            if compiled:
                log.info(
                    "thalweg: compiling the %s update for %d parameters on %s (first step only)",
                    type(self).__name__, seg.numel, seg.device,
                )
            seg.fn = kernel.plain_runner(seg.chain, compiled, self.compile_options)
            seg.compiled = compiled
        return seg.fn

    def _stored_function(self, seg: Segment) -> Callable[..., None]:
        """The update of a low-precision segment (see :func:`stored.runner`)."""
        compiled = self._want_compile(seg)
        if compiled:
            log.info("thalweg: compiling the %s low-precision update on %s (first step only)",
                     type(self).__name__, seg.device)
        seg.compiled = compiled
        return stored.runner(seg, self._seed, compiled, self.compile_options,
                             COMPILED_CHUNK if compiled else kernel.EAGER_CHUNK)

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
        if self._backward is not None:  # the updates ran during backward
            return loss
        devices = [seg.device.type for seg in self._segments] + [p.device.type for _, p in self._loose]
        with autocast_off(devices):
            self._update()
        return loss

    def _update(self) -> None:
        """Plan every kernel call (:mod:`.plan`), run the chain's passes over all of them,
        then count the step; the step hooks before and after."""
        self._repack_moved()
        self._begin_step()
        actives = [seg.sync() for seg in self._segments]
        for seg, act in zip(self._segments, actives, strict=True):
            for i, g in seg.sparse.items():
                self._sparse_step(seg, i, g)
                act[i] = False
        plans = [plan.plan_segment(self, seg, act, kernel.EAGER_CHUNK) for seg, act in zip(self._segments, actives, strict=True)]
        plans += [plan.plan_loose(self, gi, p) for gi, p in self._loose if p.grad is not None]
        plan.run(plans, self._reduced, kernel.EAGER_CHUNK)
        for seg in self._segments:
            seg.push()
        self._end_step()

    def _sparse_step(self, seg: Segment, i: int, g: Tensor) -> None:
        """Parameter i's step from a sparse gradient, by its rule's sparse path (torch's)."""
        sparse = getattr(self.rule, "sparse_step", None)
        if sparse is None:
            raise RuntimeError(f"{type(self).__name__} does not support sparse gradients; use dense gradients "
                               "(e.g. nn.Embedding(sparse=False)), or SGD / Adagrad")
        chain = self._ensure_chain(seg)
        assert seg.layout is not None
        if not seg.layout.plain:
            raise RuntimeError(f"{type(self).__name__}: sparse gradients need state_dtype None or 'fp32' "
                               "(bf16/int8 state has no sparse path); use dense gradients")
        states = {k: seg._view(seg.state[k], i) for k in chain.state_keys}
        sparse(self.param_groups[seg.group_index], seg.p_views[i], g, states, seg.steps[i] + 1)
        plan.count_steps(self, seg, chain, [i])

    # hooks for rules with host state of their own (see docs/CONTRACTS.md): once per step()
    # (with `in_backward`: once per backward, around its buckets' updates)
    def _begin_step(self) -> None:
        """Before any scalars are computed (schedule-free's and Prodigy's group bookkeeping)."""

    def _reduced(self, part: int, totals: Tensor) -> None:
        """A global reduction's totals, before its transforms' `combine` (Prodigy's d)."""

    def _end_step(self) -> None:
        """After every update of the step."""

    def zero_grad(self, set_to_none: bool = True) -> None:
        """torch's `zero_grad`: every `p.grad` None (the default), or zeroed where present with
        `set_to_none=False`; the flat gradient buffers are zeroed in one memset each, so the
        next backward accumulates into them in place. With `in_backward` the updates freed
        the gradients already; this does nothing."""
        for seg in self._segments if self._backward is None else ():
            seg.zero_grad(set_to_none)
        for _, p in self._loose:
            clear_grad(p, set_to_none)

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
        dtensor.decode_int8(self, sd)
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch.optim's (or our own) state dict, checked whole before anything changes: a
        bad one raises a ValueError naming the group, parameter and key, and leaves this
        optimizer exactly as it was."""
        check_loadable(self, state_dict)
        apply_loaded(self, state_dict, super().load_state_dict)

    def state_nbytes(self) -> int:
        """Bytes the optimizer state really occupies: every state buffer in its storage
        format (int8 codes and their scales, bf16, float32), master weights and step
        counters — what `state_dtype` changes."""
        total = sum(storage.nbytes(seg) for seg in self._segments)
        for _, p in self._loose:
            total += sum(t.numel() * t.element_size() for t in self.state.get(p, {}).values() if isinstance(t, Tensor))
        return total

    def __getstate__(self) -> dict[str, Any]:
        # torch.optim keeps only defaults/state/param_groups; the flat buffers are needed too
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for g in self.param_groups:
            for k, v in self.defaults.items():
                g.setdefault(k, v)

    # ------------------------------------------------------------------ introspection
    def grad_views(self, params: Iterable[Tensor]) -> list[Tensor]:
        """The views of the flat gradient buffers that `params` take as `p.grad` (for rules
        that write their own gradients, e.g. Shampoo's inner optimizer over probes)."""
        where = {id(p): (seg, i) for seg in self._segments for i, p in enumerate(seg.params)}
        return [where[id(p)][0].g_views[where[id(p)][1]] for p in params]

    @property
    def num_segments(self) -> int:
        """How many flat buffers (one per group × device × dtype) this optimizer runs over."""
        return len(self._segments)
