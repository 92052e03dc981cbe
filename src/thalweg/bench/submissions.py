"""Submissions: a registry optimizer + a schedule + a search space.

The default space of an optimizer is the bench's reviewed one (:mod:`thalweg.bench.spaces`),
else its registry entry's `search_space` (so a new optimizer joins the bench by registering),
plus the bench's own dimensions: the warm-up fraction of the schedule and, where the rule has
one and its space does not, a log-uniform weight decay. The schedule is the rule's own: linear
warm-up + cosine decay for first-order rules, warm-up then constant for schedule-free ones
(they average instead of decaying), constant for second-order ones.
A space is turned into Optuna distributions; a sampled point back into optimizer
hyperparameters, a schedule section and (for config workloads) config overrides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from thalweg.optim import registry
from thalweg.optim.registry import SearchDim

__all__ = [
    "WARMUP",
    "WEIGHT_DECAY",
    "Dim",
    "Submission",
    "SubmissionError",
    "builtin",
    "default_schedule",
    "first_order",
    "schedule_free",
    "second_order",
]

Where = Literal["optimizer", "schedule", "config"]


class SubmissionError(ValueError):
    """A bad submission: unknown optimizer, hyperparameter or search dimension."""


@dataclass(frozen=True)
class Dim:
    """One search dimension placed in the optimizer's hyperparameters, the [schedule] section,
    or (dotted name, e.g. ``model.dropout``) the workload's `thalweg train` config."""

    dim: SearchDim
    where: Where = "optimizer"

    @property
    def param(self) -> str:
        """The Optuna parameter name: ``lr``, ``1-betas[0]``, ``schedule.warmup_fraction``."""
        d = self.dim
        name = d.name if self.where == "optimizer" else f"{self.where}.{d.name}"
        if d.index is not None:
            name += f"[{d.index}]"
        return f"1-{name}" if d.one_minus else name

    def distribution(self) -> Any:
        """The Optuna distribution of the sampled quantity (1 − value under `one_minus`)."""
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        d = self.dim
        if d.kind == "choice":
            return CategoricalDistribution(d.choices)
        if d.low is None or d.high is None or not d.low < d.high or (d.log and d.low <= 0):
            raise SubmissionError(f"search dimension {self.param!r}: need 0 < low < high for log, "
                                  f"low < high otherwise; got low={d.low}, high={d.high}")
        if d.kind == "int":
            return IntDistribution(int(d.low), int(d.high), log=d.log)
        return FloatDistribution(float(d.low), float(d.high), log=d.log)

    def value(self, sampled: Any) -> Any:
        """The hyperparameter value of a sampled quantity."""
        if self.dim.one_minus:
            sampled = 1.0 - sampled
        return int(sampled) if self.dim.kind == "int" else sampled

    def to_dict(self) -> dict[str, Any]:
        return {**self.dim.to_dict(), "where": self.where, "param": self.param}


WARMUP = Dim(SearchDim("warmup_fraction", 0.0, 0.2), "schedule")
WEIGHT_DECAY = SearchDim("weight_decay", 1e-6, 1e-1, log=True)


def schedule_free(optimizer: str) -> bool:
    """Whether the rule averages its iterates instead of needing a decay (it has train/eval modes)."""
    from thalweg.optim import has_modes

    return has_modes(registry.get(optimizer).factory)


def default_schedule(optimizer: str) -> dict[str, Any]:
    """Linear warm-up + cosine decay to 1 % for first-order rules; warm-up then constant for
    schedule-free ones (a cosine to a final factor of 1); constant for second-order ones
    (their line searches and damping set the step)."""
    if registry.get(optimizer).order == "second":
        return {"name": "constant"}
    final = 1.0 if schedule_free(optimizer) else 0.01
    return {"name": "warmup_cosine", "warmup_fraction": 0.05, "final_factor": final}


def _default_space(info: registry.OptimizerInfo, schedule: Mapping[str, Any]) -> tuple[Dim, ...]:
    from thalweg.bench.spaces import SPACES

    space = SPACES.get(info.name, info.search_space)
    dims = [Dim(d) for d in space]
    has_wd = any(h.name == "weight_decay" for h in info.hyperparameters)
    if has_wd and not any(d.name == "weight_decay" for d in space):
        dims.append(Dim(WEIGHT_DECAY))
    if schedule.get("name") == "warmup_cosine":
        dims.append(WARMUP)
    return tuple(dims)


@dataclass(frozen=True)
class Submission:
    """An optimizer with fixed hyperparameters, a schedule and a search space."""

    name: str
    optimizer: str
    fixed: Mapping[str, Any] = field(default_factory=dict)
    space: tuple[Dim, ...] | None = None
    schedule: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        from thalweg.bench.spaces import FIXED

        try:
            info = registry.get(self.optimizer)
        except ValueError as e:
            raise SubmissionError(f"submission {self.name!r}: {e}") from None
        # the values the bench always sets for this rule (its paper's), under the given ones
        object.__setattr__(self, "fixed", {**FIXED.get(info.name, {}), **self.fixed})
        try:
            registry.validate_hparams(info.name, self.fixed)
        except ValueError as e:
            raise SubmissionError(f"submission {self.name!r}: {e}") from None
        known = {h.name for h in info.hyperparameters}
        for d in self.space or ():
            if d.where == "optimizer" and d.dim.name not in known:
                raise SubmissionError(
                    f"submission {self.name!r}: {info.name} has no hyperparameter {d.dim.name!r} "
                    f"to search; it takes: {', '.join(sorted(known))}"
                )
        seen = [d.param for d in self.dims()]
        if len(seen) != len(set(seen)):
            raise SubmissionError(f"submission {self.name!r}: a search dimension appears twice")

    @property
    def info(self) -> registry.OptimizerInfo:
        return registry.get(self.optimizer)

    def schedule_section(self) -> dict[str, Any]:
        return dict(self.schedule) if self.schedule is not None else default_schedule(self.optimizer)

    def dims(self) -> tuple[Dim, ...]:
        """The search space: given, or the registry's default plus the bench's dimensions."""
        if self.space is not None:
            return self.space
        return _default_space(self.info, self.schedule_section())

    def distributions(self) -> dict[str, Any]:
        return {d.param: d.distribution() for d in self.dims()}

    def defaults(self) -> dict[str, Any]:
        """The trial configuration with every searched value at its default (self-tuning)."""
        return self.configure({})

    def configure(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """A sampled point (Optuna params) → {optimizer: {...}, schedule: {...}, overrides: {...}}.

        Dimensions missing from `params` keep their defaults."""
        hp: dict[str, Any] = dict(self.fixed)
        sched = self.schedule_section()
        over: dict[str, Any] = {}
        info = self.info
        for d in self.dims():
            if d.param not in params:
                continue
            v = d.value(params[d.param])
            into = {"optimizer": hp, "schedule": sched, "config": over}[d.where]
            name, index = d.dim.name, d.dim.index
            if index is not None:
                base = into.get(name)
                if base is None and d.where == "optimizer":
                    base = info.hyperparameter(name).default
                if base is None:
                    raise SubmissionError(f"search dimension {d.param!r} indexes an unset value")
                items = list(base)
                items[index] = v
                v = tuple(items)
            into[name] = v
        return {"optimizer": {"name": info.name, **hp}, "schedule": sched, "overrides": over}

    def sensitivity_dim(self) -> Dim | None:
        """The dimension learning-rate sensitivity sweeps: `lr`, else the first log-float one."""
        dims = [d for d in self.dims() if d.where == "optimizer" and d.dim.kind == "float"]
        for d in dims:
            if d.dim.name == "lr" and not d.dim.one_minus:
                return d
        return next((d for d in dims if d.dim.log), None)

    def describe(self) -> dict[str, Any]:
        """JSON-able summary stored with the study (a resumed bench must match it)."""
        return {"name": self.name, "optimizer": self.info.name, "order": self.info.order,
                "fixed": {k: list(v) if isinstance(v, tuple) else v for k, v in self.fixed.items()},
                "space": [d.to_dict() for d in self.dims()], "schedule": self.schedule_section()}  # fmt: skip


def first_order() -> list[str]:
    """Every registered first-order optimizer (the registry's order, new ones included)."""
    return [i.name for i in registry.infos() if i.order == "first"]


def second_order() -> list[str]:
    """Every registered second-order optimizer."""
    return [i.name for i in registry.infos() if i.order == "second"]


def _sgd_nesterov() -> Submission:
    """SGD with Nesterov momentum (an AlgoPerf target-setting baseline), momentum searched."""
    from thalweg.bench.spaces import SPACES

    return Submission("sgd_nesterov", "sgd", {"nesterov": True, "momentum": 0.9},
                      (*(Dim(d) for d in SPACES["sgd"]), WARMUP))  # fmt: skip


def _nadamw() -> Submission:
    """NAdam with decoupled weight decay: AlgoPerf's NAdamW baseline."""
    return Submission("nadamw", "nadam", {"decoupled_weight_decay": True})


def _adamw_constant() -> Submission:
    """AdamW under warm-up then a constant lr: what gains look like against an undecayed baseline."""
    return Submission("adamw_constant", "adamw", {},
                      schedule={"name": "warmup_cosine", "warmup_fraction": 0.05, "final_factor": 1.0})


BUILTIN: dict[str, Any] = {"sgd_nesterov": _sgd_nesterov, "nadamw": _nadamw, "adamw_constant": _adamw_constant}


def builtin(name: str) -> Submission | None:
    """A built-in named submission (`sgd_nesterov`, `nadamw`, `adamw_constant`), else None."""
    make = BUILTIN.get(name)
    return make() if make is not None else None
