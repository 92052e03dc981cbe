"""Before a run starts: its parameters, memory and least possible time — and a refusal that
names the field when it cannot fit.

First the model is built on the `meta` device (no memory used) to count its parameters, so
`width = 10**7` is refused in milliseconds with the memory it would need instead of an
allocation traceback; then, once built, one example goes forward (eval mode, no grad) with
hooks that count the FLOPs of its Linear/Conv layers and the activations it makes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from thalweg.budget import (
    STEP_FLOOR_S,
    available_bytes,
    duration,
    flop_rate,
    forward_cost,
    memory_problem,
    size,
    time_problem,
)
from thalweg.train.config import ConfigError, RunConfig

__all__ = ["Estimate", "check_fits", "estimate"]

# copies of the parameters a run holds: weights, gradients, two optimizer slots (Adam's
# moments), and the checkpoint and best.pt snapshots taken while the disk is written
_PARAM_COPIES = 7


@dataclass(frozen=True)
class Estimate:
    """What a run will cost, computed from the config and the data before anything is built."""

    parameters: int
    param_bytes: int  # all copies of the parameters (see _PARAM_COPIES)
    activation_bytes: int  # kept for backward by one training batch
    eval_bytes: int  # the largest activation of one evaluation batch, twice (in and out)
    data_bytes: int  # the splits, counted when they move to an accelerator
    available_bytes: int | None  # free memory on the device now (None: unknown)
    flops: float  # total training and evaluation FLOPs
    min_seconds: float  # a lower bound: peak throughput, no overhead

    @property
    def memory_bytes(self) -> int:
        return self.param_bytes + self.activation_bytes + self.eval_bytes + self.data_bytes

    def describe(self) -> str:
        avail = f" of {size(self.available_bytes)} free" if self.available_bytes else ""
        return (f"{self.parameters:,} parameters, ~{size(self.memory_bytes)} of memory{avail}, "
                f"at least {duration(self.min_seconds)} of compute")


def estimate(cfg: RunConfig, splits: Any, device: torch.device, total_steps: int,
             world_size: int = 1, model: nn.Module | None = None) -> Estimate:
    """Parameters, memory and least time of the run `cfg` on `splits`. Without `model` only
    the parameters are counted (the model is built on the meta device: no memory used);
    with the built model, one example's forward pass adds FLOPs and activations."""
    from thalweg.train.components import build_model

    t = cfg.train
    if model is None:
        with torch.device("meta"):
            counted = build_model(cfg, splits)
    else:
        counted = model
    n_params = sum(p.numel() for p in counted.parameters())
    p_bytes = sum(p.numel() * p.element_size() for p in counted.parameters())
    batch = max(1, t.batch_size // world_size)
    flops, act, ev = 0.0, 0, 0
    if model is not None:
        fwd, act_row, largest_row = forward_cost(model, splits.x_train)
        n_val = len(splits.x_val)
        evals = t.epochs if not t.eval_every else max(1, total_steps // t.eval_every)
        flops = 3.0 * fwd * batch * total_steps + fwd * n_val * evals  # backward ≈ 2 forwards
        act = act_row * batch
        ev = 2 * largest_row * min(t.eval_batch_size, max(n_val, 1))
    rate = flop_rate(device, t.num_threads)
    data = 0
    if device.type != "cpu":
        data = sum(getattr(splits, k).numel() * getattr(splits, k).element_size()
                   for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"))
    return Estimate(
        parameters=n_params, param_bytes=p_bytes * _PARAM_COPIES, activation_bytes=act,
        eval_bytes=ev, data_bytes=data, available_bytes=available_bytes(device), flops=flops,
        min_seconds=max(flops / rate, total_steps * STEP_FLOOR_S),
    )


def check_fits(est: Estimate, cfg: RunConfig, device: torch.device) -> None:
    """Refuse, naming the field to change, a run that cannot fit in memory or in a year."""
    if memory_problem(est.memory_bytes, device) is not None:
        m, t = cfg.model, cfg.train
        biggest = max(est.param_bytes, est.activation_bytes, est.eval_bytes)
        if biggest == est.param_bytes:
            section = "model"
            field = next((k for k in ("width", "channels", "depth", "kernel_size")
                          if getattr(m, k) is not None), "name")
            value = getattr(m, field)
        elif biggest == est.activation_bytes:
            section, field, value = "train", "batch_size", t.batch_size
        else:
            section, field, value = "train", "eval_batch_size", t.eval_batch_size
        acts = (f"; {size(est.activation_bytes)} of activations in training, "
                f"{size(est.eval_bytes)} in evaluation") if est.flops else ""
        raise ConfigError(section, field, value,
                          f"this run needs about {size(est.memory_bytes)} of memory "
                          f"({est.parameters:,} parameters: {size(est.param_bytes)} with "
                          f"gradients, optimizer state and checkpoint copies{acts}), but the "
                          f"{device.type} device has {size(est.available_bytes)} free")
    if (why := time_problem(est.min_seconds, detail=f"{est.flops:.3g} FLOPs at the device's peak rate")):
        raise ConfigError("train", "epochs", cfg.train.epochs, why)
