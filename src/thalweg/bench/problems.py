"""The built-in workloads. Toy problems (the seeds' Rosenbrock, ill-conditioned quadratic,
linear regression and deep linear network: full batch, exactly solvable) teach and make
pictures; they are scored apart. Real workloads (`group = "real"`) make the headline score:
MNIST-1D's CNN and GRU on the paper's train/test protocol with 2000 extra validation samples,
a CNN on digits, the character transformer (:mod:`thalweg.bench.charlm`); and logistic
regression on digits and MNIST-1D's MLP (used by the recipe search).

The toy problems' metric is the excess objective f − f* (f* in float64); their targets never go
below the workload's `tolerance`. The others are `thalweg train` configs, so a tuned
configuration is a runnable recipe.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from thalweg.bench.workloads import Problem, Workload, register

__all__ = ["PointModel", "config_workload", "mnist1d_config", "unsupported"]


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


@register("rosenbrock")
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
                    group="toy", description=_doc(rosenbrock))  # fmt: skip


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


@register("quadratic")
def quadratic(condition_number: float = 100.0, dim: int = 20) -> Workload:
    """The ill-conditioned quadratic: least squares whose Hessian has condition number κ."""
    from thalweg.data import load_dataset

    splits = load_dataset("ill_conditioned", seed=0, condition_number=condition_number, dim=dim)

    def build(seed: int) -> Problem:
        return _regression(splits, _seeded(lambda: nn.Linear(dim, 1), seed), bias=True)

    return Workload("quadratic", build, metric="excess_loss", mode="min", step_budget=800,
                    max_seconds=60.0, tolerance=1e-6, weight_decay=False, group="toy",
                    description=f"least squares on 512 points in R^{dim}, Hessian condition {condition_number:g}")  # fmt: skip


@register("linreg")
def linreg() -> Workload:
    """Seed 004's linear regression: X = [1, 2, 3, 4, 5], Y = [2, 3, 5, 7, 11] (f* = 0.56)."""
    from thalweg.data import load_dataset

    splits = load_dataset("linreg_toy")

    def build(seed: int) -> Problem:
        return _regression(splits, _seeded(lambda: nn.Linear(1, 1), seed), bias=True)

    return Workload("linreg", build, metric="excess_loss", mode="min", step_budget=1000,
                    max_seconds=60.0, tolerance=1e-6, weight_decay=False, group="toy",
                    description=_doc(linreg))  # fmt: skip


@register("deep_linear")
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


def unsupported(cfg: Any) -> list[str]:
    """The fields of a `thalweg train` config the bench cannot run as asked (its loop trains
    the plain loss with label smoothing and clipping; no mixup, no explicit penalties)."""
    r = cfg.regularization
    return [f"regularization.{k} = {getattr(r, k)!r}" for k in ("mixup_alpha", "l1", "l2") if getattr(r, k)]


def _config_problem(cfg: Any, seed: int) -> Problem:
    from thalweg.data import Loader
    from thalweg.train.components import evaluate

    r = cfg.regularization
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


def config_workload(name: str, config: dict[str, Any] | Any, *, metric: str, mode: str, step_budget: int,
                    max_seconds: float, eval_every: int, description: str = "") -> Workload:  # fmt: skip
    """A workload defined by a `thalweg train` config (a dict or a parsed config; its optimizer
    and schedule are the bench's). A config the bench cannot run is refused here, before any
    trial: a ValueError naming the fields."""
    from thalweg.train import parse_config

    cfg = config if not isinstance(config, dict) else parse_config(copy.deepcopy(config))
    bad = unsupported(cfg)
    if bad:
        raise ValueError(f"the bench cannot run {', '.join(bad)} (it supports label smoothing and "
                         "clipping, not mixup or l1/l2 penalties): set them to 0")
    return Workload(name, lambda seed: _config_problem(cfg, seed), metric=metric, mode=mode,  # type: ignore[arg-type]
                    step_budget=step_budget, max_seconds=max_seconds, eval_every=eval_every,
                    description=description, config=cfg)  # fmt: skip


def _classifier(name: str, data: dict[str, Any], model: dict[str, Any], batch_size: int,
                init: str = "default") -> dict[str, Any]:  # fmt: skip
    return {"name": name, "data": data, "model": model, "init": {"rule": init},
            "regularization": {"early_stopping": {"enabled": False}},
            "train": {"batch_size": batch_size, "num_threads": 1}}  # fmt: skip


#: digits: 1000 of the 1797 images validate (a validation set of ≥ 1000), 180 test, 617 train
DIGITS_SPLIT = {"val_fraction": 0.5565, "test_fraction": 0.1}


@register("digits_logreg")
def digits_logreg(batch_size: int = 128) -> Workload:
    """Logistic (softmax) regression on scikit-learn's 8×8 digits; metric: validation loss."""
    cfg = _classifier("digits-logreg", {"name": "digits"}, {"name": "linear"}, batch_size)
    return config_workload("digits_logreg", cfg, metric="val_loss", mode="min", step_budget=500,
                           max_seconds=60.0, eval_every=20, description=_doc(digits_logreg))


@register("digits_cnn")
def digits_cnn(channels: int = 32, depth: int = 2, batch_size: int = 64) -> Workload:
    """A 2-D CNN (2 stride-2 3×3 convolutions of 32 channels) on scikit-learn's 8×8 digits,
    617 train / 1000 validation / 180 test images; metric: validation loss."""
    cfg = _classifier("digits-cnn", {"name": "digits", "options": DIGITS_SPLIT},
                      {"name": "cnn2d", "channels": channels, "depth": depth, "kernel_size": 3}, batch_size)
    return config_workload("digits_cnn", cfg, metric="val_loss", mode="min", step_budget=STEPS["digits_cnn"],
                           max_seconds=120.0, eval_every=EVERY["digits_cnn"], description=_doc(digits_cnn))


def mnist1d_config(model: dict[str, Any], name: str, val_samples: int = 2000) -> dict[str, Any]:
    """MNIST-1D on the paper's protocol: the generator's defaults (5000 samples, seed 42) →
    4000 train / 1000 test, batches of 100 as the paper; validation on `val_samples` extra
    samples from the generator (another seed), or with 0 on 400 of the 4000 held out."""
    options = {"num_samples": 5000, **({"val_samples": val_samples} if val_samples else {})}
    return _classifier(name, {"name": "mnist1d", "seed": 42, "options": options}, model, 100,
                       init="kaiming_uniform" if model["name"] != "gru" else "default")


@register("mnist1d_mlp")
def mnist1d_mlp(width: int = 100, depth: int = 2) -> Workload:
    """MNIST-1D (paper protocol, 2000 extra validation samples), the paper's MLP (2 hidden
    layers of 100); metric: validation accuracy."""
    cfg = mnist1d_config({"name": "mlp", "width": width, "depth": depth}, "mnist1d-mlp")
    return config_workload("mnist1d_mlp", cfg, metric="val_accuracy", mode="max", step_budget=2000,
                           max_seconds=120.0, eval_every=40, description=_doc(mnist1d_mlp))


@register("mnist1d_cnn")
def mnist1d_cnn(channels: int = 25, depth: int = 3) -> Workload:
    """MNIST-1D (paper protocol, 2000 extra validation samples), the paper's CNN (3 stride-2
    convolutions of 25 channels); metric: validation accuracy."""
    cfg = mnist1d_config({"name": "cnn1d", "channels": channels, "depth": depth, "kernel_size": 5},
                         "mnist1d-cnn")
    return config_workload("mnist1d_cnn", cfg, metric="val_accuracy", mode="max",
                           step_budget=STEPS["mnist1d_cnn"], max_seconds=300.0,
                           eval_every=EVERY["mnist1d_cnn"], description=_doc(mnist1d_cnn))


@register("mnist1d_gru")
def mnist1d_gru(width: int = 6) -> Workload:
    """MNIST-1D (paper protocol, 2000 extra validation samples), the paper's GRU (bidirectional,
    6 hidden units, every step's output into a linear classifier); metric: validation accuracy."""
    cfg = mnist1d_config({"name": "gru", "width": width}, "mnist1d-gru")
    return config_workload("mnist1d_gru", cfg, metric="val_accuracy", mode="max",
                           step_budget=STEPS["mnist1d_gru"], max_seconds=300.0,
                           eval_every=EVERY["mnist1d_gru"], description=_doc(mnist1d_gru))


#: step budgets and evaluation intervals of the real workloads (docs/bench.md: why these)
STEPS = {"digits_cnn": 200, "mnist1d_cnn": 800, "mnist1d_gru": 400}
EVERY = {"digits_cnn": 10, "mnist1d_cnn": 40, "mnist1d_gru": 20}
