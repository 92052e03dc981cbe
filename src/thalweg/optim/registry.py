"""The single list of optimizers: name → constructor + hyperparameter schema.

Tests, the CLI, the trainer's config and the benchmarks all iterate over this table (torch's
`OptimizerInfo` table is the model), so adding an optimizer here is enough for it to be
tested, configurable and benchmarked.

The entries thalweg ships are registered by :mod:`thalweg.optim.catalog` when `thalweg.optim`
is imported (which any `import thalweg.optim.…` does first); :func:`register` adds your own.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

__all__ = [
    "Hyperparameter",
    "HyperparameterError",
    "HyperparameterTypeError",
    "OptimizerInfo",
    "SearchDim",
    "aliases",
    "check_values",
    "create",
    "get",
    "infos",
    "lr_notice",
    "names",
    "preset",
    "register",
    "schema",
    "validate_hparams",
]

_REGISTRY: dict[str, OptimizerInfo] = {}
_ALIASES: dict[str, tuple[str, dict[str, Any]]] = {}  # alias → (canonical name, preset values)


class HyperparameterError(ValueError):
    """A value outside its schema: `where` names the argument, `problem` says what is wrong
    (e.g. "must be ≥ 0.0"), `note` (optional) what the whole argument should look like."""

    def __init__(self, where: str, value: Any, problem: str, note: str = "") -> None:
        self.where, self.value, self.problem, self.note = where, value, problem, note
        super().__init__(f"{where} {problem}, got {value!r}" + (f" ({note})" if note else ""))


class HyperparameterTypeError(HyperparameterError, TypeError):
    """A value of the wrong type (a `TypeError` too, as Python's convention has it)."""


def _num(x: float) -> str:
    return f"{x:g}"


@dataclass(frozen=True)
class Hyperparameter:
    """One constructor argument: its type, default and valid range, and :meth:`check`, the
    one validator every optimizer, chain transform, config and `validate_hparams` calls.

    `None` is accepted exactly when the default is `None` (e.g. L-BFGS's `max_eval`); NaN is
    never accepted and ±inf only with `allow_inf`; a schedule (callable) only when
    `schedulable`.
    """

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
    allow_inf: bool = False

    def check(self, value: Any, where: str | None = None) -> Any:
        """Return `value` unchanged if the schema allows it, else raise a
        :class:`HyperparameterError` (a :class:`HyperparameterTypeError` for a wrong type)
        naming `where` (default: the argument's name) and the value."""
        where = where or self.name
        if value is None and self.default is None:
            return value
        kind = self.kind
        if kind == "bool":
            if not isinstance(value, bool):
                raise HyperparameterTypeError(where, value, "must be true or false")
        elif kind == "str":
            if not isinstance(value, str):
                raise HyperparameterTypeError(where, value, "must be a string")
        elif kind == "choice":
            if not any(value is c or (type(value) is type(c) and value == c) for c in self.choices):
                shown = ", ".join(repr(c) for c in self.choices)
                raise HyperparameterError(where, value, f"must be one of {shown}")
        elif kind == "betas":
            note = f"{self.name}: two numbers in {self._range()}, e.g. {self.default!r}"
            if not isinstance(value, (tuple, list)) or len(value) != 2:
                raise HyperparameterError(where, value, f"must be two numbers in {self._range()}",
                                          f"e.g. {self.default!r}")
            for j, b in enumerate(value):
                try:
                    self._check_number(b, f"{where}[{j}]", integer=False)
                except HyperparameterError as e:
                    raise type(e)(e.where, e.value, e.problem, note) from None
        elif self.schedulable and callable(value) and not isinstance(value, torch.Tensor):
            pass  # a schedule: its values are the caller's responsibility
        else:
            self._check_number(value, where, integer=kind == "int")
        return value

    def _range(self) -> str:
        lo = "(-inf" if self.low is None else ("[" if self.low_inclusive else "(") + _num(self.low)
        hi = "inf)" if self.high is None else _num(self.high) + ("]" if self.high_inclusive else ")")
        return f"{lo}, {hi}"

    def _check_number(self, value: Any, where: str, *, integer: bool) -> None:
        what = "an integer" if integer else "a number"
        if isinstance(value, torch.Tensor) and not integer:
            if value.numel() != 1:
                raise HyperparameterTypeError(where, value, f"must be {what} (a tensor of one element)")
            value = value.item()
        if isinstance(value, str):
            try:
                float(value)
            except ValueError:
                raise HyperparameterTypeError(where, value, f"must be {what}") from None
            raise HyperparameterTypeError(where, value, f"must be {what}",
                                          f"a string: write {value.strip()} without quotes")
        ok = isinstance(value, numbers.Integral if integer else numbers.Real) and not isinstance(value, bool)
        if not ok:
            raise HyperparameterTypeError(where, value, f"must be {what}")
        v = float(value)
        if math.isnan(v) or (math.isinf(v) and not self.allow_inf):
            raise HyperparameterError(where, value, "must be finite")
        if self.low is not None and (v < self.low or (v == self.low and not self.low_inclusive)):
            raise HyperparameterError(where, value, f"must be {'≥' if self.low_inclusive else '>'} {self.low}")
        if self.high is not None and (v > self.high or (v == self.high and not self.high_inclusive)):
            raise HyperparameterError(where, value, f"must be {'≤' if self.high_inclusive else '<'} {self.high}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description (for `thalweg optimizers --json` and config docs)."""
        default = self.default
        if isinstance(default, float) and math.isinf(default):
            default = str(default)  # "inf": strict JSON has no infinity
        d: dict[str, Any] = {"name": self.name, "default": default, "kind": self.kind}
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
        if self.allow_inf:
            d["allow_inf"] = True
        return d


def check_values(values: Mapping[str, Any], schema: Iterable[Hyperparameter], where: str = "") -> None:
    """Check every entry of `values` that the schema describes (others are left alone);
    `where` prefixes the argument's name in the error (e.g. "param group 1: ")."""
    for spec in schema:
        if spec.name in values:
            spec.check(values[spec.name], where=f"{where}{spec.name}")


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
    #: the factory also takes the model or `named_parameters()` and uses the names (Muon splits
    #: embeddings and the head off to AdamW): `create(name, model)` passes the model through.
    accepts_named: bool = False
    #: a third-party implementation of the same rule, "module:Class" (imported only by the
    #: agreement tests and the benchmarks), taking the same keyword arguments.
    reference: str | None = None
    #: option values whose every combination the agreement tests run.
    option_grid: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    #: preset names that find this optimizer, each with the hyperparameters it sets
    #: ("momentum" → sgd with {"momentum": 0.9}); the user's own values override them.
    aliases: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: keyword arguments accepted besides the hyperparameters (e.g. `compile`).
    options: tuple[str, ...] = ()
    #: the default search space of the bench (log-uniform lr and the rule's own knobs).
    search_space: tuple[SearchDim, ...] = ()
    #: the learning rate a training run starts from when its config names none: the rule's
    #: paper or reference implementation's usual value (unset: the constructor's `lr`, which
    #: follows torch.optim's signature and is not always a good start, e.g. SGD's 1e-3).
    default_lr: float | None = None

    def __post_init__(self) -> None:
        if self.default_lr is None and any(h.name == "lr" for h in self.hyperparameters):
            object.__setattr__(self, "default_lr", self.hyperparameter("lr").default)
        if isinstance(self.aliases, (tuple, list)):  # plain names: presets that set nothing
            object.__setattr__(self, "aliases", {a: {} for a in self.aliases})
        # every flat optimizer takes the memory options (state_dtype, in_backward, …)
        extra = [o for o in getattr(self.factory, "memory_options", ()) if o not in self.options]
        if extra:
            object.__setattr__(self, "options", (*self.options, *extra))

    def defaults(self) -> dict[str, Any]:
        return {h.name: h.default for h in self.hyperparameters}

    def hyperparameter(self, name: str) -> Hyperparameter:
        for h in self.hyperparameters:
            if h.name == name:
                return h
        raise KeyError(name)

    def check(self, values: Mapping[str, Any], where: str = "") -> None:
        """Check the hyperparameters in `values` against this schema (a constructor passes
        its `locals()`, so its bounds are the schema's and cannot drift from it)."""
        check_values(values, self.hyperparameters, where)


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
    if key in _ALIASES:
        raise ValueError(f"optimizer name {info.name!r} is already an alias of {_ALIASES[key][0]!r}")
    for alias, hp in info.aliases.items():
        unknown = sorted(set(hp) - known)
        if unknown:
            raise ValueError(f"optimizer {info.name!r}: alias {alias!r} sets unknown {unknown}")
        info.check(hp, where=f"alias {alias!r}: ")
        other = _ALIASES.get(alias.lower())
        if alias.lower() in _REGISTRY or (other is not None and other[0] != key):
            raise ValueError(f"alias {alias!r} of {info.name!r} is already a registered name")
    _REGISTRY[key] = info
    for alias, hp in info.aliases.items():
        _ALIASES[alias.lower()] = (key, dict(hp))
    return info


def infos() -> list[OptimizerInfo]:
    """Every registered optimizer once (aliases not repeated), in registration order."""
    return list(_REGISTRY.values())


def names() -> list[str]:
    """Canonical names of all registered optimizers."""
    return [i.name for i in infos()]


def get(name: str) -> OptimizerInfo:
    """Look an optimizer up by name or alias; a clear error lists what exists."""
    key = name.lower()
    if key in _ALIASES:
        key = _ALIASES[key][0]
    try:
        return _REGISTRY[key]
    except KeyError:
        raise ValueError(
            f"unknown optimizer {name!r}; known: {', '.join(sorted(names()))}; "
            f"aliases: {', '.join(sorted(_ALIASES))}"
        ) from None


def preset(name: str) -> dict[str, Any]:
    """The hyperparameters an alias sets (`{}` for a canonical name)."""
    get(name)
    entry = _ALIASES.get(name.lower())
    return dict(entry[1]) if entry else {}


def aliases() -> dict[str, tuple[str, dict[str, Any]]]:
    """Every alias: name → (canonical optimizer, the hyperparameters it sets)."""
    return {a: (n, dict(hp)) for a, (n, hp) in _ALIASES.items()}


def schema(name: str) -> list[dict[str, Any]]:
    """The hyperparameter schema of one optimizer as JSON-able dicts."""
    return [h.to_dict() for h in get(name).hyperparameters]


def validate_hparams(name: str, hparams: Mapping[str, Any]) -> None:
    """Reject unknown hyperparameter names and values outside the schema before construction
    (the same :meth:`Hyperparameter.check` the constructors run)."""
    info = get(name)
    known = {h.name for h in info.hyperparameters}
    unknown = sorted(set(hparams) - known - set(info.options))
    if unknown:
        raise ValueError(
            f"optimizer {info.name!r} has no hyperparameter {unknown[0]!r}; "
            f"it takes: {', '.join(sorted(known))}"
        )
    info.check(hparams)


def lr_notice(name: str, lr: Any, tuned: Mapping[float, str] | None = None) -> str | None:
    """One line when `lr` looks carried over from another rule: it is more than 10× away from
    `name`'s default lr *and* it is another rule's default (or one of `tuned`: lr → whose it
    is). An lr of the user's own choosing is left alone; None when there is nothing to say."""
    info = get(name)
    usual = info.default_lr
    if usual is None or isinstance(lr, bool) or not isinstance(lr, numbers.Real) or lr <= 0 or \
            usual / 10 <= float(lr) <= usual * 10:  # 10×: a common hand-tuned step (AdamW at 1e-2) is not flagged
        return None
    owners: dict[float, list[str]] = {}
    for i in infos():
        if i.default_lr is not None and i.name != info.name:
            owners.setdefault(float(i.default_lr), []).append(i.name)
    whose = {v: f"the default of {', '.join(n[:3])}{', …' if len(n) > 3 else ''}" for v, n in owners.items()}
    whose.update({float(v): k for v, k in (tuned or {}).items()})
    said = whose.get(float(lr))
    if said is None:
        return None
    return (f"lr = {float(lr):g} is {said}; {info.name}'s usual lr is {usual:g} "
            "— `thalweg lr-find` with this config measures one for this run")


def create(name: str, params: Iterable[Any] | torch.nn.Module, **hparams: Any) -> torch.optim.Optimizer:
    """Build optimizer `name` (or an alias, with its preset values under the user's) over
    `params`, or a model: its parameters, or the model itself for optimizers that need it or
    use the parameters' names (`needs_model`, `accepts_named`)."""
    info = get(name)
    hparams = {**preset(name), **hparams}
    validate_hparams(name, hparams)
    if info.needs_model:
        if not isinstance(params, torch.nn.Module):
            raise TypeError(f"optimizer {info.name!r} needs the model, not a parameter list")
        return info.factory(params, **hparams)
    if isinstance(params, torch.nn.Module) and not info.accepts_named:
        params = params.parameters()
    return info.factory(params, **hparams)
