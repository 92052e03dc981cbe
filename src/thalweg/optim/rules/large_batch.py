"""LAMB and LARS, the large-batch rules, as named optimizers on the flat core: their per-tensor
trust ratios are one reduction per step over the flat buffers (see :mod:`.trust`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from thalweg.optim.engine.core import CompileMode, Rule
from thalweg.optim.registry import Hyperparameter as H
from thalweg.optim.transforms import (
    Chain,
    Hyper,
    ScaleByBiasCorrection,
    add_decayed_weights,
    scale_by_lr,
    trace,
)
from thalweg.optim.transforms.trust import ScaleByLars, ScaleByMoments, ScaleByTrustRatio

from .named import _BOOL, LR, _lr, _Named

__all__ = ["LAMB", "LARS"]

_B0, _B1 = Hyper("betas", 0), Hyper("betas", 1)


# ---------------------------------------------------------------------------- LAMB
LAMB_SCHEMA = (
    _lr(1e-3),
    H("betas", (0.9, 0.999), kind="betas", low=0.0, high=1.0, high_inclusive=False),
    H("eps", 1e-6, low=0.0),
    H("weight_decay", 0.0, low=0.0, help="added to the direction before the trust ratio"),
    H("clamp_value", 10.0, low=0.0, allow_inf=True, help="‖θ‖ is clamped to this in the trust ratio"),
    H("debias", False, **_BOOL, help="scale the step by Adam's bias correction √(1 − β₂ᵗ)/(1 − β₁ᵗ)"),
    H("exclude_vectors", False, **_BOOL,
      help="biases and norm gains (< 2-D) take Adam's step without trust ratio or decay (the paper's BERT setup)"),
)


class _LAMBRule(Rule):
    def key(self, g):
        return (g["weight_decay"] != 0, g["debias"], bool(g.get("vectors")))

    def build(self, g):
        ts = [ScaleByMoments(_B0, _B1, Hyper("eps"))]
        if g["weight_decay"] != 0:
            ts.append(add_decayed_weights(Hyper("weight_decay")))
        ts.append(ScaleByTrustRatio(Hyper("clamp_value"), adapt=not g.get("vectors")))
        if g["debias"]:
            ts.append(ScaleByBiasCorrection(_B0, _B1))
        return Chain([*ts, scale_by_lr(LR)])


class LAMB(_Named):
    """LAMB: Adam's direction (plus decay) rescaled per tensor by min(‖θ‖, clamp)/‖direction‖,
    for large batches (torch_optimizer.Lamb's signature and trajectories)."""

    schema = LAMB_SCHEMA

    def __init__(self, params: Any, lr: Any = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.0, clamp_value: float = 10.0, debias: bool = False,
                 exclude_vectors: bool = False, *, compile: CompileMode = "auto",
                 compile_options: Mapping[str, Any] | None = None) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, clamp_value=clamp_value,
                        debias=debias, exclude_vectors=exclude_vectors)
        super().__init__(params, _LAMBRule(), defaults, compile, compile_options)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """With `exclude_vectors`, a group's < 2-D tensors become a group of their own (marked
        `vectors`, no decay): Adam's step without the trust ratio."""
        exclude = param_group.get("exclude_vectors", self.defaults.get("exclude_vectors", False))
        params = param_group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        if not exclude or param_group.get("vectors") is not None:
            super().add_param_group({**param_group, "params": params})
            return
        mats, vecs = [p for p in params if p.dim() >= 2], [p for p in params if p.dim() < 2]
        if mats or not vecs:
            super().add_param_group({**param_group, "params": mats, "vectors": False})
        if vecs:
            super().add_param_group({**param_group, "params": vecs, "vectors": True, "weight_decay": 0.0})


# ---------------------------------------------------------------------------- LARS
LARS_SCHEMA = (
    _lr(1e-3),
    H("weight_decay", 0.0, low=0.0, help="added to the gradient of ≥2-D tensors before the trust ratio"),
    H("momentum", 0.9, low=0.0, high=1.0, high_inclusive=False),
    H("dampening", 0.0, low=0.0, high=1.0),
    H("trust_coefficient", 1e-3, low=0.0, help="η of the local rate η‖θ‖/(‖g‖ + λ‖θ‖)"),
    H("nesterov", False, **_BOOL),
    H("maximize", False, **_BOOL),
)


class _LARSRule(Rule):
    def key(self, g):
        return (g["maximize"], g["momentum"] > 0, g["nesterov"])

    def build(self, g):
        ts = [ScaleByLars(Hyper("weight_decay"), Hyper("trust_coefficient"), g["maximize"])]
        if g["momentum"] > 0:
            ts.append(trace(Hyper("momentum"), Hyper("dampening"), g["nesterov"], zero_start=True))
        return Chain([*ts, scale_by_lr(LR)])


class LARS(_Named):
    """LARS: momentum SGD on the gradient rescaled per ≥2-D tensor by η‖θ‖/(‖g‖ + λ‖θ‖), for
    large batches; vectors take plain momentum SGD (pytorch_optimizer.LARS's trajectories)."""

    schema = LARS_SCHEMA

    def __init__(self, params: Any, lr: Any = 1e-3, weight_decay: float = 0.0, momentum: float = 0.9,
                 dampening: float = 0.0, trust_coefficient: float = 1e-3, nesterov: bool = False, *,
                 maximize: bool = False, compile: CompileMode = "auto",
                 compile_options: Mapping[str, Any] | None = None) -> None:
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, dampening=dampening,
                        trust_coefficient=trust_coefficient, nesterov=nesterov, maximize=maximize)
        super().__init__(params, _LARSRule(), defaults, compile, compile_options)
