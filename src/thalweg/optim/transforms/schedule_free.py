"""Schedule-Free SGD and AdamW (Defazio et al. 2024; AlgoPerf 2024 self-tuning winner):
no learning-rate schedule, an online average instead. Three sequences: z (the base SGD/Adam
iterate), x (the running average of z, where the model is *evaluated*) and y = (1 − β)z + βx
(where gradients are taken, the parameters during training):

    y ← (1 − c)·y + c·z + lr(β(1 − c) − 1)·g,   z ← z − lr·g,   c = w_t / Σ w_i,

g the (Adam-normalized, decayed) gradient at y and w_t = t^r·lr_max^p. The parameters hold y
while training and x after `optimizer.eval()`; `optimizer.train()` switches back. The trainer
and every evaluation path call these through :func:`thalweg.optim.eval_mode`. Trajectories,
state (z, exp_avg_sq) and param-group keys (k, weight_sum, lr_max, scheduled_lr, train_mode)
are the `schedulefree` package's. The train()/eval() switch of the optimizers is
:class:`thalweg.optim.rules.contenders.ScheduleFreeMixin` (it runs `InterpolateToZ`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor

from thalweg.optim.registry import Hyperparameter as H

from .chain import HyperValue, StepContext, Transform, add_scaled_, addcmul_, resolve

__all__ = ["InterpolateToZ", "ScaleBySecondMoment", "ScheduleFree", "schedule_free_lr"]

_S = {"schedulable": True}
_UNIT = {"low": 0.0, "high": 1.0, "high_inclusive": False, **_S}


def schedule_free_lr(group: Mapping[str, Any]) -> float:
    """This step's lr: the group's lr (or schedule, at step k) times the linear warm-up."""
    k, warm = group["k"], group["warmup_steps"]
    sched = (k + 1) / warm if k < warm else 1.0
    return resolve(group["lr"], group, k) * sched


class SecondMomentState(NamedTuple):
    exp_avg_sq: Tensor


class SecondMomentScalars(NamedTuple):
    b2: Any
    one_minus_b2: Any
    bias_correction2: Any
    eps: Any


class ScaleBySecondMoment(Transform):
    """g/(√(v/(1 − β₂ᵗ)) + ε), v ← β₂v + (1 − β₂)g²: Adam's normalization without momentum
    (schedule-free AdamW's). `step_key`: bias-correct with the group's counter group[key] + 1
    instead of the parameter's own step (schedule-free counts per group)."""

    name = "scale_by_second_moment"
    State = SecondMomentState
    Scalars = SecondMomentScalars
    schema = (H("b2", 0.999, **_UNIT), H("eps", 1e-8, low=0.0, **_S))

    def __init__(self, b2: HyperValue = 0.999, eps: HyperValue = 1e-8, *, step_key: str | None = None) -> None:
        self.check_args(b2=b2, eps=eps)
        if step_key is not None and not isinstance(step_key, str):
            raise TypeError(f"scale_by_second_moment: step_key must be a param-group key, got {step_key!r}")
        self.b2, self.eps, self.step_key = b2, eps, step_key
        self.counts_steps = step_key is None

    def scalars(self, ctx: StepContext) -> SecondMomentScalars:
        b2 = ctx(self.b2)
        t = ctx.group[self.step_key] + 1 if self.step_key else ctx.step
        return SecondMomentScalars(b2, 1 - b2, 1 - b2**t, ctx(self.eps))

    def apply(self, u, p, state: SecondMomentState, s: SecondMomentScalars, norm):
        v = addcmul_(state.exp_avg_sq.mul_(s.b2), u, u, s.one_minus_b2)
        return u / v.div(s.bias_correction2).sqrt_().add_(s.eps)


class ZState(NamedTuple):
    z: Tensor


class ScheduleFreeScalars(NamedTuple):
    ckp1: Any  # c = w_t / Σw
    y_step: Any  # lr(β(1 − c) − 1)
    z_step: Any  # −lr


class ScheduleFree(Transform):
    """The schedule-free interpolation (last in a chain: it moves the parameter y itself):
    y ← lerp(y, z, c) + lr(β(1 − c) − 1)·u, z ← z − lr·u. Its lr, c and β come from the
    group's bookkeeping (k, lr_max, weight_sum, warmup_steps, r, weight_lr_power), which the
    schedule-free optimizers advance once per step."""

    name = "schedule_free"
    State = ZState
    weight_state = True
    Scalars = ScheduleFreeScalars
    schema = (H("momentum", 0.9, low=0.0, low_inclusive=False, high=1.0, high_inclusive=False, **_S),)

    def __init__(self, momentum: HyperValue = 0.9) -> None:
        self.check_args(momentum=momentum)
        self.momentum = momentum

    def init(self, p: Tensor) -> dict[str, Tensor]:
        return {"z": p.clone(memory_format=torch.contiguous_format)}

    def scalars(self, ctx: StepContext) -> ScheduleFreeScalars:
        g = ctx.group
        lr = schedule_free_lr(g)
        weight = ((g["k"] + 1) ** g["r"]) * (g["lr_max"] ** g["weight_lr_power"])
        ckp1 = weight / g["weight_sum"] if g["weight_sum"] else 0.0
        beta = ctx(self.momentum)
        return ScheduleFreeScalars(ckp1, lr * (beta * (1 - ckp1) - 1), -lr)

    def apply(self, u, p, state, s, norm):
        raise ValueError("schedule_free must be the last transform of a chain (it moves the parameter itself)")

    def apply_into(self, u, p, state: ZState, s: ScheduleFreeScalars, norm) -> None:
        p.lerp_(state.z, s.ckp1)
        add_scaled_(p, u, s.y_step)
        add_scaled_(state.z, u, s.z_step)


class Weight(NamedTuple):
    weight: Any


class InterpolateToZ(Transform):
    """p ← lerp(p, z, w): the switch between y and x (w = 1 − 1/β to x, 1 − β back to y)."""

    name = "interpolate_to_z"
    State = ZState
    Scalars = Weight

    def __init__(self, weight: float) -> None:
        self.weight = weight

    def scalars(self, ctx: StepContext) -> Weight:
        return Weight(self.weight)

    def apply(self, u, p, state, s, norm):
        raise ValueError("interpolate_to_z runs alone")

    def apply_into(self, u, p, state: ZState, s: Weight, norm) -> None:
        p.lerp_(state.z, s.weight)
