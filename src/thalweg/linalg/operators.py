"""The `LinearOperator` protocol every solver here takes, a dense-matrix operator, and
`as_operator`, which turns a square tensor or any object with a `matvec` into one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = ["LinearOperator", "MatrixOperator", "as_operator", "matvec_of"]


@runtime_checkable
class LinearOperator(Protocol):
    """A square linear map on flat vectors: what Lanczos, CG and the trace estimators need.

    `matvec(v)` takes and returns a vector of length `dim`; `matmat(V)` maps an (dim, k)
    block column by column (batched where the operator can do better than a loop).
    """

    @property
    def shape(self) -> tuple[int, int]: ...

    @property
    def dim(self) -> int: ...

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def device(self) -> torch.device: ...

    def matvec(self, v: Tensor) -> Tensor: ...

    def matmat(self, V: Tensor) -> Tensor: ...


class MatrixOperator:
    """A dense square matrix behind the `LinearOperator` interface (tests, small problems)."""

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
        """A @ v (one product counted)."""
        self.num_matvecs += 1
        return self.matrix @ v.to(self.dtype)

    def matmat(self, V: Tensor) -> Tensor:
        """A @ V for an (dim, k) block (k products counted)."""
        self.num_matvecs += int(V.shape[1])
        return self.matrix @ V.to(self.dtype)

    def dense(self) -> Tensor:
        """A copy of the matrix."""
        return self.matrix.clone()


class _Wrapped:
    """Completes a duck-typed operator (`matvec` plus `dim` or `shape`) to the full protocol;
    products go through the wrapped object, so its own counters keep counting."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj
        self.dim = int(obj.shape[0]) if hasattr(obj, "shape") else int(obj.dim)
        self.dtype = getattr(obj, "dtype", torch.float64)
        self.device = torch.device(getattr(obj, "device", "cpu"))

    @property
    def shape(self) -> tuple[int, int]:
        return (self.dim, self.dim)

    def matvec(self, v: Tensor) -> Tensor:
        return self.obj.matvec(v)

    def matmat(self, V: Tensor) -> Tensor:
        if hasattr(self.obj, "matmat"):
            return self.obj.matmat(V)
        return torch.stack([self.obj.matvec(V[:, j]) for j in range(V.shape[1])], dim=1)


def as_operator(obj: Any) -> LinearOperator:
    """A `LinearOperator` for a square tensor, a full operator, or anything with `matvec` and
    `dim` (or `shape`); dtype defaults to float64 and device to CPU when the object has none."""
    if isinstance(obj, Tensor):
        return MatrixOperator(obj)
    if isinstance(obj, LinearOperator):
        return obj
    if hasattr(obj, "matvec") and (hasattr(obj, "dim") or hasattr(obj, "shape")):
        return _Wrapped(obj)
    raise TypeError(f"op must be a linear operator (matvec and dim/shape) or a square tensor; got {type(obj).__name__}")


def matvec_of(A: LinearOperator | Tensor | Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """The product v ↦ A v for an operator, a square tensor or a plain function."""
    if isinstance(A, Tensor):
        return MatrixOperator(A).matvec
    if hasattr(A, "matvec"):
        return A.matvec
    if callable(A):
        return A
    raise TypeError(f"A must be a linear operator, a square tensor or a callable v -> A v; got {type(A).__name__}")
