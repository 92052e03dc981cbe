"""Eigenvalue density of the Hessian by stochastic Lanczos quadrature (SLQ): each Rademacher
probe's Lanczos tridiagonal gives nodes θ_i and weights s_{1i}², smoothed by Gaussians."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thalweg.linalg import as_operator, lanczos, rademacher

__all__ = ["DensityResult", "density", "plot_density"]


@dataclass
class DensityResult:
    """A smoothed spectral density on a grid (integrates to 1), with the raw quadrature nodes."""

    grid: np.ndarray
    density: np.ndarray
    nodes: list[np.ndarray]
    weights: list[np.ndarray]
    sigma: float
    num_hvps: int
    steps: int
    extras: dict[str, Any] = field(default_factory=dict)

    def moment(self, p: int = 1) -> float:
        """The p-th spectral moment (1/n)·tr(Hᵖ) estimated by the quadrature (unsmoothed)."""
        return float(np.mean([np.sum(w * t**p) for t, w in zip(self.nodes, self.weights, strict=True)]))

    def to_dict(self) -> dict[str, Any]:
        return {"grid": self.grid.tolist(), "density": self.density.tolist(), "sigma": self.sigma,
                "num_hvps": self.num_hvps, "steps": self.steps,
                "nodes": [t.tolist() for t in self.nodes], "weights": [w.tolist() for w in self.weights]}


def density(
    op: Any,
    steps: int = 80,
    num_probes: int = 1,
    *,
    grid_size: int = 1000,
    sigma: float | None = None,
    seed: int = 0,
) -> DensityResult:
    """Stochastic Lanczos quadrature with `num_probes` probes of `steps` HVPs each.

    `sigma` (default 1% of the spectral range) is the Gaussian broadening of each node.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if not isinstance(num_probes, int) or num_probes < 1:
        raise ValueError(f"num_probes must be a positive int, got {num_probes!r}")
    if not isinstance(grid_size, int) or grid_size < 2:
        raise ValueError(f"grid_size must be an int >= 2, got {grid_size!r}")
    if sigma is not None and not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma!r}")
    op = as_operator(op)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    nodes, weights, hvps = [], [], 0
    for _ in range(num_probes):
        lz = lanczos(op, rademacher(int(op.dim), gen), steps=steps)
        theta, s = lz.ritz()
        nodes.append(np.asarray(theta))
        weights.append(np.asarray(s[0, :]) ** 2)
        hvps += lz.num_hvps
    lo = min(float(t.min()) for t in nodes)
    hi = max(float(t.max()) for t in nodes)
    span = max(hi - lo, 1e-12 * max(abs(hi), 1.0), 1e-12)
    sig = float(sigma) if sigma is not None else 0.01 * span
    grid = np.linspace(lo - 0.05 * span - 3 * sig, hi + 0.05 * span + 3 * sig, grid_size)
    dens = np.zeros_like(grid)
    for t, w in zip(nodes, weights, strict=True):
        z = (grid[:, None] - t[None, :]) / sig
        dens += (np.exp(-0.5 * z**2) / (sig * np.sqrt(2 * np.pi))) @ w
    dens /= num_probes
    return DensityResult(grid, dens, nodes, weights, sig, hvps, steps)


def plot_density(result: DensityResult, path: str | Path, *, title: str | None = None, log: bool = True) -> Path:
    """Save the density as a PNG (log scale by default, so outliers and the bulk both show)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    y = np.maximum(result.density, 1e-12) if log else result.density
    ax.fill_between(result.grid, y, 1e-12 if log else 0, color="#3b6ea8", alpha=0.25)
    ax.plot(result.grid, y, color="#1f4e79", lw=1.2)
    if log:
        ax.set_yscale("log")
        top = float(y.max())
        ax.set_ylim(max(top * 1e-8, 1e-12), top * 3)
    ax.axvline(0.0, color="0.5", lw=0.8, ls="--")
    ax.set_xlabel("eigenvalue λ")
    ax.set_ylabel("density" + (" (log)" if log else ""))
    import textwrap

    text = title or f"Hessian spectral density (SLQ: {len(result.nodes)} probe(s) × {result.steps} steps)"
    ax.set_title("\n".join(textwrap.wrap(text, 64)), fontsize=10)  # a long title wraps, never runs off
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
