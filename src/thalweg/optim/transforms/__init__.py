"""Elementwise gradient transforms, optax style, that compose into one fused update.

Style: each transform is a CamelCase class (`ScaleByAdam`) with a lowercase optax-style
factory (`scale_by_adam(...)`, built by :func:`factory`); rules and users call the
factories, new transforms subclass :class:`Transform`. A transform declares

- `State`, a NamedTuple of its buffers, named as in torch.optim's state dicts (so
  checkpoints load both ways); `apply` reads `state.exp_avg`, never a position;
- `Scalars`, a NamedTuple of per-step scalars, computed in float64 on the host by
  `scalars(ctx)` from the step count and hyperparameters (`ctx(value)` resolves a number,
  schedule or group reference); `n_scalars` is derived from it;
- `schema`, the :class:`~thalweg.optim.registry.Hyperparameter` of each argument, checked
  at construction (the same validator as the optimizers').

Each transform has one meaning: `scale_by_adam()` is the unit-scale Adam direction and
`scale_by_lr(lr)` the step; the chain folds a scale that follows an `absorbs_scale`
transform into its scalars (Adam's −lr/(1 − β₁ᵗ) is one factor, as in torch). Eagerly, the
math calls the same torch ops in the same order as torch.optim's for-loop implementation, so
trajectories agree to the bit; compiled, it is the same math fused into one kernel.

Hyperparameters are numbers, schedules (callables `step -> value`), or :class:`Hyper`
references to a key of the parameter group (how the named optimizers in :mod:`rules` let
`group["lr"] = ...` take effect on the next step without recompiling).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from thalweg.optim.registry import Hyperparameter as H

from .adam_variants import ScaleByAdamax, ScaleByNadam, ScaleByRadam
from .adaptive import ScaleByAdadelta, ScaleByAdagrad, ScaleByAdam, ScaleByRms
from .chain import (
    Chain,
    Hyper,
    HyperValue,
    StepContext,
    Transform,
    add_scaled,
    add_scaled_,
    chain,
    factory,
    global_norm,
)
from .schedule_free import ScaleBySecondMoment, ScheduleFree
from .trust import ScaleByLars, ScaleByMoments, ScaleByTrustRatio

__all__ = [
    "AddDecayedWeights",
    "Chain",
    "Clip",
    "ClipByGlobalNorm",
    "DecayWeights",
    "FlipSign",
    "Hyper",
    "Scale",
    "ScaleByAdadelta",
    "ScaleByAdagrad",
    "ScaleByAdam",
    "ScaleByAdamax",
    "ScaleByBiasCorrection",
    "ScaleByLars",
    "ScaleByLion",
    "ScaleByLr",
    "ScaleByMoments",
    "ScaleByNadam",
    "ScaleByRadam",
    "ScaleByRms",
    "ScaleBySecondMoment",
    "ScaleByTrustRatio",
    "ScheduleFree",
    "StepContext",
    "Trace",
    "Transform",
    "add_decayed_weights",
    "chain",
    "clip",
    "clip_by_global_norm",
    "decay_weights",
    "flip_sign",
    "global_norm",
    "scale",
    "scale_by_adadelta",
    "scale_by_adagrad",
    "scale_by_adam",
    "scale_by_adamax",
    "scale_by_bias_correction",
    "scale_by_lars",
    "scale_by_lion",
    "scale_by_lr",
    "scale_by_moments",
    "scale_by_nadam",
    "scale_by_radam",
    "scale_by_rms",
    "scale_by_second_moment",
    "scale_by_trust_ratio",
    "schedule_free",
    "trace",
]

_S = {"schedulable": True}
_UNIT = {"low": 0.0, "high": 1.0, "high_inclusive": False, **_S}  # a decay rate in [0, 1); adaptive.py too


# --------------------------------------------------------------------------- pure scales
class Factor(NamedTuple):
    factor: Any


class Scale(Transform):
    """u ← factor · u."""

    name = "scale"
    Scalars = Factor
    is_scale = True
    schema = (H("factor", 1.0, **_S),)

    def __init__(self, factor: HyperValue) -> None:
        self.check_args(factor=factor)
        self.factor = factor

    def scalars(self, ctx: StepContext) -> Factor:
        return Factor(ctx(self.factor))

    def apply(self, u, p, state, s, norm):
        return u * s.factor


class ScaleByLr(Transform):
    """u ← −lr · u (the descent step; `lr` may be a schedule)."""

    name = "scale_by_lr"
    Scalars = Factor
    is_scale = True
    schema = (H("lr", 1e-3, low=0.0, **_S),)

    def __init__(self, lr: HyperValue) -> None:
        self.check_args(lr=lr)
        self.lr = lr

    def scalars(self, ctx: StepContext) -> Factor:
        return Factor(-ctx(self.lr))

    def apply(self, u, p, state, s, norm):
        return u * s.factor


class ScaleByBiasCorrection(Transform):
    """u ← u·√(1 − β₂ᵗ)/(1 − β₁ᵗ): Adam's bias correction as a pure scale (LAMB's `debias`)."""

    name = "scale_by_bias_correction"
    Scalars = Factor
    is_scale = True
    schema = (H("b1", 0.9, **_UNIT), H("b2", 0.999, **_UNIT))

    def __init__(self, b1: HyperValue = 0.9, b2: HyperValue = 0.999) -> None:
        self.check_args(b1=b1, b2=b2)
        self.b1, self.b2 = b1, b2

    def scalars(self, ctx: StepContext) -> Factor:
        t = ctx.step
        return Factor((1 - ctx(self.b2) ** t) ** 0.5 / (1 - ctx(self.b1) ** t))

    def apply(self, u, p, state, s, norm):
        return u * s.factor


class FlipSign(Transform):
    """u ← −u when maximizing (torch's `maximize=True`)."""

    name = "flip_sign"
    Scalars = Factor
    is_scale = True
    schema = (H("maximize", True, kind="bool", schedulable=True),)

    def __init__(self, maximize: HyperValue = True) -> None:
        self.check_args(maximize=maximize)
        self.maximize = maximize

    def scalars(self, ctx: StepContext) -> Factor:
        return Factor(-1.0 if ctx(self.maximize) else 1.0)

    def apply(self, u, p, state, s, norm):
        return u * s.factor


# --------------------------------------------------------------------------- decay and clipping
class WeightDecay(NamedTuple):
    weight_decay: Any


class AddDecayedWeights(Transform):
    """Coupled L2 decay: u ← u + λ·p (torch's `weight_decay` for SGD/Adam)."""

    name = "add_decayed_weights"
    Scalars = WeightDecay
    schema = (H("weight_decay", 0.0, low=0.0, **_S),)

    def __init__(self, weight_decay: HyperValue) -> None:
        self.check_args(weight_decay=weight_decay)
        self.weight_decay = weight_decay

    def scalars(self, ctx: StepContext) -> WeightDecay:
        return WeightDecay(ctx(self.weight_decay))

    def apply(self, u, p, state, s, norm):
        return add_scaled(u, p, s.weight_decay)


class Shrink(NamedTuple):
    shrink: Any  # 1 − lr·λ


class DecayWeights(Transform):
    """Decoupled decay (AdamW): p ← p·(1 − lr·λ) before the update is added; with
    `relative_to` = lr₀, p ← p·(1 − lr·λ/lr₀) (λ per unit of the schedule's ratio: lion-pytorch's
    `decoupled_weight_decay`)."""

    name = "decay_weights"
    Scalars = Shrink
    schema = (H("weight_decay", 0.0, low=0.0, **_S), H("lr", 1e-3, low=0.0, **_S),
              H("relative_to", None, low=0.0, low_inclusive=False))

    def __init__(self, weight_decay: HyperValue, lr: HyperValue, relative_to: float | None = None) -> None:
        self.check_args(weight_decay=weight_decay, lr=lr, relative_to=relative_to)
        self.weight_decay = weight_decay
        self.lr = lr
        self.relative_to = relative_to

    def scalars(self, ctx: StepContext) -> Shrink:
        wd = ctx(self.weight_decay)
        if self.relative_to is not None:
            wd = wd / self.relative_to
        return Shrink(1.0 - ctx(self.lr) * wd)

    def apply(self, u, p, state, s, norm):
        p.mul_(s.shrink)
        return u


class MaxDelta(NamedTuple):
    max_delta: Any


class Clip(Transform):
    """Clip every coordinate of u to [−max_delta, max_delta]."""

    name = "clip"
    Scalars = MaxDelta
    schema = (H("max_delta", 1.0, low=0.0, low_inclusive=False, allow_inf=True, **_S),)

    def __init__(self, max_delta: HyperValue) -> None:
        self.check_args(max_delta=max_delta)
        self.max_delta = max_delta

    def scalars(self, ctx: StepContext) -> MaxDelta:
        return MaxDelta(ctx(self.max_delta))

    def apply(self, u, p, state, s, norm):
        return u.clamp(-s.max_delta, s.max_delta)


class MaxNorm(NamedTuple):
    max_norm: Any


class ClipByGlobalNorm(Transform):
    """Rescale u so that its norm over *all* parameters is at most `max_norm`.

    The norm is that of the update where the transform stands: first in a chain, the raw
    gradients' (one pass); after other transforms, the chain splits into passes here.
    """

    name = "clip_by_global_norm"
    Scalars = MaxNorm
    needs_global_norm = True
    schema = (H("max_norm", 1.0, low=0.0, low_inclusive=False, allow_inf=True, **_S),)

    def __init__(self, max_norm: HyperValue) -> None:
        self.check_args(max_norm=max_norm)
        self.max_norm = max_norm

    def scalars(self, ctx: StepContext) -> MaxNorm:
        return MaxNorm(ctx(self.max_norm))

    def apply(self, u, p, state, s, norm):
        assert norm is not None
        return u * torch.clamp(s.max_norm / (norm + 1e-6), max=1.0)


# --------------------------------------------------------------------------- momentum
class TraceState(NamedTuple):
    momentum_buffer: Tensor


class TraceScalars(NamedTuple):
    decay: Any  # μ (0 on the first step: the buffer starts as the gradient)
    gain: Any  # 1 − dampening (1 on the first step)
    nesterov_momentum: Any  # μ


class Trace(Transform):
    """Heavy-ball (Polyak) or Nesterov momentum, exactly as torch's SGD.

    buf ← g on the first step, then buf ← μ·buf + (1 − dampening)·g; the update is buf, or
    g + μ·buf for Nesterov. `zero_start`: buf starts at 0 (dampening from the first step).
    """

    name = "trace"
    State = TraceState
    Scalars = TraceScalars
    schema = (H("momentum", 0.9, **_UNIT), H("dampening", 0.0, low=0.0, high=1.0, **_S),
              H("nesterov", False, kind="bool"), H("zero_start", False, kind="bool"))

    def __init__(self, momentum: HyperValue, dampening: HyperValue = 0.0, nesterov: bool = False, *,
                 zero_start: bool = False):
        self.check_args(momentum=momentum, dampening=dampening, nesterov=nesterov, zero_start=zero_start)
        self.momentum = momentum
        self.dampening = dampening
        self.nesterov = nesterov
        #: the buffer starts at zero, dampening from the first step (LARS references), not at g
        self.zero_start = zero_start

    def scalars(self, ctx: StepContext) -> TraceScalars:
        mu = ctx(self.momentum)
        if ctx.step == 1 and not self.zero_start:  # torch clones the gradient into the fresh buffer
            return TraceScalars(0.0, 1.0, mu)
        return TraceScalars(mu, 1.0 - ctx(self.dampening), mu)

    def apply(self, u, p, state: TraceState, s: TraceScalars, norm):
        buf = add_scaled_(state.momentum_buffer.mul_(s.decay), u, s.gain)
        return add_scaled(u, buf, s.nesterov_momentum) if self.nesterov else buf


# --------------------------------------------------------------------------- sign
class LionState(NamedTuple):
    exp_avg: Tensor


class LionScalars(NamedTuple):
    b1: Any
    one_minus_b1: Any
    b2: Any
    one_minus_b2: Any


class ScaleByLion(Transform):
    """Lion (Chen et al. 2023): the sign of an interpolation of momentum and gradient,
    sign(β₁m + (1 − β₁)g); the momentum then moves with β₂ (lion-pytorch's operation order)."""

    name = "scale_by_lion"
    State = LionState
    Scalars = LionScalars
    schema = (H("b1", 0.9, **_UNIT), H("b2", 0.99, **_UNIT))

    def __init__(self, b1: HyperValue = 0.9, b2: HyperValue = 0.99) -> None:
        self.check_args(b1=b1, b2=b2)
        self.b1, self.b2 = b1, b2

    def scalars(self, ctx: StepContext) -> LionScalars:
        b1, b2 = ctx(self.b1), ctx(self.b2)
        return LionScalars(b1, 1 - b1, b2, 1 - b2)

    def apply(self, u, p, state: LionState, s: LionScalars, norm):
        d = add_scaled(state.exp_avg * s.b1, u, s.one_minus_b1).sign_()
        add_scaled_(state.exp_avg.mul_(s.b2), u, s.one_minus_b2)
        return d


# --------------------------------------------------------------------------- factories
scale = factory(Scale, "scale")
scale_by_lr = factory(ScaleByLr, "scale_by_lr")
flip_sign = factory(FlipSign, "flip_sign")
add_decayed_weights = factory(AddDecayedWeights, "add_decayed_weights")
decay_weights = factory(DecayWeights, "decay_weights")
clip = factory(Clip, "clip")
clip_by_global_norm = factory(ClipByGlobalNorm, "clip_by_global_norm")
trace = factory(Trace, "trace")
scale_by_adam = factory(ScaleByAdam, "scale_by_adam")
scale_by_rms = factory(ScaleByRms, "scale_by_rms")
scale_by_adagrad = factory(ScaleByAdagrad, "scale_by_adagrad")
scale_by_adadelta = factory(ScaleByAdadelta, "scale_by_adadelta")
scale_by_lion = factory(ScaleByLion, "scale_by_lion")
scale_by_nadam = factory(ScaleByNadam, "scale_by_nadam")
scale_by_radam = factory(ScaleByRadam, "scale_by_radam")
scale_by_adamax = factory(ScaleByAdamax, "scale_by_adamax")
scale_by_second_moment = factory(ScaleBySecondMoment, "scale_by_second_moment")
schedule_free = factory(ScheduleFree, "schedule_free")
scale_by_moments = factory(ScaleByMoments, "scale_by_moments")
scale_by_trust_ratio = factory(ScaleByTrustRatio, "scale_by_trust_ratio")
scale_by_bias_correction = factory(ScaleByBiasCorrection, "scale_by_bias_correction")
scale_by_lars = factory(ScaleByLars, "scale_by_lars")
