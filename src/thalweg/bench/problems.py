"""What a workload is (:class:`Workload`: model + data + loss + target + budgets; a seeded
:class:`Problem`), and the built-in workloads: the seeds' problems (Rosenbrock, the ill-conditioned quadratic,
seed 004's linear regression, a deep linear network), logistic regression on digits, and
MNIST-1D on the paper's protocol (MLP and 1-D CNN).

The seeds' problems are full-batch and exactly solvable, so their metric is the excess
objective f − f* (f* in float64); their targets never go below the workload's `tolerance`.
The others are `thalweg train` configs, so a tuned configuration is a runnable recipe.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
from torch import nn

__all__ = ["BUILTIN", "PointModel", "Problem", "Workload", "WorkloadError", "config_workload", "mnist1d_config",
           "workload_key"]


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
            "eval_every": self.eval_every, "params": dict(self.params),
            "description": self.description,
        }  # fmt: skip


def workload_key(name: str, params: Mapping[str, Any]) -> str:
    """`name` or `name(k=v, ...)` with sorted keys: how results name a workload."""
    if not params:
        return name
    return f"{name}({', '.join(f'{k}={params[k]!r}' for k in sorted(params))})"


#: the built-in workloads by name (:mod:`thalweg.bench.workloads` starts its registry with them)
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


def _doc(f: Callable[..., Any]) -> str:
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
                    description=_doc(rosenbrock))  # fmt: skip


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
                    max_seconds=60.0, tolerance=1e-6, weight_decay=False,
                    description=f"least squares on 512 points in R^{dim}, Hessian condition {condition_number:g}")  # fmt: skip


@builtin("linreg")
def linreg() -> Workload:
    """Seed 004's linear regression: X = [1, 2, 3, 4, 5], Y = [2, 3, 5, 7, 11] (f* = 0.56)."""
    from thalweg.data import load_dataset

    splits = load_dataset("linreg_toy")

    def build(seed: int) -> Problem:
        return _regression(splits, _seeded(lambda: nn.Linear(1, 1), seed), bias=True)

    return Workload("linreg", build, metric="excess_loss", mode="min", step_budget=1000,
                    max_seconds=60.0, tolerance=1e-6, weight_decay=False, description=_doc(linreg))  # fmt: skip


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
                    max_seconds=60.0, tolerance=1e-6, weight_decay=False,
                    description=f"{depth}-layer linear net, width {width}, on least squares in R^{dim}")  # fmt: skip


# ----------------------------------------------------------------- config-defined workloads
_SPLITS: dict[str, Any] = {}


def _run_parts(cfg: Any) -> Any:
    """The trainer's own `build_run` parts of a `thalweg train` config (data standardized with
    train statistics; the [init] rule applied), with one copy of the data per worker process."""
    from thalweg.train import build_run
    from thalweg.train.components import prepare_data

    key = json.dumps(cfg.data.model_dump(mode="json"), sort_keys=True)
    if key not in _SPLITS:
        _SPLITS[key] = prepare_data(cfg)
    return build_run(cfg, device="cpu", optimizer=False, check_budget=False, data=_SPLITS[key])


def _config_problem(cfg: Any, seed: int) -> Problem:
    from thalweg.data import Loader
    from thalweg.train.components import evaluate

    r = cfg.regularization
    if r.mixup_alpha or r.l1 or r.l2:
        raise ValueError("bench config workloads support label smoothing and clipping, not mixup/l1/l2")
    parts = _run_parts(cfg.model_copy(update={"train": cfg.train.model_copy(update={"seed": seed})}))
    model, splits, train_loss, eval_loss = parts.model, parts.splits, parts.loss_fn, parts.eval_loss_fn
    classify = parts.classify
    loader = Loader(splits.x_train, splits.y_train, cfg.train.batch_size, shuffle=True, seed=seed)

    def batches() -> Iterator[Any]:
        while True:
            yield from loader

    def loss(batch: Any) -> torch.Tensor:
        xb, yb = batch
        return train_loss(model(xb), yb)

    def on(x: torch.Tensor, y: torch.Tensor, prefix: str) -> dict[str, float]:
        m = evaluate(model, x, y, eval_loss.per_sample, classify, cfg.train.eval_batch_size)
        return {f"{prefix}_{k}": v for k, v in m.items()}

    return Problem(model=model, loss=loss, batches=batches(),
                   evaluate=lambda: on(splits.x_val, splits.y_val, "val"),
                   steps_per_epoch=len(loader), clip_norm=r.clip_norm, clip_value=r.clip_value,
                   test=lambda: on(splits.x_test, splits.y_test, "test"))  # fmt: skip


def config_workload(name: str, config: dict[str, Any], *, metric: str, mode: str, step_budget: int,
                    max_seconds: float, eval_every: int, description: str = "") -> Workload:  # fmt: skip
    """A workload defined by a `thalweg train` config (its optimizer/schedule are the bench's)."""
    from thalweg.train import parse_config

    cfg = parse_config(copy.deepcopy(config))
    return Workload(name, lambda seed: _config_problem(cfg, seed), metric=metric, mode=mode,  # type: ignore[arg-type]
                    step_budget=step_budget, max_seconds=max_seconds, eval_every=eval_every,
                    description=description, config=cfg)  # fmt: skip


@builtin("digits_logreg")
def digits_logreg(batch_size: int = 128) -> Workload:
    """Logistic (softmax) regression on scikit-learn's 8×8 digits; metric: validation loss."""
    cfg = {"name": "digits-logreg", "data": {"name": "digits"}, "model": {"name": "linear"},
           "regularization": {"early_stopping": {"enabled": False}},
           "train": {"batch_size": batch_size, "num_threads": 1}}  # fmt: skip
    return config_workload("digits_logreg", cfg, metric="val_loss", mode="min", step_budget=500,
                           max_seconds=60.0, eval_every=20, description=_doc(digits_logreg))


def mnist1d_config(model: dict[str, Any], name: str) -> dict[str, Any]:
    """MNIST-1D on the paper's protocol: the generator's defaults (5000 samples, seed 42) →
    4000 train (400 of them held out for validation) / 1000 test; batches of 100 as the paper."""
    return {
        "name": name,
        "data": {"name": "mnist1d", "seed": 42, "options": {"num_samples": 5000}},
        "model": model,
        "init": {"rule": "kaiming_uniform"},
        "regularization": {"early_stopping": {"enabled": False}},
        "train": {"batch_size": 100, "num_threads": 1},
    }


@builtin("mnist1d_mlp")
def mnist1d_mlp(width: int = 100, depth: int = 2) -> Workload:
    """MNIST-1D (paper protocol), the paper's MLP (2 hidden layers of 100); metric: val accuracy."""
    cfg = mnist1d_config({"name": "mlp", "width": width, "depth": depth}, "mnist1d-mlp")
    return config_workload("mnist1d_mlp", cfg, metric="val_accuracy", mode="max", step_budget=2000,
                           max_seconds=120.0, eval_every=40, description=_doc(mnist1d_mlp))


@builtin("mnist1d_cnn")
def mnist1d_cnn(channels: int = 25, depth: int = 3) -> Workload:
    """MNIST-1D (paper protocol), the paper's CNN (3 stride-2 convolutions of 25 channels);
    metric: validation accuracy."""
    cfg = mnist1d_config({"name": "cnn1d", "channels": channels, "depth": depth, "kernel_size": 5},
                         "mnist1d-cnn")
    return config_workload("mnist1d_cnn", cfg, metric="val_accuracy", mode="max", step_budget=6000,
                           max_seconds=600.0, eval_every=100, description=_doc(mnist1d_cnn))
