"""The real workloads defined by `thalweg train` configs (so a tuned configuration is a
runnable recipe): a CNN on digits (1000 of the 1797 images validate), MNIST-1D's CNN and GRU
on the paper's train/test protocol with 2000 extra generated validation samples, and the
recipe search's logistic regression on digits and MNIST-1D MLP; :func:`config_workload` makes
one from any config (a user's `my.toml` too), refusing what the bench cannot run.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import torch

from thalweg.bench.tasks.problems import Problem, Workload, builtin, doc

__all__ = ["DIGITS_SPLIT", "config_workload", "mnist1d_config", "unsupported"]

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


@builtin("digits_logreg")
def digits_logreg(batch_size: int = 128) -> Workload:
    """Logistic (softmax) regression on scikit-learn's 8×8 digits, the CNN's split (617 train /
    1000 validation / 180 test); metric: validation loss."""
    cfg = _classifier("digits-logreg", {"name": "digits", "options": DIGITS_SPLIT}, {"name": "linear"}, batch_size)
    return config_workload("digits_logreg", cfg, metric="val_loss", mode="min", step_budget=500,
                           max_seconds=60.0, eval_every=20, description=doc(digits_logreg))


@builtin("digits_cnn")
def digits_cnn(channels: int = 32, depth: int = 2, batch_size: int = 64) -> Workload:
    """A 2-D CNN (2 stride-2 3×3 convolutions of 32 channels) on scikit-learn's 8×8 digits,
    617 train / 1000 validation / 180 test images; metric: validation loss."""
    cfg = _classifier("digits-cnn", {"name": "digits", "options": DIGITS_SPLIT},
                      {"name": "cnn2d", "channels": channels, "depth": depth, "kernel_size": 3}, batch_size)
    return config_workload("digits_cnn", cfg, metric="val_loss", mode="min", step_budget=STEPS["digits_cnn"],
                           max_seconds=60.0, eval_every=EVERY["digits_cnn"], description=doc(digits_cnn))


def mnist1d_config(model: dict[str, Any], name: str, val_samples: int = 2000) -> dict[str, Any]:
    """MNIST-1D on the paper's protocol: the generator's defaults (5000 samples, seed 42) →
    4000 train / 1000 test, batches of 100 as the paper; validation on `val_samples` extra
    samples from the generator (another seed), or with 0 on 400 of the 4000 held out."""
    options = {"num_samples": 5000, **({"val_samples": val_samples} if val_samples else {})}
    return _classifier(name, {"name": "mnist1d", "seed": 42, "options": options}, model, 100,
                       init="kaiming_uniform" if model["name"] != "gru" else "default")


@builtin("mnist1d_mlp")
def mnist1d_mlp(width: int = 100, depth: int = 2) -> Workload:
    """MNIST-1D (paper protocol, 2000 extra validation samples), the paper's MLP (2 hidden
    layers of 100); metric: validation accuracy."""
    cfg = mnist1d_config({"name": "mlp", "width": width, "depth": depth}, "mnist1d-mlp")
    return config_workload("mnist1d_mlp", cfg, metric="val_accuracy", mode="max", step_budget=2000,
                           max_seconds=120.0, eval_every=40, description=doc(mnist1d_mlp))


@builtin("mnist1d_cnn")
def mnist1d_cnn(channels: int = 25, depth: int = 3) -> Workload:
    """MNIST-1D (paper protocol, 2000 extra validation samples), the paper's CNN (3 stride-2
    convolutions of 25 channels); metric: validation accuracy."""
    cfg = mnist1d_config({"name": "cnn1d", "channels": channels, "depth": depth, "kernel_size": 5},
                         "mnist1d-cnn")
    return config_workload("mnist1d_cnn", cfg, metric="val_accuracy", mode="max",
                           step_budget=STEPS["mnist1d_cnn"], max_seconds=300.0,
                           eval_every=EVERY["mnist1d_cnn"], description=doc(mnist1d_cnn))


@builtin("mnist1d_gru")
def mnist1d_gru(width: int = 6) -> Workload:
    """MNIST-1D (paper protocol, 2000 extra validation samples), the paper's GRU (bidirectional,
    6 hidden units, every step's output into a linear classifier); metric: validation accuracy."""
    cfg = mnist1d_config({"name": "gru", "width": width}, "mnist1d-gru")
    return config_workload("mnist1d_gru", cfg, metric="val_accuracy", mode="max",
                           step_budget=STEPS["mnist1d_gru"], max_seconds=300.0,
                           eval_every=EVERY["mnist1d_gru"], description=doc(mnist1d_gru))


#: step budgets and evaluation intervals of the real workloads (docs/bench.md: why these)
STEPS = {"digits_cnn": 100, "mnist1d_cnn": 800, "mnist1d_gru": 400}
EVERY = {"digits_cnn": 5, "mnist1d_cnn": 40, "mnist1d_gru": 20}
