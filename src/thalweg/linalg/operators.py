"""The `LinearOperator` protocol every solver here takes, a dense-matrix operator, and
`as_operator`, which turns a square tensor or any object with a `matvec` into one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = ["LinearOperator", "MatrixOperator", "OperatorBase", "as_operator", "matvec_of"]


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


class OperatorBase:
    """A square operator's bookkeeping: `shape` from `dim`, the product counter `num_matvecs`,
    and `matvec`/`matmat` that check, count and hand over to `_matvec`/`_matmat`."""

    def __init__(self, dim: int, dtype: torch.dtype, device: torch.device | str) -> None:
        self.dim, self.dtype, self.device = int(dim), dtype, torch.device(device)
        self.num_matvecs = 0

    @property
    def shape(self) -> tuple[int, int]:
        return (self.dim, self.dim)

    def matvec(self, v: Tensor) -> Tensor:
        """A·v for a flat vector of length `dim` (one product counted)."""
        v = self._check_vector(v)
        self.num_matvecs += 1
        return self._matvec(v)

    def matmat(self, V: Tensor) -> Tensor:
        """A·V for a (dim, k) block (k products counted)."""
        if not isinstance(V, Tensor) or V.ndim != 2 or V.shape[0] != self.dim:
            raise ValueError(f"V must be a ({self.dim}, k) tensor, got {getattr(V, 'shape', type(V))}")
        self.num_matvecs += int(V.shape[1])
        return self._matmat(V.to(device=self.device, dtype=self.dtype))

    def _check_vector(self, v: Tensor) -> Tensor:
        if not isinstance(v, Tensor):
            raise TypeError(f"v must be a torch.Tensor, got {type(v).__name__}")
        if v.numel() != self.dim:
            raise ValueError(f"v has {v.numel()} entries but the operator has dim={self.dim}")
        return v.reshape(-1).to(device=self.device, dtype=self.dtype)

    def _matvec(self, v: Tensor) -> Tensor:
        raise NotImplementedError

    def _matmat(self, V: Tensor) -> Tensor:
        return torch.stack([self._matvec(V[:, j]) for j in range(V.shape[1])], dim=1)


class MatrixOperator(OperatorBase):
    """A dense square matrix behind the `LinearOperator` interface (tests, small problems)."""

    def __init__(self, matrix: Tensor) -> None:
        if not isinstance(matrix, Tensor) or matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"matrix must be a square 2-D tensor, got {getattr(matrix, 'shape', type(matrix))}")
        super().__init__(int(matrix.shape[0]), matrix.dtype, matrix.device)
        self.matrix = matrix

    def _matvec(self, v: Tensor) -> Tensor:
        return self.matrix @ v

    def _matmat(self, V: Tensor) -> Tensor:
        return self.matrix @ V

    def dense(self) -> Tensor:
        """A copy of the matrix."""
        return self.matrix.clone()


class _Wrapped(OperatorBase):
    """Completes a duck-typed operator (`matvec` plus `dim` or `shape`) to the full protocol;
    products go through the wrapped object, so its own counters keep counting."""

    def __init__(self, obj: Any) -> None:
        dim = int(obj.shape[0]) if hasattr(obj, "shape") else int(obj.dim)
        super().__init__(dim, getattr(obj, "dtype", torch.float64), getattr(obj, "device", "cpu"))
        self.obj = obj

    def matvec(self, v: Tensor) -> Tensor:
        return self.obj.matvec(v)

    def _matvec(self, v: Tensor) -> Tensor:
        return self.obj.matvec(v)

    def _matmat(self, V: Tensor) -> Tensor:
        return self.obj.matmat(V) if hasattr(self.obj, "matmat") else super()._matmat(V)


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
