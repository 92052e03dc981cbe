"""The adaptive transforms (Adam, RMSProp, AdaGrad, AdaDelta): per-coordinate scaling by
running moments, each with named state and scalars and torch.optim's operation order (see
:mod:`thalweg.optim.transforms` for the conventions; the factories live there)."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from thalweg.optim.registry import Hyperparameter as H

from .chain import HyperValue, StepContext, Transform, addcmul, addcmul_

__all__ = ["ScaleByAdadelta", "ScaleByAdagrad", "ScaleByAdam", "ScaleByRms"]

_S = {"schedulable": True}
_UNIT = {"low": 0.0, "high": 1.0, "high_inclusive": False, **_S}  # a decay rate in [0, 1)


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
