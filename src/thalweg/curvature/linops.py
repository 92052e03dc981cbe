"""Small linear-operator helpers shared by the curvature tools: Rademacher probes, a dense
matrix behind the `matvec` interface, and exact second derivatives through weight norm."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["MatrixOperator", "as_operator", "composite_weight_norm", "rademacher", "uses_weight_norm"]


def rademacher(
    shape: int | Sequence[int],
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    """Independent ±1 entries with probability ½ each: the Hutchinson / SLQ probe, E[zzᵀ] = I."""
    size = (shape,) if isinstance(shape, int) else tuple(shape)
    where = generator.device if generator is not None else device  # draw where the generator lives
    bits = torch.randint(0, 2, size, generator=generator, device=where)
    return (bits * 2 - 1).to(dtype=dtype, device=device)


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


class MatrixOperator:
    """A dense symmetric matrix behind the same `matvec` interface (tests, small problems)."""

    def __init__(self, matrix: Tensor) -> None:
        if not isinstance(matrix, Tensor) or matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"matrix must be a square 2-D tensor, got {getattr(matrix, 'shape', type(matrix))}")
        self.matrix = matrix
        self.dim = int(matrix.shape[0])
        self.dtype = matrix.dtype
        self.device = matrix.device
        self.num_matvecs = 0

    @property
    def shape(self) -> tuple[int, int]:
        return (self.dim, self.dim)

    def matvec(self, v: Tensor) -> Tensor:
        self.num_matvecs += 1
        return self.matrix @ v.to(self.dtype)

    def dense(self) -> Tensor:
        return self.matrix.clone()


def as_operator(obj: Any) -> Any:
    """Accept a `HessianOperator`, anything with `.matvec`/`.dim`, or a square tensor."""
    if isinstance(obj, Tensor):
        return MatrixOperator(obj)
    if hasattr(obj, "matvec") and hasattr(obj, "dim"):
        return obj
    raise TypeError(f"op must be a HessianOperator, an object with matvec/dim, or a square tensor; got {type(obj).__name__}")
