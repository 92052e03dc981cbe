"""Config sections → the objects a run needs: data, model, initialization, optimizer,
schedule and the loss for the task. :func:`thalweg.train.build_run` puts them together; it is
the only caller, so the trainer, `load_run`, the LR finder and the bench build the same run.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from thalweg.losses import TaskLoss
from thalweg.train.config import ConfigError, RunConfig, quoted_number

__all__ = [
    "LossFn",
    "build_model",
    "build_optimizer",
    "build_schedule",
    "evaluate",
    "initialize",
    "prepare_data",
    "task_losses",
]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


_MAX_DATA_NUMBER = 10**8  # data is generated and held in memory: sizes beyond this cannot be


def check_data_options(cfg: RunConfig) -> None:
    """The numeric `[data] options` by the loader's own signature, with the config's rules:
    a number, not a string; finite; at most 10**8 (so `num_samples = 10**12` is refused, not
    generated)."""
    from thalweg.data import files
    from thalweg.data.datasets import DATASETS

    d = cfg.data
    loader = {"csv": files.load_csv, "npz": files.load_npz}.get(d.name) or DATASETS.get(d.name)
    if loader is None:
        return
    hints = typing.get_type_hints(loader)
    for key, value in d.options.items():
        kinds = set(typing.get_args(hints.get(key))) or {hints.get(key)}
        if not kinds & {int, float}:
            continue
        if quoted_number(value):
            problem = f"a number in quotes; write a number: {key} = {value.strip()}"
        elif isinstance(value, bool) or not isinstance(value, int | float) or \
                (float not in kinds and isinstance(value, float)):
            problem = "expected " + ("a number" if float in kinds else "an integer")
        elif not math.isfinite(value):
            problem = "expected a finite number"
        elif abs(value) > _MAX_DATA_NUMBER:
            problem = f"must be at most {_MAX_DATA_NUMBER:,} (the data is made and held in memory)"
        else:
            continue
        raise ConfigError("data.options", key, value, problem)


def prepare_data(cfg: RunConfig) -> tuple[Any, tuple[torch.Tensor, torch.Tensor] | None]:
    """Load the dataset named in [data] and standardize it with train-split statistics;
    returns (splits, (mean, std) or None)."""
    from thalweg.data import load_dataset, standardize

    check_data_options(cfg)
    d = cfg.data
    try:
        splits = load_dataset(d.name, seed=d.seed, **d.options)
    except (TypeError, ValueError, FileNotFoundError, KeyError) as e:
        bad_name = isinstance(e, ValueError | KeyError) and d.name.lower() in str(e).lower()
        if bad_name and not d.options:
            raise ConfigError("data", "name", d.name, str(e)) from None
        raise ConfigError("data", "options", d.options, f"{type(e).__name__}: {e}") from None
    stats = None
    if d.standardize:
        splits, stats = standardize(splits)
        bad = ~torch.isfinite(splits.x_train).reshape(len(splits.x_train), -1).all(dim=0)
        if bool(bad.any()):
            col = int(bad.nonzero()[0])
            name = splits.feature_names[col] if splits.feature_names else f"column {col}"
            raise ConfigError("data", "standardize", True,
                              f"standardizing {d.name!r} overflowed float32 in feature {name!r} "
                              "(its values are too large to square); rescale the data or set "
                              "standardize = false")
    return splits, stats


def build_model(cfg: RunConfig, splits: Any) -> nn.Module:
    """The [model] section as a module sized for the data."""
    from thalweg import models

    m = cfg.model
    try:
        return models.build_model(m.name, tuple(splits.in_shape), splits.out_features, **m.kwargs())
    except (TypeError, ValueError) as e:
        named = str(e).split(";")[0]  # "model 'mlp' got unknown argument(s) ['kernel_size']; ..."
        field = next((k for k in m.kwargs() if f"'{k}'" in named), None)
        field = field or next((k for k in m.kwargs() if k in named), "name")
        raise ConfigError("model", field, getattr(m, field), str(e)) from None


def initialize(model: nn.Module, cfg: RunConfig, splits: Any) -> None:
    """The [init] rule via `thalweg.init` (gains follow the model's activation)."""
    from thalweg.init import freeze
    from thalweg.init import initialize as init_model

    c = cfg.init
    rule = c.rule
    act = cfg.model.activation or "relu"
    # Glorot's and orthogonal's classic forms have gain 1; Kaiming's follows the activation
    nonlin = act if rule.startswith("kaiming") and act in ("relu", "tanh", "sigmoid") else None
    try:
        init_model(model, rule, nonlin, x_batch=splits.x_train[:512] if rule == "lsuv" else None,
                   std=c.std, value=c.value, bias=c.bias)
    except ValueError as e:
        raise ConfigError("init", "rule", rule, str(e)) from None
    try:
        freeze(model, c.freeze)
    except ValueError as e:
        raise ConfigError("init", "freeze", c.freeze, str(e)) from None


def build_optimizer(cfg: RunConfig, model: nn.Module, process_group: Any = None) -> tuple[torch.optim.Optimizer, Any]:
    """The [optimizer] section through the registry; returns (optimizer, its registry info).
    `process_group`: DDP's replicas, over which a rule that can (Muon, Shampoo, SOAP,
    Adafactor) splits its matrix work, one owner rank per matrix."""
    from thalweg.optim import registry

    o = cfg.optimizer
    info = registry.get(o.name)
    hp = o.hyperparameters()
    if "betas" in hp:
        hp["betas"] = tuple(hp["betas"])
    if process_group is not None and "process_group" in info.options:
        hp["process_group"] = process_group
    try:
        # the model itself where the rule needs it (K-FAC) or splits parameters by name (Muon)
        opt = registry.create(o.name, model if info.needs_model or info.accepts_named else model.parameters(), **hp,
                              **o.memory_options())
    except (TypeError, ValueError) as e:
        field = next((k for k in hp if k in str(e)), "name")
        raise ConfigError("optimizer", field, hp.get(field, o.name), str(e)) from None
    return opt, info


def _base_lr(cfg: RunConfig) -> float:
    from thalweg.optim import registry

    hp = cfg.optimizer.hyperparameters()
    if "lr" in hp:
        return float(hp["lr"])
    return float(registry.get(cfg.optimizer.name).defaults().get("lr", 1.0))


def build_schedule(cfg: RunConfig, total_steps: int, steps_per_epoch: int) -> Callable[[int], float]:
    """The [schedule] section as a pure function step -> lr, peaking at the optimizer's lr."""
    from thalweg import schedules as S

    s, lr = cfg.schedule, _base_lr(cfg)
    end = lr * s.final_factor
    total = max(1, total_steps)
    if s.name == "constant":
        return S.constant(lr)
    if s.name == "cosine":
        return S.cosine(lr, total, end)
    if s.name == "warmup_cosine":
        warm = round(s.warmup_fraction * total)
        decay = S.cosine(lr, max(1, total - warm), end)
        return S.warmup(decay, warm) if warm else decay
    if s.name == "step":
        return S.step_decay(lr, s.step_epochs * steps_per_epoch, s.gamma)
    if s.final_factor <= 0.0:
        raise ConfigError("schedule", "final_factor", s.final_factor,
                          f"the {s.name} schedule never reaches 0; use a value in (0, 1]")
    if s.name == "exponential":  # lr·e^(−kt) reaches lr·final_factor at the last step
        return S.exponential(lr, -math.log(s.final_factor) / total)
    # polynomial lr·(βt + 1)^(−α), α = power, β chosen to reach lr·final_factor at the end
    return S.polynomial(lr, (s.final_factor ** (-1.0 / s.power) - 1.0) / total, s.power)


def task_losses(cfg: RunConfig, task: str) -> tuple[TaskLoss, TaskLoss]:
    """(training objective, plain evaluation loss) for the task (:class:`thalweg.losses.TaskLoss`):
    label smoothing only trains."""
    eps = cfg.regularization.label_smoothing if task == "classification" else 0.0
    return TaskLoss(task, eps), TaskLoss(task)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn, classify: bool,
             batch_size: int = 1024) -> dict[str, float]:
    """Mean loss (and accuracy for classification) over (x, y) in eval mode, in batches."""
    was = model.training
    model.eval()
    loss = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.float64, device=x.device)
    for i in range(0, len(x), batch_size):
        out = model(x[i : i + batch_size])
        loss += loss_fn(out, y[i : i + batch_size]).sum()
        if classify:
            correct += (out.argmax(dim=1) == y[i : i + batch_size]).sum()
    model.train(was)
    res = {"loss": loss.item() / len(x)}
    if classify:
        res["accuracy"] = correct.item() / len(x)
    return res
