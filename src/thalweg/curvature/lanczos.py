"""Extreme eigenvalues of a Hessian from a few dozen HVPs: `eigs` drives the Lanczos process of
`thalweg.linalg` (full reorthogonalization) and reports Ritz vectors, honest residual norms
‖Hy − θy‖, converged flags and the HVP count.

Residuals are computed from the stored products W = H·V (y = Vᵀs ⇒ Hy = Wᵀs), so they measure
the operator itself, not the three-term recurrence — and cost no extra products.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from thalweg.linalg import Lanczos, tridiagonal_eigh

__all__ = ["EigResult", "Lanczos", "eigs"]

Which = Literal["largest", "smallest", "both"]


@dataclass
class EigResult:
    """Extreme eigenpairs with their evidence: residual norms, converged flags and HVP count.

    ``eigenvalues`` is descending for "largest", ascending for "smallest", and for "both" the k
    largest (descending) followed by the k smallest (ascending). ``eigenvectors`` is (n, k).
    """

    eigenvalues: Tensor
    residuals: Tensor
    converged: Tensor
    num_hvps: int
    iterations: int
    which: str
    tol: float
    scale: float
    eigenvectors: Tensor | None = None
    ritz_values: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)

    @property
    def all_converged(self) -> bool:
        return bool(self.converged.all())

    def to_dict(self) -> dict[str, Any]:
        return {
            "which": self.which, "eigenvalues": self.eigenvalues.tolist(), "residuals": self.residuals.tolist(),
            "converged": self.converged.tolist(), "num_hvps": self.num_hvps, "iterations": self.iterations,
            "tol": self.tol, "scale": self.scale,
        }


def _wanted(theta: np.ndarray, k: int, which: str) -> np.ndarray:
    m = len(theta)
    k = min(k, m)
    top = np.arange(m - 1, m - 1 - k, -1)
    bottom = np.arange(0, k)
    if which == "largest":
        return top
    if which == "smallest":
        return bottom
    if 2 * k > m:  # the two ends overlap: report every Ritz value once, largest first
        return np.arange(m - 1, -1, -1)
    return np.concatenate([top, bottom])


def _latest_block_settled(lz: Lanczos, which: str, bound: float) -> bool:
    """After a breakdown the newest block explores the rest of the space: wait until its
    extreme Ritz pair(s) on the wanted side have converged too (they may be repeated eigenvalues)."""
    b0 = lz.block_starts[-1]
    if b0 == 0:
        return True
    d = np.asarray(lz.alpha[b0:])
    if len(d) == 0:  # the new block has not started yet
        return False
    e = np.asarray(lz.beta[b0 : lz.m - 1])
    s = tridiagonal_eigh(d, e)[1]
    beta = lz.beta[lz.m - 1] if len(lz.beta) >= lz.m else 0.0
    ends = {"largest": [-1], "smallest": [0], "both": [0, -1]}[which]
    return all(abs(beta * s[-1, i]) <= bound for i in ends)


def eigs(
    op: Any,
    k: int = 1,
    which: Which = "largest",
    tol: float = 1e-6,
    *,
    max_iter: int | None = None,
    return_eigenvectors: bool = False,
    seed: int = 0,
    v0: Tensor | None = None,
) -> EigResult:
    """The k largest/smallest (or both) eigenvalues of a symmetric operator by Lanczos.

    Stops when every wanted Ritz pair has ‖Hy − θy‖ ≤ tol·max|θ| (so |θ − λ| ≤ that bound for
    some eigenvalue λ), or after `max_iter` HVPs (default min(dim, 300)).
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if which not in ("largest", "smallest", "both"):
        raise ValueError(f"which must be 'largest', 'smallest' or 'both'; got {which!r}")
    if not (isinstance(tol, float | int) and tol > 0):
        raise ValueError(f"tol must be a positive number, got {tol!r}")
    lz = Lanczos(op, v0, max_iter=max_iter, seed=seed)
    if k > lz.n:
        raise ValueError(f"k={k} exceeds the operator dimension {lz.n}")
    need = min(lz.n, k if which != "both" else 2 * k)
    while True:
        lz.step()
        if lz.m < need and not lz.done:
            continue
        theta, s = lz.ritz()
        idx = _wanted(theta, k, which)
        scale = float(np.max(np.abs(theta))) or 1.0
        # cheap recurrence estimate |β_m s_{m,i}| first; honest residuals only when it says done
        beta = lz.beta[lz.m - 1] if len(lz.beta) >= lz.m else 0.0
        if not lz.done and not (np.abs(beta * s[-1, idx]) <= tol * scale).all():
            continue
        res = lz.residuals(theta[idx], s[:, idx])
        ok = res <= tol * scale
        if lz.done or (ok.all() and _latest_block_settled(lz, which, tol * scale)):
            break
    vecs = lz.vectors(s[:, idx]) if return_eigenvectors else None
    return EigResult(
        eigenvalues=torch.as_tensor(theta[idx]), residuals=torch.as_tensor(res), converged=torch.as_tensor(ok),
        num_hvps=lz.num_hvps, iterations=lz.m, which=which, tol=float(tol), scale=scale,
        eigenvectors=vecs, ritz_values=theta,
    )
