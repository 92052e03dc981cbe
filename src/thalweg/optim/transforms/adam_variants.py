"""Adam's relatives as transforms, in torch.optim's operation order (bitwise eagerly):
NAdam (Nesterov momentum with torch's μ schedule), RAdam (rectified variance), Adamax
(infinity-norm second moment). Follow each with `scale_by_lr(lr)` (folded in)."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from thalweg.optim.registry import Hyperparameter as H
from thalweg.optim.transforms.context import scalar_dtype

from .chain import HyperValue, StepContext, Transform, addcmul_

__all__ = ["ScaleByAdamax", "ScaleByNadam", "ScaleByRadam", "mu_product"]

_S = {"schedulable": True}
_UNIT = {"low": 0.0, "high": 1.0, "high_inclusive": False, **_S}

_MU_PRODUCTS: dict[tuple[float, float, torch.dtype], list[float]] = {}


def nadam_mu(beta1: float, momentum_decay: float, step: float) -> float:
    """torch's NAdam momentum at a step: μ_t = β₁(1 − ½·0.96^(t·ψ))."""
    return beta1 * (1.0 - 0.5 * (0.96 ** (step * momentum_decay)))


def mu_product(beta1: float, momentum_decay: float, step: int) -> float:
    """Π_{i ≤ step} μ_i as torch.optim.NAdam keeps it: a 0-d tensor of the scalar dtype,
    multiplied in place once per step (so rounded as torch's). Valid when β₁ and ψ were
    constant since the parameter's first step; cached (the product underflows to 0 within a
    few hundred steps, after which it stays 0)."""
    key = (float(beta1), float(momentum_decay), scalar_dtype())
    vals = _MU_PRODUCTS.setdefault(key, [1.0])
    if step >= len(vals) and vals[-1] != 0.0:
        t = torch.tensor(vals[-1], dtype=key[2])
        for i in range(len(vals), step + 1):
            t *= nadam_mu(beta1, momentum_decay, float(i))
            vals.append(float(t.item()))
            if vals[-1] == 0.0:
                break
    return vals[step] if step < len(vals) else 0.0


class NadamState(NamedTuple):
    exp_avg: Tensor
    exp_avg_sq: Tensor


class NadamScalars(NamedTuple):
    one_minus_b1: Any
    b2: Any
    one_minus_b2: Any
    bias_correction2: Any  # 1 − β₂ᵗ
    eps: Any
    grad_step: Any  # scale·(1 − μ_t)/(1 − Πμ): torch's −lr(1 − μ)/(1 − μ_product)
    momentum_step: Any  # scale·μ_{t+1}/(1 − Πμ·μ_{t+1})


class ScaleByNadam(Transform):
    """NAdam: Adam whose first moment takes a Nesterov look-ahead, with torch's momentum
    schedule μ_t = β₁(1 − ½·0.96^(tψ)): c₁·g/(√v̂ + ε) + c₂·m/(√v̂ + ε)."""

    name = "scale_by_nadam"
    State = NadamState
    Scalars = NadamScalars
    counts_steps = True
    absorbs_scale = True
    schema = (H("b1", 0.9, **_UNIT), H("b2", 0.999, **_UNIT), H("eps", 1e-8, low=0.0, **_S),
              H("momentum_decay", 4e-3, low=0.0, **_S))

    def __init__(self, b1: HyperValue = 0.9, b2: HyperValue = 0.999, eps: HyperValue = 1e-8,
                 momentum_decay: HyperValue = 4e-3) -> None:
        self.check_args(b1=b1, b2=b2, eps=eps, momentum_decay=momentum_decay)
        self.b1, self.b2, self.eps, self.momentum_decay = b1, b2, eps, momentum_decay

    def scalars(self, ctx: StepContext) -> NadamScalars:
        b1, b2, psi, t = ctx(self.b1), ctx(self.b2), ctx(self.momentum_decay), ctx.step
        mu, mu_next = nadam_mu(b1, psi, float(t)), nadam_mu(b1, psi, float(t + 1))
        prod = mu_product(b1, psi, t)
        prod_next = prod * mu_next
        return NadamScalars(1 - b1, b2, 1 - b2, 1 - b2**t, ctx(self.eps),
                            ctx.scale * (1.0 - mu) / (1.0 - prod), (ctx.scale * mu_next) / (1.0 - prod_next))

    def _denom(self, u: Tensor, state: NadamState, s: NadamScalars) -> tuple[Tensor, Tensor]:
        m = state.exp_avg.lerp_(u, s.one_minus_b1)
        v = addcmul_(state.exp_avg_sq.mul_(s.b2), u, u, s.one_minus_b2)
        return m, v.div(s.bias_correction2).sqrt().add_(s.eps)

    def apply(self, u, p, state: NadamState, s: NadamScalars, norm):
        m, denom = self._denom(u, state, s)
        return (u * s.grad_step).div_(denom).add_((m * s.momentum_step).div_(denom))

    def apply_into(self, u, p, state: NadamState, s: NadamScalars, norm) -> None:
        m, denom = self._denom(u, state, s)
        if isinstance(s.grad_step, Tensor):  # compiled: the same two sums, fused
            p.add_((u * s.grad_step) / denom).add_((m * s.momentum_step) / denom)
        else:  # torch's two addcdiv_ calls, so the rounding is its own
            p.addcdiv_(u, denom, value=s.grad_step)
            p.addcdiv_(m, denom, value=s.momentum_step)


class _Moments(Transform):
    """The (β₁, β₂, ε) arguments of an Adam-like direction, checked by one schema."""

    schema = (H("b1", 0.9, **_UNIT), H("b2", 0.999, **_UNIT), H("eps", 1e-8, low=0.0, **_S))

    def __init__(self, b1: HyperValue = 0.9, b2: HyperValue = 0.999, eps: HyperValue = 1e-8) -> None:
        self.check_args(b1=b1, b2=b2, eps=eps)
        self.b1, self.b2, self.eps = b1, b2, eps


class RadamState(NamedTuple):
    exp_avg: Tensor
    exp_avg_sq: Tensor


class RadamScalars(NamedTuple):
    one_minus_b1: Any
    b2: Any
    one_minus_b2: Any
    bias_correction1: Any
    scale: Any  # a folded scale_by_lr: −lr
    bias_correction2_sqrt: Any
    eps: Any
    rect: Any  # the rectification factor r_t, or 0 while ρ_t ≤ 5 (plain momentum then)


class ScaleByRadam(_Moments):
    """RAdam: Adam's step times the variance rectification r_t once ρ_t > 5; bias-corrected
    momentum alone before that (torch.optim.RAdam's operation order)."""

    name = "scale_by_radam"
    State = RadamState
    Scalars = RadamScalars
    counts_steps = True
    absorbs_scale = True

    def scalars(self, ctx: StepContext) -> RadamScalars:
        b1, b2, t = ctx(self.b1), ctx(self.b2), ctx.step
        bc2 = 1 - b2**t
        rho_inf = 2 / (1 - b2) - 1
        rho_t = rho_inf - 2 * t * (b2**t) / bc2
        rect = 0.0
        if rho_t > 5.0:
            rect = ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
        return RadamScalars(1 - b1, b2, 1 - b2, 1 - b1**t, ctx.scale, bc2**0.5, ctx(self.eps), rect)

    def apply(self, u, p, state: RadamState, s: RadamScalars, norm):
        m = state.exp_avg.lerp_(u, s.one_minus_b1)
        v = addcmul_(state.exp_avg_sq.mul_(s.b2), u, u, s.one_minus_b2)
        step = (m / s.bias_correction1) * s.scale
        if isinstance(s.rect, Tensor):  # compiled: both branches, selected elementwise
            adaptive = s.bias_correction2_sqrt / v.sqrt().add_(s.eps)
            return torch.where(s.rect > 0, step * adaptive * s.rect, step)
        if s.rect > 0:
            return step * (s.bias_correction2_sqrt / v.sqrt().add_(s.eps)) * s.rect
        return step


class AdamaxState(NamedTuple):
    exp_avg: Tensor
    exp_inf: Tensor


class AdamaxScalars(NamedTuple):
    one_minus_b1: Any
    b2: Any
    eps: Any
    step_size: Any  # scale/(1 − β₁ᵗ): torch's −lr/(1 − β₁ᵗ)


class ScaleByAdamax(_Moments):
    """Adamax: Adam with the infinity norm, u_t = max(β₂u, |g| + ε), step m̂/u."""

    name = "scale_by_adamax"
    State = AdamaxState
    Scalars = AdamaxScalars
    counts_steps = True
    absorbs_scale = True

    def scalars(self, ctx: StepContext) -> AdamaxScalars:
        b1 = ctx(self.b1)
        return AdamaxScalars(1 - b1, ctx(self.b2), ctx(self.eps), ctx.scale / (1 - b1**ctx.step))

    def apply(self, u, p, state: AdamaxState, s: AdamaxScalars, norm):
        m = state.exp_avg.lerp_(u, s.one_minus_b1)
        inf = state.exp_inf.copy_(torch.maximum(state.exp_inf.mul_(s.b2), u.abs().add_(s.eps)))
        return (m * s.step_size).div_(inf)
