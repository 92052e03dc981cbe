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
from .registry import Hyperparameter as H

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
    "ScaleByLr",
    "ScaleByRms",
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
    "scale_by_lr",
    "scale_by_rms",
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
    """Decoupled decay (AdamW): p ← p·(1 − lr·λ) before the update is added."""

    name = "decay_weights"
    Scalars = Shrink
    schema = (H("weight_decay", 0.0, low=0.0, **_S), H("lr", 1e-3, low=0.0, **_S))

    def __init__(self, weight_decay: HyperValue, lr: HyperValue) -> None:
        self.check_args(weight_decay=weight_decay, lr=lr)
        self.weight_decay = weight_decay
        self.lr = lr

    def scalars(self, ctx: StepContext) -> Shrink:
        return Shrink(1.0 - ctx(self.lr) * ctx(self.weight_decay))

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
    g + μ·buf for Nesterov.
    """

    name = "trace"
    State = TraceState
    Scalars = TraceScalars
    schema = (H("momentum", 0.9, **_UNIT), H("dampening", 0.0, low=0.0, high=1.0, **_S),
              H("nesterov", False, kind="bool"))

    def __init__(self, momentum: HyperValue, dampening: HyperValue = 0.0, nesterov: bool = False):
        self.check_args(momentum=momentum, dampening=dampening, nesterov=nesterov)
        self.momentum = momentum
        self.dampening = dampening
        self.nesterov = nesterov

    def scalars(self, ctx: StepContext) -> TraceScalars:
        mu = ctx(self.momentum)
        if ctx.step == 1:  # torch clones the gradient into the fresh buffer
            return TraceScalars(0.0, 1.0, mu)
        return TraceScalars(mu, 1.0 - ctx(self.dampening), mu)

    def apply(self, u, p, state: TraceState, s: TraceScalars, norm):
        buf = add_scaled_(state.momentum_buffer.mul_(s.decay), u, s.gain)
        return add_scaled(u, buf, s.nesterov_momentum) if self.nesterov else buf


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
