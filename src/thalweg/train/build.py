"""`build_run(config) -> RunParts`: the one place a run is assembled from its config.

The trainer, :func:`thalweg.train.load_run`, `thalweg lr-find`, the doctor's treatments and the
bench all call it, so each sees the same data (standardized with train-split statistics), the
same initialized model, the same loss for the task, optimizer and schedule.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from thalweg.losses import TaskLoss
from thalweg.train.budget import Estimate, check_fits, estimate
from thalweg.train.components import (
    build_model,
    build_optimizer,
    build_schedule,
    initialize,
    prepare_data,
    task_losses,
)
from thalweg.train.config import ConfigError, RunConfig, load_config, lr_notice, parse_config
from thalweg.train.rundir.state import seed_everything

__all__ = ["RunParts", "as_config", "build_run"]


@dataclass
class RunParts:
    """Everything a run is made of, built from its config (see :func:`build_run`)."""

    config: RunConfig
    splits: Any  # thalweg.data.Splits, standardized, on `device`
    model: nn.Module  # initialized by [init] rule, on `device`, in train mode
    loss_fn: TaskLoss  # the training objective (label smoothing included): mean over the batch
    eval_loss_fn: TaskLoss  # the plain loss for the task, as validation and test report it
    optimizer: torch.optim.Optimizer | None  # None when built with `optimizer=False`
    info: Any  # the optimizer's registry entry (needs_closure, needs_model, schema)
    schedule: Any  # step -> lr, peaking at the optimizer's lr
    loader: Any  # thalweg.data.Loader over the training split (this rank's shard)
    steps_per_epoch: int
    total_steps: int
    best_metric: str  # "val_accuracy" | "val_loss" (resolved from "auto")
    device: torch.device
    standardization: tuple[torch.Tensor, torch.Tensor] | None  # (mean, std) of the train split
    estimate: Estimate  # parameters, memory and least time, computed before building
    notes: list[str] = field(default_factory=list)  # what was adapted, for the user (said once)

    @property
    def classify(self) -> bool:
        return self.splits.task == "classification"


def as_config(config: RunConfig | dict[str, Any] | str | Path | None) -> RunConfig:
    """A RunConfig from an object, a dict, a TOML path, or None (the embedded default)."""
    if isinstance(config, RunConfig):
        return config
    if isinstance(config, dict):
        return parse_config(config)
    return load_config(config)


def build_run(config: RunConfig | dict[str, Any] | str | Path | None, *,
              device: str | torch.device | None = None, rank: int = 0, world_size: int = 1,
              optimizer: bool = True, check_budget: bool = True,
              data: tuple[Any, Any] | None = None) -> RunParts:
    """Seed, load and standardize the data, estimate the cost (refusing what cannot fit),
    build and initialize the model, then the optimizer, loader, schedule and losses.

    `device` defaults to `[train] device`; `rank`/`world_size` shard the loader for DDP;
    `optimizer=False` skips the optimizer (K-FAC, for one, hooks into the model); `data` is
    what `prepare_data(config)` returned, reused (the bench keeps one copy per worker).
    """
    from thalweg.data import Loader
    from thalweg.optim import registry
    from thalweg.train.distributed import pick_device

    cfg = as_config(config)
    t = cfg.train
    dev = pick_device(t.device, 0) if device is None else torch.device(device)
    if t.batch_size % world_size:
        raise ConfigError("train", "batch_size", t.batch_size,
                          f"must be divisible by the {world_size} data-parallel processes")
    seed_everything(t.seed)
    splits, stats = prepare_data(cfg) if data is None else data
    classify = splits.task == "classification"
    if classify and (splits.num_classes or 0) < 2:
        names = f" ({', '.join(map(repr, splits.class_names))})" if getattr(splits, "class_names", None) else ""
        raise ConfigError("data", "name", cfg.data.name,
                          f"the labels hold {splits.num_classes or 0} class{names}: there is nothing to classify; "
                          "check the label column ([data] options target) or train a regression (task)")
    bm = t.best_metric
    best_metric = bm if bm != "auto" else ("val_accuracy" if classify else "val_loss")
    if best_metric == "val_accuracy" and not classify:
        raise ConfigError("train", "best_metric", bm, "val_accuracy needs a classification task")
    per_rank = t.batch_size // world_size
    steps_per_epoch = len(Loader(splits.x_train, splits.y_train, per_rank, shuffle=False,
                                 rank=rank, world_size=world_size))
    total_steps = t.epochs * steps_per_epoch
    if check_budget:  # the parameters alone, before anything is allocated
        check_fits(estimate(cfg, splits, dev, total_steps, world_size), cfg, dev)
    splits = splits.to(dev)
    model = build_model(cfg, splits).to(dev)
    initialize(model, cfg, splits)
    drop_last, notes = _single_example_batches(model, len(splits.x_train), per_rank, world_size, t.batch_size)
    notes += _label_notes(cfg, splits)
    if drop_last:
        steps_per_epoch = len(Loader(splits.x_train, splits.y_train, per_rank, shuffle=False,
                                     drop_last=True, rank=rank, world_size=world_size))
        total_steps = t.epochs * steps_per_epoch
    est = estimate(cfg, splits, dev, total_steps, world_size, model=model)
    if check_budget:
        check_fits(est, cfg, dev)
    if optimizer:
        opt, info = build_optimizer(cfg, model)
        if (note := lr_notice(cfg.optimizer)) is not None:
            notes.append(note)
    else:
        opt, info = None, None
        with contextlib.suppress(ValueError):  # a loaded run's optimizer may not be registered
            info = registry.get(cfg.optimizer.name)
    loader = Loader(splits.x_train, splits.y_train, per_rank, shuffle=True, seed=t.seed,
                    drop_last=drop_last, rank=rank, world_size=world_size)
    loss_fn, eval_loss_fn = task_losses(cfg, splits.task)
    return RunParts(
        config=cfg, splits=splits, model=model, loss_fn=loss_fn, eval_loss_fn=eval_loss_fn,
        optimizer=opt, info=info, schedule=build_schedule(cfg, total_steps, steps_per_epoch),
        loader=loader, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
        best_metric=best_metric, device=dev, standardization=stats, estimate=est, notes=notes,
    )


def _label_notes(cfg: RunConfig, splits: Any) -> list[str]:
    """The doctor's label rule (LABEL_PROBLEMS), said before training rather than found after:
    classes with too few examples — 180 classes in a small CSV is often an ID or a continuous
    value read as labels."""
    if splits.task != "classification":
        return []
    from thalweg.diagnose import data_findings, data_statistics

    d = data_statistics(splits.x_train[:1], splits.y_train, splits.x_val[:1], splits.y_val, task=splits.task,
                        num_classes=splits.num_classes, standardized=cfg.data.standardize)
    d = dataclasses.replace(d, num_train=len(splits.y_train))  # the labels' statistics only: no copy of x
    notes = [f"{f.title} — {f.action}" for f in data_findings(d, {}) if f.code == "LABEL_PROBLEMS"]
    if notes and (splits.num_classes or 0) > 20 and d.num_classes * 5 > len(splits.y_train):
        notes.append(f"{splits.num_classes} classes for {len(splits.y_train)} training examples: if the label "
                     "column is an ID or a measured value, train a regression instead ([data] options task)")
    return notes


def _single_example_batches(model: nn.Module, n: int, per_rank: int, world_size: int,
                            batch_size: int) -> tuple[bool, list[str]]:
    """(drop_last, notes): BatchNorm cannot normalize one example in training, so a last batch
    of one is dropped (a different example each epoch, the order being shuffled) and said
    once; batches that are all of one example are refused naming `[train] batch_size`."""
    bn = next((name or type(m).__name__ for name, m in model.named_modules()
               if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training), None)
    n_local = math.ceil(n / world_size)
    if bn is None or (n_local % per_rank != 1 and per_rank > 1):
        return False, []
    per = f" per process ({world_size} processes)" if world_size > 1 else ""
    if per_rank == 1 or n_local == 1:
        raise ConfigError("train", "batch_size", batch_size,
                          f"the model's BatchNorm ({bn}) needs at least 2 examples per batch in "
                          f"training, and this gives batches of 1{per}; use a larger batch_size")
    return True, [f"[train] batch_size = {batch_size} leaves a last batch of 1 example{per} "
                  f"({n_local} training examples), which the model's BatchNorm ({bn}) cannot "
                  "normalize: it is dropped each epoch (a different example each time)"]
