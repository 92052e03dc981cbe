"""The single list of optimizers: name → constructor + hyperparameter schema.

Tests, the CLI, the trainer's config and the benchmarks all iterate over this table (torch's
`OptimizerInfo` table is the model), so adding an optimizer here is enough for it to be
tested, configurable and benchmarked.

Providers are modules that call :func:`register` at import time; they are imported on first
use so that `import thalweg.optim.registry` stays cheap.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

__all__ = [
    "Hyperparameter",
    "OptimizerInfo",
    "SearchDim",
    "create",
    "get",
    "infos",
    "names",
    "register",
    "schema",
]

# Modules that register optimizers when imported. Append yours here.
_PROVIDERS: list[str] = [
    "thalweg.optim.rules",
    "thalweg.optim.second_order",
    "thalweg.optim.matrix",
]

_REGISTRY: dict[str, OptimizerInfo] = {}
_loaded = False


@dataclass(frozen=True)
class Hyperparameter:
    """One constructor argument: its type, default and valid range (for configs and docs)."""

    name: str
    default: Any
    kind: Literal["float", "int", "bool", "str", "betas", "choice"] = "float"
    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True
    choices: tuple[Any, ...] = ()
    help: str = ""
    schedulable: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description (for `thalweg optimizers --json` and config docs)."""
        d: dict[str, Any] = {"name": self.name, "default": self.default, "kind": self.kind}
        if self.low is not None:
            d["low"] = self.low
            d["low_inclusive"] = self.low_inclusive
        if self.high is not None:
            d["high"] = self.high
            d["high_inclusive"] = self.high_inclusive
        if self.choices:
            d["choices"] = list(self.choices)
        if self.help:
            d["help"] = self.help
        if self.schedulable:
            d["schedulable"] = True
        return d


@dataclass(frozen=True)
class SearchDim:
    """One dimension of an optimizer's default search space (the bench samples it).

    `name` is a hyperparameter of the schema; `index` picks one entry of a tuple-valued one
    (`betas`); with `one_minus` the sampled quantity is 1 − value (as AlgoPerf samples
    1 − β₁ log-uniformly), so `low`/`high` bound 1 − value.
    """

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    kind: Literal["float", "int", "choice"] = "float"
    choices: tuple[Any, ...] = ()
    index: int | None = None
    one_minus: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description (for `thalweg optimizers --json` and bench records)."""
        d: dict[str, Any] = {"name": self.name, "kind": self.kind}
        for key in ("low", "high", "index"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        if self.log:
            d["log"] = True
        if self.one_minus:
            d["one_minus"] = True
        if self.choices:
            d["choices"] = list(self.choices)
        return d


@dataclass(frozen=True)
class OptimizerInfo:
    """Everything the rest of thalweg needs to know about one optimizer."""

    name: str
    factory: Callable[..., torch.optim.Optimizer]
    hyperparameters: tuple[Hyperparameter, ...]
    description: str = ""
    order: Literal["first", "second"] = "first"
    #: torch.optim class that computes the same trajectory (for agreement tests), if any.
    torch_reference: type[torch.optim.Optimizer] | None = None
    #: `step(closure)` is required (Newton, L-BFGS, AdaHessian).
    needs_closure: bool = False
    #: the factory takes the model (`create(name, model, ...)`) rather than parameters (K-FAC).
    needs_model: bool = False
    #: option values whose every combination the agreement tests run.
    option_grid: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    #: other names that find this optimizer.
    aliases: tuple[str, ...] = ()
    #: keyword arguments accepted besides the hyperparameters (e.g. `compile`).
    options: tuple[str, ...] = ()
    #: the default search space of the bench (log-uniform lr and the rule's own knobs).
    search_space: tuple[SearchDim, ...] = ()

    def defaults(self) -> dict[str, Any]:
        return {h.name: h.default for h in self.hyperparameters}

    def hyperparameter(self, name: str) -> Hyperparameter:
        for h in self.hyperparameters:
            if h.name == name:
                return h
        raise KeyError(name)


def register(info: OptimizerInfo) -> OptimizerInfo:
    """Add an optimizer to the table (names are case-insensitive and unique)."""
    key = info.name.lower()
    known = {h.name for h in info.hyperparameters}
    for dim in info.search_space:
        if dim.name not in known:
            raise ValueError(
                f"optimizer {info.name!r}: search dimension {dim.name!r} is not a hyperparameter"
            )
    if key in _REGISTRY and _REGISTRY[key].factory is not info.factory:
        raise ValueError(f"optimizer {info.name!r} is already registered")
    _REGISTRY[key] = info
    for alias in info.aliases:
        _REGISTRY.setdefault(alias.lower(), info)
    return info


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in _PROVIDERS:
        importlib.import_module(mod)


def infos() -> list[OptimizerInfo]:
    """Every registered optimizer once (aliases removed), in registration order."""
    _load()
    seen: dict[str, OptimizerInfo] = {}
    for info in _REGISTRY.values():
        seen.setdefault(info.name, info)
    return list(seen.values())


def names() -> list[str]:
    """Canonical names of all registered optimizers."""
    return [i.name for i in infos()]


def get(name: str) -> OptimizerInfo:
    """Look an optimizer up by name or alias; a clear error lists what exists."""
    _load()
    try:
        return _REGISTRY[name.lower()]
    except KeyError:
        raise ValueError(
            f"unknown optimizer {name!r}; known: {', '.join(sorted(names()))}"
        ) from None


def schema(name: str) -> list[dict[str, Any]]:
    """The hyperparameter schema of one optimizer as JSON-able dicts."""
    return [h.to_dict() for h in get(name).hyperparameters]


def validate_hparams(name: str, hparams: Mapping[str, Any]) -> None:
    """Reject unknown hyperparameter names before construction (constructors check ranges)."""
    info = get(name)
    known = {h.name for h in info.hyperparameters}
    unknown = sorted(set(hparams) - known - set(info.options))
    if unknown:
        raise ValueError(
            f"optimizer {info.name!r} has no hyperparameter {unknown[0]!r}; "
            f"it takes: {', '.join(sorted(known))}"
        )


def create(name: str, params: Iterable[Any] | torch.nn.Module, **hparams: Any) -> torch.optim.Optimizer:
    """Build optimizer `name` over `params` (or a model, for optimizers that need one)."""
    info = get(name)
    validate_hparams(name, hparams)
    if info.needs_model:
        if not isinstance(params, torch.nn.Module):
            raise TypeError(f"optimizer {info.name!r} needs the model, not a parameter list")
        return info.factory(params, **hparams)
    if isinstance(params, torch.nn.Module):
        params = params.parameters()
    return info.factory(params, **hparams)
