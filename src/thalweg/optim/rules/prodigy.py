"""Prodigy (Mishchenko & Defazio 2024): Adam whose step scale d is estimated on line, so the
learning rate can stay 1. d grows toward D̂ = Σₜ dₜλₜ⟨gₜ, θ₀ − θₜ⟩ / ‖sₜ‖₁ (s an EMA of the
scaled gradients), a ratio of two sums over *every* parameter: here one global reduction of
the flat buffers per step (`reduces = "global"`), read before the elementwise pass, with d kept
in the param groups as `prodigyopt.Prodigy` keeps it (trajectories and group keys are its).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from thalweg.optim import registry
from thalweg.optim.engine.core import CompileMode, FlatOptimizer, Rule
from thalweg.optim.registry import Hyperparameter as H
from thalweg.optim.transforms.chain import (
    Chain,
    StepContext,
    Totals,
    Transform,
    add_scaled,
    add_scaled_,
    addcmul_,
    resolve,
)

__all__ = ["PRODIGY_SCHEMA", "Prodigy", "ScaleByProdigy"]

PRODIGY_SCHEMA = (
    H("lr", 1.0, low=0.0, schedulable=True, help="multiplies the estimated step scale d (keep 1; schedules go here)"),
    H("betas", (0.9, 0.999), kind="betas", low=0.0, high=1.0, high_inclusive=False,
      help="Adam's (β₁, β₂); β₁ = 0 keeps no first moment"),
    H("beta3", None, low=0.0, high=1.0, high_inclusive=False, help="decay of the d-estimate's sums (None: √β₂)"),
    H("eps", 1e-8, low=0.0, low_inclusive=False),
    H("weight_decay", 0.0, low=0.0),
    H("decouple", True, kind="bool", help="decoupled (AdamW-style) weight decay"),
    H("use_bias_correction", False, kind="bool"),
    H("safeguard_warmup", False, kind="bool", help="leave lr out of the denominator's sum (warm-up schedules)"),
    H("d0", 1e-6, low=0.0, low_inclusive=False, help="initial estimate of d"),
    H("d_coef", 1.0, low=0.0, low_inclusive=False, help="multiplies the estimate"),
    H("growth_rate", math.inf, low=1.0, allow_inf=True, help="d grows by at most this factor per step"),
)


class ProdigyState(NamedTuple):
    s: Tensor
    p0: Tensor
    exp_avg_sq: Tensor
    exp_avg: Tensor | None = None


class ProdigyScalars(NamedTuple):
    decay: Any  # coupled L2 (0 when decoupled)
    num_coef: Any  # (d/d0)·dlr, times 1 if the group's lr > 0 else 0
    b1: Any
    m_coef: Any  # d(1 − β₁)
    b2: Any
    v_coef: Any  # d²(1 − β₂)
    b3: Any
    s_coef: Any  # (d/d0)·dlr, or (d/d0)·d with safeguard_warmup
    active: Any  # 1 if the group's lr > 0 (else its moments stay put, as in prodigyopt)
    shrink: Any  # −λ·dlr (decoupled decay)
    step: Any  # −dlr


class ScaleByProdigy(Transform):
    """Prodigy's step: Adam's with moments scaled by d, the step −d·lr·m/(√v + d·ε); reduces
    Σ d·λ·⟨g, θ₀ − θ⟩ and ‖β₃s + c·g‖₁ over every parameter first. Needs the :class:`Prodigy`
    optimizer, which turns those sums into the new d."""

    name = "scale_by_prodigy"
    State = ProdigyState
    Scalars = ProdigyScalars
    counts_steps = True
    reduces = "global"

    def __init__(self, first_moment: bool, decouple: bool, safeguard_warmup: bool, use_bias_correction: bool,
                 groups: Callable[[], Sequence[Mapping[str, Any]]]) -> None:
        self.first_moment, self.decouple = first_moment, decouple
        self.safeguard_warmup, self.use_bias_correction = safeguard_warmup, use_bias_correction
        self.groups = groups  # the optimizer's param groups (now): lr is the largest of theirs
        self.state_names = ("s", "p0", "exp_avg_sq") + (("exp_avg",) if first_moment else ())

    def init(self, p: Tensor) -> dict[str, Tensor]:
        out = super().init(p)
        out["p0"] = p.clone(memory_format=torch.contiguous_format)
        return out

    def scalars(self, ctx: StepContext) -> ProdigyScalars:
        g = ctx.group
        b1, b2 = g["betas"]
        b3 = g["beta3"] if g["beta3"] is not None else math.sqrt(b2)
        k, d, d0 = g["k"], g["d"], g["d0"]
        lr = max(resolve(x["lr"], x, k) for x in self.groups())
        bc = ((1 - b2 ** (k + 1)) ** 0.5) / (1 - b1 ** (k + 1)) if self.use_bias_correction else 1
        dlr = d * lr * bc
        on = resolve(g["lr"], g, k) > 0.0
        act = 1.0 if on else 0.0
        s_coef = (d / d0) * d if self.safeguard_warmup else (d / d0) * dlr
        decay = g["weight_decay"]
        return ProdigyScalars(
            0.0 if self.decouple else decay, (d / d0) * dlr * act,
            b1 if on else 1.0, d * (1 - b1) * act, b2 if on else 1.0, d * d * (1 - b2) * act,
            b3 if on else 1.0, s_coef * act, act, -decay * dlr if self.decouple else 0.0, -dlr)

    def _grad(self, u: Tensor, p: Tensor, s: ProdigyScalars) -> Tensor:
        return u if self.decouple else add_scaled(u, p, s.decay)

    def statistics(self, u, p, state: ProdigyState, s: ProdigyScalars, total: Totals) -> Tensor:
        g = self._grad(u, p, s)
        s_new = add_scaled(state.s * s.b3, g, s.s_coef)  # what apply will store, computed alike
        return torch.stack([total.sum(g * (state.p0 - p)) * s.num_coef, total.sum(s_new.abs()) * s.active])

    def combine(self, sums: Tensor, ctx: StepContext, shapes) -> Tensor:
        d, eps = ctx.group["d"], ctx.group["eps"]
        keep = 0.0 if float(sums[1]) == 0.0 else 1.0  # every ‖s‖₁ zero: prodigyopt returns untouched
        return torch.tensor([d * eps, keep, d], dtype=sums.dtype, device=sums.device)

    def apply(self, u, p, state: ProdigyState, s: ProdigyScalars, norm):
        assert norm is not None
        g = self._grad(u, p, s)
        add_scaled_(state.s.mul_(s.b3), g, s.s_coef)
        v = addcmul_(state.exp_avg_sq.mul_(s.b2), g, g, s.v_coef)
        denom = v.sqrt().add_(norm[0].to(v.dtype))
        keep = norm[1].to(v.dtype)
        if self.decouple:
            add_scaled_(p, p, s.shrink * keep)
        if self.first_moment:
            assert state.exp_avg is not None
            m = add_scaled_(state.exp_avg.mul_(s.b1), g, s.m_coef)
            return (m * (s.step * keep)).div_(denom)
        return (g * (s.step * norm[2].to(v.dtype) * keep)).div_(denom)


class _ProdigyRule(Rule):
    def __init__(self, opt: FlatOptimizer) -> None:
        self.groups = lambda: opt.param_groups

    def key(self, g):
        return (g["betas"][0] > 0, g["decouple"], g["safeguard_warmup"], g["use_bias_correction"])

    def build(self, g):
        return Chain([ScaleByProdigy(g["betas"][0] > 0, g["decouple"], g["safeguard_warmup"],
                                     g["use_bias_correction"], self.groups)])


class Prodigy(FlatOptimizer):
    """Prodigy: learning-rate-free Adam; d (the step scale) is estimated from a global
    reduction of the flat buffers each step (prodigyopt.Prodigy's trajectories and groups)."""

    schema = PRODIGY_SCHEMA

    def __init__(self, params: Any, lr: Any = 1.0, betas: tuple[float, float] = (0.9, 0.999),
                 beta3: float | None = None, eps: float = 1e-8, weight_decay: float = 0.0,
                 decouple: bool = True, use_bias_correction: bool = False, safeguard_warmup: bool = False,
                 d0: float = 1e-6, d_coef: float = 1.0, growth_rate: float = math.inf, *,
                 compile: CompileMode = "auto", compile_options: Mapping[str, Any] | None = None) -> None:
        defaults = dict(lr=lr, betas=betas, beta3=beta3, eps=eps, weight_decay=weight_decay, d=d0, d0=d0,
                        d_max=d0, d_numerator=0.0, d_coef=d_coef, k=0, growth_rate=growth_rate,
                        use_bias_correction=use_bias_correction, decouple=decouple,
                        safeguard_warmup=safeguard_warmup)
        registry.check_values(defaults, self.schema)
        self._skip, self._lr = True, 0.0
        super().__init__(params, _ProdigyRule(self), defaults, compile=compile, compile_options=compile_options)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        registry.check_values(param_group, self.schema, f"param group {len(self.param_groups)}: ")
        super().add_param_group(param_group)

    def _begin_step(self) -> None:
        lr = max(resolve(g["lr"], g, g["k"]) for g in self.param_groups)
        for g in self.param_groups:
            glr = resolve(g["lr"], g, g["k"])
            if glr not in (lr, 0.0):
                raise ValueError(f"Prodigy: every param group needs the same lr (or 0), got {glr} and {lr}")
        self._skip, self._lr = True, lr

    def _reduced(self, part: int, totals: Tensor) -> None:
        """The new d from this step's sums (prodigyopt's rule), in every group."""
        delta, denom = (float(x) for x in totals.tolist())
        g0 = self.param_groups[0]
        b3 = g0["beta3"] if g0["beta3"] is not None else math.sqrt(g0["betas"][1])
        if denom == 0.0:
            return
        self._skip = False
        d, d_max = g0["d"], g0["d_max"]
        numerator = g0["d_numerator"] * b3 + delta
        d_hat = d
        if self._lr > 0.0:
            d_hat = g0["d_coef"] * numerator / denom
            if d == g0["d0"]:
                d = max(d, d_hat)
            d_max = max(d_max, d_hat)
            d = min(d_max, d * g0["growth_rate"])
        for g in self.param_groups:
            g.update(d_numerator=numerator, d_denom=denom, d=d, d_max=d_max, d_hat=d_hat)

    def _end_step(self) -> None:
        if not self._skip:
            for g in self.param_groups:
                g["k"] = g["k"] + 1
