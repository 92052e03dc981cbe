"""What a workload is (:class:`Workload`: model + data + loss + target + budgets + group; a
seeded :class:`Problem`), and the toy problems: the seeds' Rosenbrock, ill-conditioned
quadratic, linear regression and deep linear network — full batch, exactly solvable, scored
apart from the real workloads (they teach and make pictures). Their metric is the excess
objective f − f* (f* in float64); their targets never go below the workload's `tolerance`.

The real workloads are in :mod:`thalweg.bench.tasks.configs` (`thalweg train` configs: digits and
MNIST-1D) and :mod:`thalweg.bench.tasks.charlm` (the character transformer).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
from torch import nn

__all__ = ["BUILTIN", "PointModel", "Problem", "Workload", "WorkloadError", "builtin", "doc", "workload_key"]


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


def workload_key(name: str, params: Mapping[str, Any]) -> str:
    """`name` or `name(k=v, ...)` with sorted keys: how results name a workload."""
    if not params:
        return name
    return f"{name}({', '.join(f'{k}={params[k]!r}' for k in sorted(params))})"


#: the built-in workloads by name (:mod:`thalweg.bench.tasks.workloads` starts its registry with them)
BUILTIN: dict[str, Callable[..., Workload]] = {}


def builtin(name: str) -> Callable[[Callable[..., Workload]], Callable[..., Workload]]:
    """Decorator: a built-in workload factory under `name`."""

    def deco(factory: Callable[..., Workload]) -> Callable[..., Workload]:
        BUILTIN[name] = factory
        return factory

    return deco


class PointModel(nn.Module):
    """A point x ∈ R^d as a model: `forward()` returns f(x) (the seeds' 2-D functions)."""

    def __init__(self, f: Callable[[torch.Tensor], torch.Tensor], start: tuple[float, ...]) -> None:
        super().__init__()
        self.f = f
        self.x = nn.Parameter(torch.tensor(start, dtype=torch.float32))

    def forward(self) -> torch.Tensor:
        return self.f(self.x)


def _full_batch(model: nn.Module, loss: Callable[[Any], torch.Tensor], f_star: float) -> Problem:
    """A deterministic full-batch problem whose metric is the excess objective f − f*."""

    @torch.no_grad()
    def evaluate() -> dict[str, float]:
        value = float(loss(None))
        return {"excess_loss": value - f_star, "loss": value}

    return Problem(model=model, loss=loss, batches=itertools.repeat(None), evaluate=evaluate)


def doc(f: Callable[..., Any]) -> str:
    """The first paragraph of a docstring on one line (the workload's description)."""
    return " ".join((f.__doc__ or "").split("\n\n")[0].split())


def _seeded(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build()


@builtin("rosenbrock")
def rosenbrock(start: tuple[float, float] = (-1.5, 2.0)) -> Workload:
    """Rosenbrock's banana valley from (−1.5, 2): easy to enter, slow to follow to (1, 1)."""
    from thalweg.landscape import functions

    fn = functions.get("rosenbrock")
    start = tuple(float(s) for s in start)
    if len(start) != 2:
        raise ValueError(f"start must be a 2-D point, got {start}")

    def build(seed: int) -> Problem:
        model = PointModel(fn.f, start)
        return _full_batch(model, lambda _b: model(), 0.0)

    return Workload("rosenbrock", build, metric="excess_loss", mode="min", step_budget=1500,
                    max_seconds=60.0, eval_every=1, tolerance=1e-6, weight_decay=False,
                    group="toy", description=doc(rosenbrock))  # fmt: skip


def _least_squares(x: torch.Tensor, y: torch.Tensor, bias: bool) -> float:
    """Minimum of the mean squared error of a linear map (float64)."""
    a = x.double()
    if bias:
        a = torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype)], dim=1)
    sol = torch.linalg.lstsq(a, y.double()).solution
    return float(((a @ sol - y.double()) ** 2).mean())


def _regression(splits: Any, model: nn.Module, bias: bool) -> Problem:
    x, y = splits.x_train, splits.y_train

    def loss(_batch: Any) -> torch.Tensor:
        return ((model(x) - y) ** 2).mean()

    return _full_batch(model, loss, _least_squares(x, y, bias))


@builtin("quadratic")
def quadratic(condition_number: float = 100.0, dim: int = 20) -> Workload:
    """The ill-conditioned quadratic: least squares whose Hessian has condition number κ."""
    from thalweg.data import load_dataset

    splits = load_dataset("ill_conditioned", seed=0, condition_number=condition_number, dim=dim)

    def build(seed: int) -> Problem:
        return _regression(splits, _seeded(lambda: nn.Linear(dim, 1), seed), bias=True)

    return Workload("quadratic", build, metric="excess_loss", mode="min", step_budget=800,
                    max_seconds=60.0, tolerance=1e-6, weight_decay=False, group="toy",
                    description=f"least squares on 512 points in R^{dim}, Hessian condition {condition_number:g}")  # fmt: skip


@builtin("linreg")
def linreg() -> Workload:
    """Seed 004's linear regression: X = [1, 2, 3, 4, 5], Y = [2, 3, 5, 7, 11] (f* = 0.56)."""
    from thalweg.data import load_dataset

    splits = load_dataset("linreg_toy")

    def build(seed: int) -> Problem:
        return _regression(splits, _seeded(lambda: nn.Linear(1, 1), seed), bias=True)

    return Workload("linreg", build, metric="excess_loss", mode="min", step_budget=1000,
                    max_seconds=60.0, tolerance=1e-6, weight_decay=False, group="toy",
                    description=doc(linreg))  # fmt: skip


@builtin("deep_linear")
def deep_linear(depth: int = 3, width: int = 16, dim: int = 8) -> Workload:
    """A deep *linear* network (seed 001): hidden layers at least as wide as input and output,
    so every local minimum is global; more than one hidden layer adds saddles."""
    from thalweg.data import load_dataset

    if width < dim:
        raise ValueError(f"width must be >= dim ({dim}) so that every local minimum is global")
    if depth < 2:
        raise ValueError(f"depth must be >= 2 (a linear model is the quadratic), got {depth}")
    splits = load_dataset("ill_conditioned", seed=1, condition_number=10.0, dim=dim, n_train=256)

    def net() -> nn.Module:
        sizes = [dim] + [width] * (depth - 1) + [1]
        return nn.Sequential(*(nn.Linear(a, b, bias=False) for a, b in itertools.pairwise(sizes)))

    def build(seed: int) -> Problem:
        return _regression(splits, _seeded(net, seed), bias=False)

    return Workload("deep_linear", build, metric="excess_loss", mode="min", step_budget=1000,
                    max_seconds=60.0, tolerance=1e-6, weight_decay=False, group="toy",
                    description=f"{depth}-layer linear net, width {width}, on least squares in R^{dim}")  # fmt: skip
