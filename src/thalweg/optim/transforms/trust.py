"""Layer-wise trust ratios for large batches, as transforms that reduce per tensor
(`reduces = "tensor"`: norms of each parameter tensor from the flat buffer's segment offsets):
LAMB (You et al. 2019: Adam's direction, rescaled per tensor to ‖θ‖/‖update‖) and LARS (You
et al. 2017: the gradient rescaled per tensor to η‖θ‖/(‖g‖ + λ‖θ‖), then momentum)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from thalweg.optim.registry import Hyperparameter as H

from .chain import HyperValue, StepContext, Totals, Transform, add_scaled_, addcmul_

__all__ = ["ScaleByLars", "ScaleByMoments", "ScaleByTrustRatio"]

_S = {"schedulable": True}
_UNIT = {"low": 0.0, "high": 1.0, "high_inclusive": False, **_S}


class MomentsState(NamedTuple):
    exp_avg: Tensor
    exp_avg_sq: Tensor


class MomentsScalars(NamedTuple):
    b1: Any
    one_minus_b1: Any
    b2: Any
    one_minus_b2: Any
    eps: Any


class ScaleByMoments(Transform):
    """m/(√v + ε) from running moments without bias correction (LAMB's direction, in
    torch-optimizer's operation order: m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)g²)."""

    name = "scale_by_moments"
    State = MomentsState
    Scalars = MomentsScalars
    counts_steps = True
    schema = (H("b1", 0.9, **_UNIT), H("b2", 0.999, **_UNIT), H("eps", 1e-6, low=0.0, **_S))

    def __init__(self, b1: HyperValue = 0.9, b2: HyperValue = 0.999, eps: HyperValue = 1e-6) -> None:
        self.check_args(b1=b1, b2=b2, eps=eps)
        self.b1, self.b2, self.eps = b1, b2, eps

    def scalars(self, ctx: StepContext) -> MomentsScalars:
        b1, b2 = ctx(self.b1), ctx(self.b2)
        return MomentsScalars(b1, 1 - b1, b2, 1 - b2, ctx(self.eps))

    def apply(self, u, p, state: MomentsState, s: MomentsScalars, norm):
        m = add_scaled_(state.exp_avg.mul_(s.b1), u, s.one_minus_b1)
        v = addcmul_(state.exp_avg_sq.mul_(s.b2), u, u, s.one_minus_b2)
        return m / v.sqrt().add(s.eps)


class TrustScalars(NamedTuple):
    scale: Any  # the folded scales (LAMB: −lr, times the bias correction with debias)


class ScaleByTrustRatio(Transform):
    """LAMB's trust ratio: u ← u·min(‖θ‖, clamp)/‖u‖ per tensor (1 where either norm is 0),
    the norms taken from the flat buffer by segment offsets."""

    name = "scale_by_trust_ratio"
    Scalars = TrustScalars
    absorbs_scale = True
    reduces = "tensor"
    schema = (H("clamp_value", 10.0, low=0.0, allow_inf=True, **_S),)

    def __init__(self, clamp_value: HyperValue = 10.0, adapt: bool = True) -> None:
        self.check_args(clamp_value=clamp_value)
        self.clamp_value = clamp_value
        #: False: a ratio of 1 (a group left out of the adaptation, e.g. LAMB's biases and
        #: norm gains), with the same passes as the adapted groups of the optimizer
        self.adapt = adapt

    def scalars(self, ctx: StepContext) -> TrustScalars:
        return TrustScalars(ctx.scale)

    def statistics(self, u, p, state, s, total: Totals) -> Tensor:
        return torch.stack([total.sumsq(p), total.sumsq(u)])

    def combine(self, sums: Tensor, ctx: StepContext, shapes: Sequence[torch.Size]) -> Tensor:
        w = sums[0].sqrt().clamp(0, ctx(self.clamp_value))
        a = sums[1].sqrt()
        if not self.adapt:
            return torch.ones_like(w).unsqueeze(0)
        return torch.where((w == 0) | (a == 0), torch.ones_like(w), w / a).unsqueeze(0)

    def apply(self, u, p, state, s: TrustScalars, norm):
        assert norm is not None
        return u * (norm[0] * s.scale)


@functools.lru_cache(maxsize=32)
def _matrices(ndims: tuple[int, ...], device: torch.device) -> Tensor:
    """Which tensors of a layout have ≥ 2 dimensions (LARS adapts only those)."""
    return torch.tensor([n > 1 for n in ndims], device=device)


class LarsScalars(NamedTuple):
    sign: Any  # −1 when maximizing


class ScaleByLars(Transform):
    """LARS's local rate: u ← (g + λθ)·η‖θ‖/(‖g‖ + λ‖θ‖) per tensor of ≥ 2 dimensions (1 where
    ‖θ‖ or the denominator is 0); vectors (biases, norm gains) keep g, without decay
    (pytorch_optimizer's LARS). Follow it with momentum (`trace`) and `scale_by_lr`."""

    name = "scale_by_lars"
    Scalars = LarsScalars
    reduces = "tensor"
    schema = (H("weight_decay", 0.0, low=0.0, **_S), H("trust_coefficient", 1e-3, low=0.0, **_S),
              H("maximize", False, kind="bool"))

    def __init__(self, weight_decay: HyperValue = 0.0, trust_coefficient: HyperValue = 1e-3,
                 maximize: bool = False) -> None:
        self.check_args(weight_decay=weight_decay, trust_coefficient=trust_coefficient, maximize=maximize)
        self.weight_decay, self.trust_coefficient, self.maximize = weight_decay, trust_coefficient, maximize

    def scalars(self, ctx: StepContext) -> LarsScalars:
        return LarsScalars(-1.0 if self.maximize else 1.0)

    def statistics(self, u, p, state, s, total: Totals) -> Tensor:
        return torch.stack([total.sumsq(p), total.sumsq(u)])  # ‖g‖ does not depend on the sign

    def combine(self, sums: Tensor, ctx: StepContext, shapes: Sequence[torch.Size]) -> Tensor:
        wd, tc = ctx(self.weight_decay), ctx(self.trust_coefficient)
        pn, gn = sums[0].sqrt(), sums[1].sqrt()
        den = gn + wd * pn
        one = torch.ones_like(pn)
        ratio = torch.where(pn > 0, torch.where(den > 0, tc * pn / den, one), one)
        matrix = _matrices(tuple(len(s) for s in shapes), sums.device)
        return torch.stack([torch.where(matrix, ratio, one), torch.where(matrix, wd * one, 0 * one)])

    def apply(self, u, p, state, s: LarsScalars, norm):
        assert norm is not None
        g = u if not self.maximize else u * s.sign
        return (g + p * norm[1]) * norm[0]
