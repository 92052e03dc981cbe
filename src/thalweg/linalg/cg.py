"""Conjugate gradients for A x = b with a symmetric A given only through products, truncated
at negative curvature (Steihaug; Nocedal & Wright, Algorithm 7.1) for Newton-CG."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from thalweg.linalg.operators import matvec_of

__all__ = ["CGResult", "cg"]


@dataclass
class CGResult:
    """The iterate, the products spent, and why CG stopped: converged, negative curvature, or
    out of iterations."""

    x: Tensor
    iterations: int
    residual_norm: float
    converged: bool
    negative_curvature: bool


def cg(
    A: Any | Tensor | Callable[[Tensor], Tensor],
    b: Tensor,
    *,
    max_iter: int | None = None,
    rtol: float = 1e-8,
    atol: float = 0.0,
) -> CGResult:
    """Solve A x = b from x = 0 with at most `max_iter` products (default: len(b)).

    Stops when ‖r‖ ≤ max(rtol·‖b‖, atol). A direction p with pᵀAp ≤ 0 ends the solve: the
    last iterate is returned, or b itself if no step has been taken yet (for Newton's system
    (H + λI)d = −g that is the steepest-descent direction).
    """
    if max_iter is not None and max_iter < 0:
        raise ValueError(f"max_iter must be >= 0, got {max_iter}")
    if not (rtol >= 0 and atol >= 0):
        raise ValueError(f"rtol and atol must be non-negative, got rtol={rtol!r}, atol={atol!r}")
    matvec = matvec_of(A)
    steps = b.numel() if max_iter is None else max_iter
    x = b.new_zeros(b.shape)
    r = b.clone()
    p = r.clone()
    rr = r @ r
    stop = max(rtol * math.sqrt(float(rr)), atol)
    it = 0
    for it in range(steps):
        if math.sqrt(float(rr)) <= stop:
            break
        hp = matvec(p)
        curv = p @ hp
        if curv <= 0:
            x = b.clone() if not x.any() else x
            return CGResult(x, it + 1, math.sqrt(float(rr)), False, True)
        alpha = rr / curv
        x = x + alpha * p
        r = r - alpha * hp
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
    else:
        it = steps
    res = math.sqrt(float(rr))
    return CGResult(x, it, res, res <= stop, False)
