"""Lanczos with full reorthogonalization: extreme eigenvalues of a Hessian from a few dozen HVPs,
with Ritz vectors, honest residual norms ‖Hy − θy‖, converged flags and the HVP count.

Residuals are computed from the stored products W = H·V (y = Vᵀs ⇒ Hy = Wᵀs), so they measure
the operator itself, not the three-term recurrence — and cost no extra products.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal
from torch import Tensor

from thalweg.curvature.hvp import as_operator, rademacher

__all__ = ["EigResult", "Lanczos", "eigs"]

Which = Literal["largest", "smallest", "both"]


class Lanczos:
    """Incremental Lanczos process on a symmetric operator (float64 basis, reorthogonalized twice).

    `step()` spends one HVP; `ritz()` gives Ritz values, the eigenvectors of T, and (optionally)
    Ritz vectors and true residual norms for chosen indices.
    """

    def __init__(self, op: Any, v0: Tensor | None = None, *, max_iter: int | None = None, seed: int = 0,
                 store_products: bool = True) -> None:
        self.op = as_operator(op)
        n = int(self.op.dim)
        self.n = n
        self.max_iter = min(n, 300 if max_iter is None else int(max_iter))
        if self.max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {max_iter}")
        self.gen = torch.Generator(device="cpu").manual_seed(int(seed))
        dev = getattr(self.op, "device", torch.device("cpu"))
        self.device = torch.device(dev)
        cap = min(self.max_iter, 32)  # storage grows by doubling: memory follows the steps taken
        self.V = torch.zeros(cap, n, dtype=torch.float64, device=self.device)
        self.W = torch.zeros_like(self.V) if store_products else None
        self.alpha: list[float] = []
        self.beta: list[float] = []  # beta[j] couples q_j and q_{j+1}
        self.num_hvps = 0
        self.block_starts = [0]  # a new block begins after each breakdown (β = 0)
        # β below this (relative to ‖T‖) means the space is invariant up to the operator's rounding
        op_dtype = getattr(self.op, "dtype", torch.float64)
        self.break_tol = max(1e-10, 100 * torch.finfo(op_dtype).eps)
        q = rademacher(n, self.gen).to(self.device) if v0 is None else v0.detach().reshape(-1).to(self.device, torch.float64)
        if q.numel() != n:
            raise ValueError(f"v0 has {q.numel()} entries but the operator has dim={n}")
        nrm = float(q.norm())
        if not np.isfinite(nrm) or nrm == 0.0:
            raise ValueError("v0 must be a nonzero finite vector")
        self._next = q / nrm

    @property
    def m(self) -> int:
        return len(self.alpha)

    @property
    def done(self) -> bool:
        return self.m >= self.max_iter or self._next is None

    def step(self) -> None:
        """One Lanczos step: one HVP, then two passes of Gram–Schmidt against the whole basis."""
        if self.done:
            raise RuntimeError("Lanczos basis is complete (max_iter reached or invariant space of full dim)")
        j, q = self.m, self._next
        if j == len(self.V):
            cap = min(self.max_iter, 2 * len(self.V))
            self.V = torch.cat([self.V, self.V.new_zeros(cap - len(self.V), self.n)])
            if self.W is not None:
                self.W = torch.cat([self.W, self.W.new_zeros(cap - len(self.W), self.n)])
        self.V[j] = q
        w = self.op.matvec(q.to(getattr(self.op, "dtype", torch.float64))).to(torch.float64).reshape(-1)
        self.num_hvps += 1
        if not bool(torch.isfinite(w).all()):
            raise FloatingPointError(f"Hessian-vector product returned non-finite values at Lanczos step {j}")
        if self.W is not None:
            self.W[j] = w
        a = float(q @ w)
        basis = self.V[: j + 1]
        for _ in range(2):
            w = w - basis.T @ (basis @ w)
        self.alpha.append(a)
        b = float(w.norm())
        scale = max(abs(x) for x in self.alpha) + (max(self.beta) if self.beta else 0.0)
        if j + 1 >= self.n:
            self._next = None
            return
        if b <= self.break_tol * max(scale, 1e-300):
            # (numerically) invariant subspace: a single Krylov space cannot see the other copies
            # of a repeated eigenvalue, so continue from a fresh Gaussian direction (a new block)
            for _ in range(8):
                r = torch.randn(self.n, generator=self.gen, dtype=torch.float64).to(self.device)
                r0 = float(r.norm())
                for _ in range(2):
                    r = r - basis.T @ (basis @ r)
                if float(r.norm()) > 1e-6 * r0:
                    break
            self.beta.append(0.0)
            self.block_starts.append(j + 1)
            self._next = r / r.norm()
        else:
            self.beta.append(b)
            self._next = w / b

    def tridiagonal(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.alpha), np.asarray(self.beta[: self.m - 1])

    def ritz(self) -> tuple[np.ndarray, np.ndarray]:
        """Ritz values (ascending) and the eigenvectors S of the tridiagonal T (columns)."""
        d, e = self.tridiagonal()
        if self.m == 1:
            return d.copy(), np.ones((1, 1))
        return eigh_tridiagonal(d, e)

    def vectors(self, s: np.ndarray) -> Tensor:
        """Ritz vectors Vᵀs for the columns of s, as an (n, k) float64 tensor."""
        S = torch.as_tensor(s, dtype=torch.float64, device=self.device)
        return self.V[: self.m].T @ S

    def residuals(self, theta: np.ndarray, s: np.ndarray) -> np.ndarray:
        """‖H y − θ y‖ for Ritz pairs (θ_i, y_i = Vᵀ s_i), from the stored products W = H V."""
        if self.W is None:
            raise RuntimeError("residuals need store_products=True")
        S = torch.as_tensor(s, dtype=torch.float64, device=self.device)
        Y = self.V[: self.m].T @ S
        HY = self.W[: self.m].T @ S
        th = torch.as_tensor(theta, dtype=torch.float64, device=self.device)
        return (HY - Y * th).norm(dim=0).cpu().numpy()

    def rayleigh(self, s: np.ndarray) -> np.ndarray:
        """Rayleigh quotients yᵀHy/yᵀy of Ritz vectors, from the stored products."""
        S = torch.as_tensor(s, dtype=torch.float64, device=self.device)
        Y, HY = self.V[: self.m].T @ S, self.W[: self.m].T @ S  # type: ignore[index]
        return ((Y * HY).sum(0) / (Y * Y).sum(0)).cpu().numpy()


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
    s = np.ones((1, 1)) if len(d) == 1 else eigh_tridiagonal(d, e)[1]
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
