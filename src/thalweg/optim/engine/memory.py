"""The memory options every flat optimizer takes (`state_dtype`, `state_block_size`,
`param_rounding`, `master_weights`, `in_backward`, `bucket_numel`): their schema, their one
check, and how a subclass gets them without naming them in its own signature.

A rule written as `class NAdam(FlatOptimizer)` with torch's signature accepts the options
anyway: `FlatOptimizer.__init_subclass__` wraps its `__init__`, which hands them to
`FlatOptimizer.__init__` (through a context variable), so a new rule gets low-precision
state, stochastic rounding and step-in-backward with no change of its own.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Mapping
from typing import Any

from thalweg.optim.registry import Hyperparameter as H
from thalweg.optim.registry import HyperparameterError

from .lowprec import DEFAULT_BLOCK, PARAM_ROUNDINGS, STATE_DTYPES

__all__ = ["MEMORY_OPTIONS", "MEMORY_SCHEMA", "accepts_memory_options", "memory_options", "step_seed"]

#: gradients of this many elements are updated together in `in_backward` mode (16 MB float32)
DEFAULT_BUCKET = 1 << 22

MEMORY_SCHEMA = (
    H("state_dtype", None, kind="choice", choices=STATE_DTYPES,
      help="optimizer state storage: None (the parameter's dtype), fp32, bf16 (stochastic rounding), int8"),
    H("state_block_size", DEFAULT_BLOCK, kind="choice", choices=tuple(2**k for k in range(4, 17)),
      help="elements per int8 block (one float32 scale each)"),
    H("param_rounding", "nearest", kind="choice", choices=PARAM_ROUNDINGS,
      help="how bf16 parameters are written after an update"),
    H("master_weights", False, kind="bool", help="keep a float32 master copy of bf16/fp16 parameters"),
    H("in_backward", False, kind="bool", help="update each bucket from its post-accumulate-grad hook"),
    H("bucket_numel", DEFAULT_BUCKET, kind="int", low=1, help="elements per step-in-backward bucket"),
)
MEMORY_OPTIONS = tuple(h.name for h in MEMORY_SCHEMA)
_DEFAULTS = {h.name: h.default for h in MEMORY_SCHEMA}

_PENDING: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("thalweg_memory", default=None)


def memory_options(given: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """The options in force: those a subclass wrapper passed on, then `given`; each checked
    by the schema. Only options that differ from their default are returned."""
    unknown = sorted(set(given) - set(MEMORY_OPTIONS))
    if unknown:
        raise TypeError(f"unexpected keyword argument {unknown[0]!r} (memory options: {', '.join(MEMORY_OPTIONS)})")
    merged = {**(_PENDING.get() or {}), **given}
    for spec in MEMORY_SCHEMA:
        if spec.name in merged:
            try:
                spec.check(merged[spec.name], where=f"{where}{spec.name}")
            except HyperparameterError as e:
                raise ValueError(str(e)) from None
    return {k: v for k, v in merged.items() if v != _DEFAULTS[k]}


def pending_memory_options() -> dict[str, Any]:
    """The memory options a subclass's constructor was given (those not at their default)."""
    return memory_options({})


def accepts_memory_options(cls: type) -> None:
    """Let `cls.__init__` take the memory options even if its signature does not name them."""
    init = cls.__dict__.get("__init__")
    if init is None or getattr(init, "_thalweg_memory", False):
        return
    sig = inspect.signature(init)
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()) or "state_dtype" in sig.parameters:
        return

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        opts = {k: kwargs.pop(k) for k in MEMORY_OPTIONS if k in kwargs}
        if not opts:
            init(self, *args, **kwargs)
            return
        token = _PENDING.set({**(_PENDING.get() or {}), **opts})
        try:
            init(self, *args, **kwargs)
        finally:
            _PENDING.reset(token)

    extra = [inspect.Parameter(h.name, inspect.Parameter.KEYWORD_ONLY, default=h.default) for h in MEMORY_SCHEMA]
    __init__.__signature__ = sig.replace(parameters=[*sig.parameters.values(), *extra])  # type: ignore[attr-defined]
    __init__._thalweg_memory = True  # type: ignore[attr-defined]
    cls.__init__ = __init__  # type: ignore[misc]


def step_seed(seed: int, step: int, part: int) -> int:
    """The int32 seed of one step's stochastic roundings: different for every step and pass,
    the same on every run of the same program (bits differ per element by its index)."""
    h = (seed * 0x9E3779B1 + step * 0x85EBCA6B + part * 0xC2B2AE35) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h
