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

from .chain import (
    Chain,
    Hyper,
    HyperValue,
    StepContext,
    Transform,
    add_scaled,
    add_scaled_,
    addcmul,
    addcmul_,
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
_UNIT = {"low": 0.0, "high": 1.0, "high_inclusive": False, **_S}  # a decay rate in [0, 1)


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


# --------------------------------------------------------------------------- adaptive rules
class AdamState(NamedTuple):
    exp_avg: Tensor
    exp_avg_sq: Tensor
    max_exp_avg_sq: Tensor | None = None


class AdamScalars(NamedTuple):
    one_minus_b1: Any
    b2: Any
    one_minus_b2: Any
    bias_correction2_sqrt: Any  # √(1 − β₂ᵗ)
    eps: Any
    step_size: Any  # scale/(1 − β₁ᵗ); with a folded scale_by_lr, torch's −lr/(1 − β₁ᵗ)


class ScaleByAdam(Transform):
    """The Adam direction m̂/(√v̂ + ε) with bias correction (optionally AMSGrad), in
    torch's operation order. Follow it with `scale_by_lr(lr)` for the step (folded in)."""

    name = "scale_by_adam"
    State = AdamState
    Scalars = AdamScalars
    counts_steps = True
    absorbs_scale = True
    schema = (H("b1", 0.9, **_UNIT), H("b2", 0.999, **_UNIT), H("eps", 1e-8, low=0.0, **_S),
              H("amsgrad", False, kind="bool"))

    def __init__(self, b1: HyperValue = 0.9, b2: HyperValue = 0.999, eps: HyperValue = 1e-8,
                 amsgrad: bool = False) -> None:
        self.check_args(b1=b1, b2=b2, eps=eps, amsgrad=amsgrad)
        self.b1, self.b2, self.eps, self.amsgrad = b1, b2, eps, amsgrad
        self.state_names = ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if amsgrad else ())

    def scalars(self, ctx: StepContext) -> AdamScalars:
        b1, b2, t = ctx(self.b1), ctx(self.b2), ctx.step
        return AdamScalars(1 - b1, b2, 1 - b2, (1 - b2**t) ** 0.5, ctx(self.eps), ctx.scale / (1 - b1**t))

    def apply(self, u, p, state: AdamState, s: AdamScalars, norm):
        m = state.exp_avg.lerp_(u, s.one_minus_b1)
        v = addcmul_(state.exp_avg_sq.mul_(s.b2), u, u, s.one_minus_b2)
        if self.amsgrad:
            assert state.max_exp_avg_sq is not None
            v = state.max_exp_avg_sq.copy_(torch.maximum(state.max_exp_avg_sq, v))
        denom = v.sqrt().div_(s.bias_correction2_sqrt).add_(s.eps)
        return (m * s.step_size).div_(denom)


class RmsState(NamedTuple):
    square_avg: Tensor
    momentum_buffer: Tensor | None = None
    grad_avg: Tensor | None = None


class RmsScalars(NamedTuple):
    alpha: Any
    one_minus_alpha: Any
    eps: Any
    momentum: Any
    scale: Any  # a folded scale_by_lr (without momentum; 1 otherwise)


class ScaleByRms(Transform):
    """RMSProp: divide by the running RMS of gradients (centered: by their running std);
    with momentum, accumulate the scaled gradient in a buffer. torch's operation order."""

    name = "scale_by_rms"
    State = RmsState
    Scalars = RmsScalars
    counts_steps = True
    schema = (H("alpha", 0.99, low=0.0, high=1.0, **_S), H("eps", 1e-8, low=0.0, **_S),
              H("centered", False, kind="bool"), H("momentum", None, **_UNIT))

    def __init__(self, alpha: HyperValue = 0.99, eps: HyperValue = 1e-8, centered: bool = False,
                 momentum: HyperValue | None = None) -> None:
        self.check_args(alpha=alpha, eps=eps, centered=centered, momentum=momentum)
        self.alpha, self.eps, self.centered, self.momentum = alpha, eps, centered, momentum
        self.state_names = ("square_avg",) + (("momentum_buffer",) if momentum is not None else ()) + (
            ("grad_avg",) if centered else ())
        # the output is linear in one scalar only without momentum (then it is a buffer)
        self.absorbs_scale = momentum is None

    def scalars(self, ctx: StepContext) -> RmsScalars:
        a = ctx(self.alpha)
        mu = 0.0 if self.momentum is None else ctx(self.momentum)
        return RmsScalars(a, 1 - a, ctx(self.eps), mu, ctx.scale)

    def apply(self, u, p, state: RmsState, s: RmsScalars, norm):
        sq = addcmul_(state.square_avg.mul_(s.alpha), u, u, s.one_minus_alpha)
        if self.centered:
            assert state.grad_avg is not None
            gavg = state.grad_avg.lerp_(u, s.one_minus_alpha)
            avg = addcmul(sq, gavg, gavg, -1.0).sqrt_().add_(s.eps)
        else:
            avg = sq.sqrt().add_(s.eps)
        if self.momentum is not None:
            assert state.momentum_buffer is not None
            return state.momentum_buffer.mul_(s.momentum).addcdiv_(u, avg)
        return (u * s.scale).div_(avg)


class AdagradState(NamedTuple):
    sum: Tensor


class AdagradScalars(NamedTuple):
    eps: Any
    step_size: Any  # scale/(1 + (t − 1)·lr_decay); with a folded scale_by_lr, torch's −clr


class ScaleByAdagrad(Transform):
    """AdaGrad: divide by the root of the accumulated squared gradients; torch's `lr_decay`
    divides the direction by 1 + (t − 1)·lr_decay. Follow it with `scale_by_lr(lr)`."""

    name = "scale_by_adagrad"
    State = AdagradState
    Scalars = AdagradScalars
    counts_steps = True
    absorbs_scale = True
    schema = (H("lr_decay", 0.0, low=0.0, **_S), H("eps", 1e-10, low=0.0, **_S),
              H("initial_accumulator_value", 0.0, low=0.0))

    def __init__(self, lr_decay: HyperValue = 0.0, eps: HyperValue = 1e-10,
                 initial_accumulator_value: float = 0.0) -> None:
        self.check_args(lr_decay=lr_decay, eps=eps, initial_accumulator_value=initial_accumulator_value)
        self.lr_decay, self.eps = lr_decay, eps
        self.initial_accumulator_value = initial_accumulator_value

    def init(self, p: Tensor) -> dict[str, Tensor]:
        return {"sum": torch.full_like(p, float(self.initial_accumulator_value),
                                       memory_format=torch.contiguous_format)}

    def scalars(self, ctx: StepContext) -> AdagradScalars:
        return AdagradScalars(ctx(self.eps), ctx.scale / (1 + (ctx.step - 1) * ctx(self.lr_decay)))

    def apply(self, u, p, state: AdagradState, s: AdagradScalars, norm):
        acc = addcmul_(state.sum, u, u, 1.0)
        return (u * s.step_size).div_(acc.sqrt().add_(s.eps))


class AdadeltaState(NamedTuple):
    square_avg: Tensor
    acc_delta: Tensor


class AdadeltaScalars(NamedTuple):
    rho: Any
    one_minus_rho: Any
    eps: Any


class ScaleByAdadelta(Transform):
    """AdaDelta: the update's scale is the ratio of running RMS of past updates to that of
    gradients (no learning rate needed; torch multiplies by `lr`, default 1)."""

    name = "scale_by_adadelta"
    State = AdadeltaState
    Scalars = AdadeltaScalars
    counts_steps = True
    schema = (H("rho", 0.9, low=0.0, high=1.0, **_S), H("eps", 1e-6, low=0.0, **_S))

    def __init__(self, rho: HyperValue = 0.9, eps: HyperValue = 1e-6) -> None:
        self.check_args(rho=rho, eps=eps)
        self.rho, self.eps = rho, eps

    def scalars(self, ctx: StepContext) -> AdadeltaScalars:
        rho = ctx(self.rho)
        return AdadeltaScalars(rho, 1 - rho, ctx(self.eps))

    def apply(self, u, p, state: AdadeltaState, s: AdadeltaScalars, norm):
        sq = addcmul_(state.square_avg.mul_(s.rho), u, u, s.one_minus_rho)
        std = sq.add(s.eps).sqrt_()
        delta = state.acc_delta.add(s.eps).sqrt_().div_(std).mul_(u)
        addcmul_(state.acc_delta.mul_(s.rho), delta, delta, s.one_minus_rho)
        return delta


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
