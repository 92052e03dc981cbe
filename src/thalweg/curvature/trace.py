"""Hessian trace by randomized probing: Hutchinson (E[zᵀHz] = tr H for Rademacher z) and Hutch++
(exact trace on a sketched top subspace + Hutchinson on the rest), each with a standard error."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from thalweg.linalg import as_operator, rademacher

__all__ = ["TraceResult", "trace"]


@dataclass
class TraceResult:
    """A trace estimate, its standard error (from the random part), and the HVPs spent."""

    estimate: float
    stderr: float
    num_hvps: int
    method: str
    samples: list[float] = field(default_factory=list, repr=False)
    deterministic_part: float = 0.0  # Hutch++: tr(QᵀHQ) over the sketched subspace

    def to_dict(self) -> dict[str, Any]:
        return {"estimate": self.estimate, "stderr": self.stderr, "num_hvps": self.num_hvps, "method": self.method,
                "deterministic_part": self.deterministic_part, "num_samples": len(self.samples)}


def _stderr(samples: list[float]) -> float:
    if len(samples) < 2:
        return math.inf
    t = torch.tensor(samples, dtype=torch.float64)
    return float(t.std(unbiased=True) / math.sqrt(len(samples)))


def _mv(op: Any, v: Tensor) -> Tensor:
    return op.matvec(v.to(op.dtype)).to(torch.float64).reshape(-1)


def trace(
    op: Any,
    method: Literal["hutchinson", "hutch++"] = "hutch++",
    num_hvps: int = 60,
    *,
    rtol: float | None = None,
    seed: int = 0,
) -> TraceResult:
    """Estimate tr H with at most `num_hvps` products.

    Hutchinson with `rtol` stops early once stderr ≤ rtol·|estimate| (after ≥ 10 probes). Hutch++
    splits the budget in thirds: sketch S, exact tr(QᵀHQ) on Q = orth(HS), Hutchinson on (I−QQᵀ)H(I−QQᵀ).
    """
    if method not in ("hutchinson", "hutch++"):
        raise ValueError(f"method must be 'hutchinson' or 'hutch++'; got {method!r}")
    if not isinstance(num_hvps, int) or num_hvps < (2 if method == "hutchinson" else 3):
        raise ValueError(f"num_hvps must be an int >= {2 if method == 'hutchinson' else 3}, got {num_hvps!r}")
    if rtol is not None and not rtol > 0:
        raise ValueError(f"rtol must be positive, got {rtol!r}")
    op = as_operator(op)
    n = int(op.dim)
    dev = torch.device(op.device)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    if method == "hutchinson":
        samples: list[float] = []
        for i in range(num_hvps):
            z = rademacher(n, gen).to(dev)
            samples.append(float(z @ _mv(op, z)))
            if rtol is not None and i >= 9:
                est = sum(samples) / len(samples)
                if _stderr(samples) <= rtol * abs(est):
                    break
        return TraceResult(sum(samples) / len(samples), _stderr(samples), len(samples), "hutchinson", samples)

    s = max(1, min(num_hvps // 3, n))
    S = torch.stack([rademacher(n, gen) for _ in range(s)], dim=1).to(dev)
    HS = torch.stack([_mv(op, S[:, j]) for j in range(s)], dim=1)
    Q, _ = torch.linalg.qr(HS)
    HQ = torch.stack([_mv(op, Q[:, j]) for j in range(Q.shape[1])], dim=1)
    exact = float((Q * HQ).sum())
    g = num_hvps - 2 * s
    samples = []
    for _ in range(g):
        z = rademacher(n, gen).to(dev)
        z = z - Q @ (Q.T @ z)
        samples.append(float(z @ _mv(op, z)))
    rest = sum(samples) / len(samples) if samples else 0.0
    err = _stderr(samples) if samples else (0.0 if s >= n else math.inf)
    return TraceResult(exact + rest, err, 2 * s + g, "hutch++", samples, deterministic_part=exact)
