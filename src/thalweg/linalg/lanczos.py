"""The Lanczos process on a symmetric operator, with full (twice-repeated) reorthogonalization.

One class serves both users: the curvature eigensolvers (float64 basis, stored products H·V for
honest residuals ‖Hy − θy‖, a fresh block after each breakdown so repeated eigenvalues show
their copies) and Newton's Krylov solver (basis in the operator's dtype, stop at an invariant
subspace, the basis Q and the tridiagonal T = Q H Qᵀ).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from thalweg.linalg.operators import as_operator
from thalweg.linalg.probes import rademacher

__all__ = ["Lanczos", "lanczos", "tridiagonal_eigh"]


def tridiagonal_eigh(d: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and eigenvectors (columns) of the symmetric tridiagonal matrix
    with diagonal d and off-diagonal e (LAPACK through SciPy; any size ≥ 1)."""
    if len(d) == 1:
        return np.asarray(d, dtype=float).copy(), np.ones((1, 1))
    from scipy.linalg import eigh_tridiagonal

    return eigh_tridiagonal(d, e)


class Lanczos:
    """Incremental Lanczos process: `step()` spends one product, `ritz()` gives the Ritz values
    and the eigenvectors of T, `vectors`/`residuals`/`rayleigh` the Ritz vectors' evidence.

    The start is `v0` (any nonzero vector, normalized) or a Rademacher probe from `seed`. On a
    breakdown (β ≤ tol·‖T‖: the Krylov space is invariant) ``restart=True`` continues from a
    fresh Gaussian direction orthogonal to the basis (a new block, β = 0); ``restart=False``
    ends the process there. `dtype` is the basis's precision.
    """

    def __init__(self, op: Any, v0: Tensor | None = None, *, max_iter: int | None = None, seed: int = 0,
                 store_products: bool = True, restart: bool = True, dtype: torch.dtype = torch.float64) -> None:
        self.op = as_operator(op)
        n = int(self.op.dim)
        self.n, self.dtype, self.restart = n, dtype, restart
        self.max_iter = min(n, 300 if max_iter is None else int(max_iter))
        if self.max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {max_iter}")
        self.gen = torch.Generator(device="cpu").manual_seed(int(seed))
        self.device = torch.device(self.op.device)
        cap = min(self.max_iter, 32)  # storage grows by doubling: memory follows the steps taken
        self.V = torch.zeros(cap, n, dtype=dtype, device=self.device)
        self.W = torch.zeros_like(self.V) if store_products else None
        self.alpha: list[float] = []
        self.beta: list[float] = []  # beta[j] couples q_j and q_{j+1}
        self.num_hvps = 0
        self.block_starts = [0]  # a new block begins after each breakdown (β = 0)
        # β below this (relative to ‖T‖) means the space is invariant up to the operator's rounding
        self.break_tol = max(1e-10, 100 * torch.finfo(self.op.dtype).eps)
        if v0 is None:
            q = rademacher(n, self.gen, dtype=dtype).to(self.device)
        else:
            q = v0.detach().reshape(-1).to(self.device, dtype)
        if q.numel() != n:
            raise ValueError(f"v0 has {q.numel()} entries but the operator has dim={n}")
        nrm = float(q.norm())
        if not np.isfinite(nrm) or nrm == 0.0:
            raise ValueError("v0 must be a nonzero finite vector")
        self._next: Tensor | None = q / nrm

    @property
    def m(self) -> int:
        """Steps taken (= products spent = size of T)."""
        return len(self.alpha)

    @property
    def done(self) -> bool:
        return self.m >= self.max_iter or self._next is None

    @property
    def basis(self) -> Tensor:
        """The orthonormal Lanczos vectors as rows, (m, n)."""
        return self.V[: self.m]

    def step(self) -> None:
        """One Lanczos step: one product, then two passes of Gram–Schmidt against the whole basis."""
        if self.done:
            raise RuntimeError("Lanczos basis is complete (max_iter reached or invariant space of full dim)")
        j, q = self.m, self._next
        assert q is not None
        if j == len(self.V):
            cap = min(self.max_iter, 2 * len(self.V))
            self.V = torch.cat([self.V, self.V.new_zeros(cap - len(self.V), self.n)])
            if self.W is not None:
                self.W = torch.cat([self.W, self.W.new_zeros(cap - len(self.W), self.n)])
        self.V[j] = q
        w = self.op.matvec(q.to(self.op.dtype)).to(self.dtype).reshape(-1)
        self.num_hvps += 1
        if not bool(torch.isfinite(w).all()):
            raise FloatingPointError(f"Hessian-vector product returned non-finite values at Lanczos step {j}")
        if self.W is not None:
            self.W[j] = w
        a = float(q @ w)
        basis = self.V[: j + 1]
        for _ in range(2):  # twice is enough (Kahan–Parlett)
            w = w - basis.T @ (basis @ w)
        self.alpha.append(a)
        b = float(w.norm())
        scale = max(abs(x) for x in self.alpha) + (max(self.beta) if self.beta else 0.0)
        if j + 1 >= self.n:
            self._next = None
            return
        if b <= self.break_tol * max(scale, 1e-300):
            if not self.restart:
                self._next = None
                return
            # (numerically) invariant subspace: a single Krylov space cannot see the other copies
            # of a repeated eigenvalue, so continue from a fresh Gaussian direction (a new block)
            for _ in range(8):
                r = torch.randn(self.n, generator=self.gen, dtype=self.dtype).to(self.device)
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

    def run(self) -> Lanczos:
        """Step until `max_iter` products or an invariant subspace; returns self."""
        while not self.done:
            self.step()
        return self

    def tridiagonal(self) -> tuple[np.ndarray, np.ndarray]:
        """The diagonal α (m) and off-diagonal β (m − 1) of T."""
        return np.asarray(self.alpha), np.asarray(self.beta[: self.m - 1])

    def tridiagonal_matrix(self) -> Tensor:
        """T = Q H Qᵀ as a dense (m, m) tensor in the basis dtype."""
        a = torch.tensor(self.alpha, dtype=self.dtype, device=self.device)
        t = torch.diag(a)
        if self.m > 1:
            b = torch.tensor(self.beta[: self.m - 1], dtype=self.dtype, device=self.device)
            t = t + torch.diag(b, 1) + torch.diag(b, -1)
        return t

    def ritz(self) -> tuple[np.ndarray, np.ndarray]:
        """Ritz values (ascending) and the eigenvectors S of the tridiagonal T (columns)."""
        return tridiagonal_eigh(*self.tridiagonal())

    def vectors(self, s: np.ndarray) -> Tensor:
        """Ritz vectors Vᵀs for the columns of s, as an (n, k) tensor."""
        S = torch.as_tensor(s, dtype=self.dtype, device=self.device)
        return self.V[: self.m].T @ S

    def residuals(self, theta: np.ndarray, s: np.ndarray) -> np.ndarray:
        """‖H y − θ y‖ for Ritz pairs (θ_i, y_i = Vᵀ s_i), from the stored products W = H V."""
        if self.W is None:
            raise RuntimeError("residuals need store_products=True")
        S = torch.as_tensor(s, dtype=self.dtype, device=self.device)
        Y = self.V[: self.m].T @ S
        HY = self.W[: self.m].T @ S
        th = torch.as_tensor(theta, dtype=self.dtype, device=self.device)
        return (HY - Y * th).norm(dim=0).cpu().numpy()

    def rayleigh(self, s: np.ndarray) -> np.ndarray:
        """Rayleigh quotients yᵀHy/yᵀy of Ritz vectors, from the stored products."""
        if self.W is None:
            raise RuntimeError("Rayleigh quotients need store_products=True")
        S = torch.as_tensor(s, dtype=self.dtype, device=self.device)
        Y, HY = self.V[: self.m].T @ S, self.W[: self.m].T @ S
        return ((Y * HY).sum(0) / (Y * Y).sum(0)).cpu().numpy()


def lanczos(op: Any, v0: Tensor | None = None, *, steps: int, seed: int = 0, store_products: bool = False,
            restart: bool = True, dtype: torch.dtype = torch.float64) -> Lanczos:
    """Run `steps` Lanczos steps (fewer at an invariant subspace with ``restart=False``, or at
    the operator's dimension) and return the finished process: `basis`, `tridiagonal()`, `ritz()`."""
    return Lanczos(op, v0, max_iter=steps, seed=seed, store_products=store_products, restart=restart,
                   dtype=dtype).run()
