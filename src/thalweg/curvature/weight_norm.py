"""Exact second derivatives through weight norm: torch's fused `_weight_norm` kernel has a
wrong (asymmetric) second derivative on CPU and no forward-mode AD, so Hessian-vector
products route it through the same formula written in differentiable primitives."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

__all__ = ["composite_weight_norm", "uses_weight_norm"]


def _weight_norm_composite(v: Tensor, g: Tensor, dim: int = 0) -> Tensor:
    """w = g·v/‖v‖ from differentiable primitives. torch's fused `_weight_norm` kernel has a
    wrong (asymmetric) second derivative on CPU and no forward-mode AD; its gradient is fine."""
    return v * (g / torch.norm_except_dim(v, 2, dim))


@contextlib.contextmanager
def composite_weight_norm() -> Iterator[None]:
    """Route weight-norm layers (both torch APIs) through `_weight_norm_composite` while active:
    wrap any double-backward / forward-over-reverse through a weight-normed model in this."""
    wn_module = importlib.import_module("torch.nn.utils.weight_norm")  # the module, not the function
    saved = (torch._weight_norm, wn_module._weight_norm)
    torch._weight_norm = wn_module._weight_norm = _weight_norm_composite  # type: ignore[assignment]
    try:
        yield
    finally:
        torch._weight_norm, wn_module._weight_norm = saved  # type: ignore[assignment]


def uses_weight_norm(model: nn.Module) -> bool:
    from torch.nn.utils.weight_norm import WeightNorm

    return any(type(m).__name__ == "_WeightNorm" or any(isinstance(h, WeightNorm) for h in m._forward_pre_hooks.values())
               for m in model.modules())
