"""Numerical linear algebra for second-order methods, shared by `thalweg.curvature` and the
second-order optimizers: Hessian-vector products from a gradient graph (batched), the dense
Hessian, Lanczos, conjugate gradients, Rademacher probes and the `LinearOperator` protocol.

Torch only (SciPy's tridiagonal eigensolver for Ritz values); imports nothing else of thalweg.
"""

from thalweg.linalg.autodiff import (
    GraphHessian,
    dense_hessian,
    flatten,
    grad_graph,
    grad_graph_reached,
    hvp_from_graph,
    unflatten,
)
from thalweg.linalg.cg import CGResult, cg
from thalweg.linalg.lanczos import Lanczos, lanczos, tridiagonal_eigh
from thalweg.linalg.operators import (
    LinearOperator,
    MatrixOperator,
    OperatorBase,
    as_operator,
    matvec_of,
)
from thalweg.linalg.probes import rademacher

__all__ = [
    "CGResult",
    "GraphHessian",
    "Lanczos",
    "LinearOperator",
    "MatrixOperator",
    "OperatorBase",
    "as_operator",
    "cg",
    "dense_hessian",
    "flatten",
    "grad_graph",
    "grad_graph_reached",
    "hvp_from_graph",
    "lanczos",
    "matvec_of",
    "rademacher",
    "tridiagonal_eigh",
    "unflatten",
]
