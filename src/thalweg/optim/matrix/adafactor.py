"""Adafactor (Shazeer & Stern 2018) with torch.optim.Adafactor's signature, state layout and
trajectories: the second moment of a matrix is kept as a row and a column average (their
outer product, over the row mean, estimates it), so the state is O(m + n) per m×n matrix.

Per-tensor quantities (the parameter RMS that scales the step, the update RMS that clips it)
are reductions over each matrix of a stack, taken for all equal-shape parameters at once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from thalweg.optim import registry
from thalweg.optim.registry import Hyperparameter as H
from thalweg.optim.rules.torch_twin import check_like_torch

from .stacked import Stack, StackedOptimizer

__all__ = ["ADAFACTOR_SCHEMA", "Adafactor"]

ADAFACTOR_SCHEMA = (
    H("lr", 1e-2, low=0.0, help="relative step cap: ρ_t = min(lr, 1/√t)"),
    H("beta2_decay", -0.8, high=0.0, help="1 − β₂,t = t^beta2_decay (the second-moment decay)"),
    H("d", 1.0, low=1.0, help="clipping threshold of the update RMS"),
    H("weight_decay", 0.0, low=0.0, help="decoupled decay p ← p(1 − lr·λ)"),
    H("maximize", False, kind="bool", help="ascend instead of descend"),
)


def _check_eps(eps: Any) -> tuple[float | None, float]:
    """eps = (ε₁ or None, ε₂): ε₁ floors the second moment (None: the dtype's machine
    epsilon), ε₂ floors the parameter RMS that scales the step."""
    ok = isinstance(eps, (tuple, list)) and len(eps) == 2
    if ok:
        for j, e in enumerate(eps):
            if e is None and j == 0:
                continue
            if isinstance(e, bool) or not isinstance(e, (int, float)) or not math.isfinite(e) or e < 0:
                ok = False
    if not ok:
        raise ValueError(f"eps must be a pair (eps1 ≥ 0 or None, eps2 ≥ 0), got {eps!r}")
    return eps[0], eps[1]


def _norms(x: Tensor) -> Tensor:
    """The 2-norm of each tensor of a stack (k, ...), as a (k,) tensor."""
    return x.abs() if x.ndim == 1 else torch.linalg.vector_norm(x, dim=tuple(range(1, x.ndim)))


class Adafactor(StackedOptimizer):
    """Adafactor: a factored second moment (row and column averages) for ≥2-D tensors, a
    relative step scaled by the parameter RMS, update clipping (torch.optim.Adafactor)."""

    schema = ADAFACTOR_SCHEMA

    def __init__(self, params: Any, lr: float | Tensor = 1e-2, beta2_decay: float = -0.8,
                 eps: tuple[float | None, float] = (None, 1e-3), d: float = 1.0,
                 weight_decay: float = 0.0, *, foreach: bool | None = None, maximize: bool = False) -> None:
        defaults = dict(lr=lr, beta2_decay=beta2_decay, eps=eps, d=d, weight_decay=weight_decay,
                        foreach=foreach, maximize=maximize)
        def check() -> None:
            registry.check_values(defaults, self.schema)
            _check_eps(eps)

        super().__init__(check_like_torch(torch.optim.Adafactor, params, defaults, check), defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        registry.check_values(param_group, self.schema, "param group: ")
        if "eps" in param_group:
            _check_eps(param_group["eps"])
        super().add_param_group(param_group)

    def _init_state(self, st: Stack, group: Mapping[str, Any]) -> None:
        p, shape = st.params, st.shape
        if len(shape) > 1:
            st.state["row_var"] = p.new_zeros(st.k, *shape[:-1], 1)
            st.state["col_var"] = p.new_zeros(st.k, *shape[:-2], 1, shape[-1])
        else:
            st.state["variance"] = torch.zeros_like(p)

    def _param_state(self, st: Stack, i: int) -> dict[str, Tensor]:
        return {k: v[i] for k, v in st.state.items()}

    def _update(self, st: Stack, sl: slice, group: Mapping[str, Any], step: int) -> None:
        p, g = st.params[sl], st.grads[sl]
        k, shape = p.shape[0], st.shape
        if group["maximize"]:
            g = -g
        lr = float(group["lr"])
        eps1, eps2 = group["eps"]
        if eps1 is None:
            eps1 = torch.finfo(p.dtype).eps
        d, wd = group["d"], group["weight_decay"]
        one_minus_beta2 = float(step) ** group["beta2_decay"]
        rho = min(lr, 1 / (float(step) ** 0.5))
        root_n = math.prod(shape) ** 0.5
        # the step scale α = max(ε₂, RMS(p))·ρ, from the parameter before this update
        alpha = (_norms(p).double() / root_n).clamp(min=eps2) * rho
        if wd != 0:
            p.mul_(1 - lr * wd)
        if len(shape) > 1:
            row_var, col_var = st.state["row_var"][sl], st.state["col_var"][sl]
            row_var.lerp_(torch.norm(g, dim=-1, keepdim=True).square_().div_(shape[-1]), one_minus_beta2)
            col_var.lerp_(torch.norm(g, dim=-2, keepdim=True).square_().div_(shape[-2]), one_minus_beta2)
            var = row_var @ col_var
            var.div_(row_var.mean(dim=-2, keepdim=True).clamp_(min=eps1))
        else:
            variance = st.state["variance"][sl]
            variance.lerp_(g * g, one_minus_beta2)
            var = variance.clone()
        update = var.clamp_(min=eps1 * eps1).rsqrt_().mul_(g)
        denom = (_norms(update).double() / (root_n * d)).clamp(min=1.0)
        scale = (-alpha / denom).to(p.dtype).view(k, *([1] * len(shape)))
        p.addcmul_(update, scale)
