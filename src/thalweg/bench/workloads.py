"""The bench's workloads: a registry like the optimizers' (name → factory → :class:`Workload`).

A workload is a model + data + loss (built per seed as a :class:`Problem`), a **target** (the
validation metric to reach, set as AlgoPerf does from the best of tuned baselines, stored in
:mod:`thalweg.bench.targets` with the command that recomputes it), a **step budget** and a
**wall-clock budget**. Parameters go in ``name(key=value, ...)`` or as keyword arguments to
:func:`get`. `get` knows registered workloads only and never imports anything; a
`thalweg train` config or a workload of the user's own code is loaded by
:mod:`thalweg.bench.loader`.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
from torch import nn

__all__ = [
    "Problem",
    "Workload",
    "WorkloadError",
    "get",
    "infos",
    "names",
    "parse_key",
    "register",
    "workload_key",
]


class WorkloadError(ValueError):
    """An unknown workload, a bad parameter, or a workload without a target."""


@dataclass
class Problem:
    """One seeded instance of a workload: what a trial trains and how it is measured.

    ``batches`` yields training batches forever (``None`` for full-batch problems);
    ``loss(batch)`` is the scalar training objective; ``evaluate()`` returns the metrics
    (the workload's ``metric`` among them) with the model in eval mode."""

    model: nn.Module
    loss: Callable[[Any], torch.Tensor]
    batches: Iterator[Any]
    evaluate: Callable[[], dict[str, float]]
    steps_per_epoch: int = 1
    clip_norm: float | None = None
    clip_value: float | None = None
    #: metrics on held-out test data after training (config workloads), else empty.
    test: Callable[[], dict[str, float]] = field(default=lambda: {})


@dataclass(frozen=True)
class Workload:
    """Model + data + loss + target + budgets; `build(seed)` makes a :class:`Problem`."""

    name: str
    build: Callable[[int], Problem]
    metric: str
    mode: Literal["min", "max"]
    step_budget: int
    max_seconds: float
    eval_every: int = 1
    target: float | None = None
    #: targets are never tighter than this (exactly solvable problems reach float precision).
    tolerance: float | None = None
    description: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    #: the `thalweg train` config a config workload is built from (recipes are exported from it).
    config: Any = None
    #: how the stored target was obtained (command, date, host).
    target_source: str = ""
    #: False for the exactly solvable problems: a weight decay changes their objective, so
    #: the bench holds it at 0 instead of searching it.
    weight_decay: bool = True
    #: what `get` resolves back to this workload (in worker processes and Ray tasks).
    ref: str = ""
    #: "real" workloads make the headline score; "toy" ones (exactly solvable, full batch)
    #: are scored apart.
    group: Literal["real", "toy"] = "real"

    @property
    def key(self) -> str:
        """Name plus parameters: the identity of the workload in studies and results."""
        return workload_key(self.name, self.params)

    def reached(self, value: float | None) -> bool:
        """Whether a metric value meets the target."""
        if value is None or self.target is None or not math.isfinite(value):
            return False
        return value <= self.target if self.mode == "min" else value >= self.target

    def better(self, a: float | None, b: float | None) -> bool:
        """Whether metric value `a` is strictly better than `b` (None/NaN is worst)."""
        if a is None or not math.isfinite(a):
            return False
        if b is None or not math.isfinite(b):
            return True
        return a < b if self.mode == "min" else a > b

    def with_target(self, value: float | None, source: str = "") -> Workload:
        return replace(self, target=value, target_source=source or self.target_source)

    def scaled(self, factor: float) -> Workload:
        """The same workload with step and wall-clock budgets times `factor` (self-tuning: 1.5)."""
        return replace(self, step_budget=max(1, round(self.step_budget * factor)),
                       max_seconds=self.max_seconds * factor)

    def describe(self) -> dict[str, Any]:
        """JSON-able summary (for `thalweg bench workloads --json` and the results)."""
        return {
            "key": self.key, "name": self.name, "metric": self.metric, "mode": self.mode,
            "target": self.target, "tolerance": self.tolerance, "target_source": self.target_source,
            "step_budget": self.step_budget, "max_seconds": self.max_seconds,
            "eval_every": self.eval_every, "params": dict(self.params), "group": self.group,
            "description": self.description,
        }  # fmt: skip


_FACTORIES: dict[str, Callable[..., Workload]] = {}
_loaded = False


def register(name: str) -> Callable[[Callable[..., Workload]], Callable[..., Workload]]:
    """Decorator: add a workload factory (keyword parameters with defaults) under `name`."""

    def deco(factory: Callable[..., Workload]) -> Callable[..., Workload]:
        if name in _FACTORIES and _FACTORIES[name] is not factory:
            raise ValueError(f"workload {name!r} is already registered")
        _FACTORIES[name] = factory
        return factory

    return deco


def _load() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        importlib.import_module("thalweg.bench.problems")
        importlib.import_module("thalweg.bench.charlm")


def names() -> list[str]:
    """The registered workload names."""
    _load()
    return list(_FACTORIES)


def infos() -> list[Workload]:
    """Every registered workload with its default parameters."""
    return [get(n) for n in names()]


def workload_key(name: str, params: Mapping[str, Any]) -> str:
    """`name` or `name(k=v, ...)` with sorted keys: how results name a workload."""
    if not params:
        return name
    return f"{name}({', '.join(f'{k}={params[k]!r}' for k in sorted(params))})"


def parse_key(text: str) -> tuple[str, dict[str, Any]]:
    """Split ``"quadratic(condition_number=1000)"`` into a name and literal parameters."""
    import ast

    text = text.strip()
    if "(" not in text:
        return text, {}
    if not text.endswith(")"):
        raise WorkloadError(f"workload {text!r}: expected name(key=value, ...)")
    name, args = text[: text.index("(")].strip(), text[text.index("(") :]
    try:
        call = ast.parse(f"f{args}", mode="eval").body
        assert isinstance(call, ast.Call) and not call.args
        params = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords if kw.arg}
    except (SyntaxError, ValueError, AssertionError):
        raise WorkloadError(f"workload {text!r}: parameters must be key=literal pairs") from None
    return name, params


def get(name: str, **params: Any) -> Workload:
    """The registered workload `name` with `params`, and its stored target (nothing is
    imported: a name that is not registered is an error)."""
    from thalweg.bench import targets

    _load()
    base, parsed = parse_key(name)
    params = {k: tuple(v) if isinstance(v, list) else v for k, v in {**parsed, **params}.items()}
    if base not in _FACTORIES:
        raise WorkloadError(f"unknown workload {base!r}; known: {', '.join(names())}")
    factory = _FACTORIES[base]
    known = inspect.signature(factory).parameters
    for k in params:
        if k not in known:
            raise WorkloadError(
                f"workload {base!r} has no parameter {k!r}; it takes: {', '.join(known) or 'none'}"
            )
    try:
        w = factory(**params)
    except (TypeError, ValueError) as e:
        raise WorkloadError(f"workload {base!r}: {e}") from None
    # parameters equal to the defaults are left out, so `quadratic` and
    # `quadratic(condition_number=100.0)` are one workload with one key and one target
    given = {k: v for k, v in sorted(params.items()) if v != known[k].default}
    w = replace(w, params=given, ref=workload_key(base, given))
    if w.target is None and (stored := targets.lookup(w.key)) is not None:
        w = w.with_target(stored["value"], stored.get("source", ""))
    return w
