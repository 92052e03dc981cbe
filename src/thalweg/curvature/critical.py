"""Is this point a minimum, a maximum, a saddle, flat (degenerate) or not critical at all?
The second-derivative test with explicit tolerances, and the evidence behind the verdict.

A negative Rayleigh quotient yᵀHy < 0 proves λ_min < 0 (Courant–Fischer), and a Ritz pair
with ‖Hy − θy‖ = r proves an eigenvalue in [θ − r, θ + r]; those are the certificates used.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from thalweg.curvature.hvp import FunctionHessian, HessianOperator
from thalweg.curvature.lanczos import eigs
from thalweg.linalg import Lanczos, LinearOperator, as_operator

__all__ = [
    "Classification",
    "ConditionEstimate",
    "SignCertificate",
    "certify_min_sign",
    "classify",
    "classify_loss",
    "condition_number",
    "find_critical_point",
    "minimum_odds",
]

Kind = Literal["minimum", "maximum", "saddle", "flat", "not_critical"]


def _operator(target: Any, point: Any, loss_fn: Any, data: Any, mode: str) -> Any:
    if isinstance(target, LinearOperator):  # HessianOperator, FunctionHessian, MatrixOperator, …
        return target
    if isinstance(target, nn.Module):
        return HessianOperator(target, loss_fn, data, mode=mode)  # type: ignore[arg-type]
    if isinstance(target, Tensor):
        return as_operator(target)
    if callable(target):
        if point is None:
            raise ValueError("point is required when target is a function f(x)")
        return FunctionHessian(target, point)
    raise TypeError(f"target must be a HessianOperator, nn.Module, square tensor or callable; got {type(target).__name__}")


@dataclass
class _Extremes:
    lam_min: float
    lam_max: float
    res_min: float
    res_max: float
    rq_min: float
    num_hvps: int
    method: str


def _extremes(op: Any, max_hvps: int, tol: float, dense_max: int) -> _Extremes:
    if op.dim <= dense_max:
        H = op.dense()
        H = (H + H.T) / 2
        ev, U = torch.linalg.eigh(H.to(torch.float64))
        res = (H.to(torch.float64) @ U - U * ev).norm(dim=0)
        return _Extremes(float(ev[0]), float(ev[-1]), float(res[0]), float(res[-1]), float(ev[0]), op.dim,
                         "dense eigh")
    r = eigs(op, k=1, which="both", tol=tol, max_iter=max_hvps, return_eigenvectors=True)
    lam, res = r.eigenvalues.tolist(), r.residuals.tolist()
    y = r.eigenvectors[:, -1]  # type: ignore[index]
    rq = float(y @ op.matvec(y.to(op.dtype)).to(torch.float64)) / float(y @ y)
    return _Extremes(lam[-1], lam[0], res[-1], res[0], rq, r.num_hvps + 1, f"lanczos ({r.iterations} steps)")


@dataclass
class Classification:
    """The verdict on a point and the evidence: gradient norm, extreme eigenvalues, residuals."""

    kind: Kind
    grad_norm: float
    lambda_min: float
    lambda_max: float
    residual_min: float
    residual_max: float
    grad_tol: float
    zero_tol: float
    num_hvps: int
    method: str
    loss: float | None = None
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def explain(self) -> str:
        """A few lines a person can read: verdict first, then the numbers behind it."""
        head = {
            "minimum": "a local minimum (every curvature direction points up)",
            "maximum": "a local maximum (every curvature direction points down)",
            "saddle": "a saddle point (curvature up in some directions, down in others)",
            "flat": "a flat / degenerate critical point (the second-derivative test is inconclusive)",
            "not_critical": "not a critical point (the gradient is not zero)",
        }[self.kind]
        lines = [f"Verdict: {head}."]
        lines.append(f"  ‖∇L‖ = {self.grad_norm:.3g}  (critical if ≤ grad_tol = {self.grad_tol:.3g})")
        lines.append(f"  λ_max = {self.lambda_max:.6g} ± {self.residual_max:.2g}   λ_min = {self.lambda_min:.6g} ± "
                     f"{self.residual_min:.2g}  (zero if |λ| ≤ {self.zero_tol:.3g}; via {self.method}, "
                     f"{self.num_hvps} HVPs)")
        lines.extend(f"  - {r}" for r in self.reasons)
        return "\n".join(lines)


def classify(
    target: Any,
    point: Tensor | Sequence[float] | None = None,
    *,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    data: Any = None,
    mode: Literal["train", "eval"] = "eval",
    grad_tol: float = 1e-4,
    eig_atol: float = 1e-6,
    eig_rtol: float = 1e-4,
    max_hvps: int = 150,
    tol: float = 1e-4,
    dense_max: int = 64,
) -> Classification:
    """Classify a point by its gradient norm and extreme Hessian eigenvalues.

    An eigenvalue counts as zero when |λ| ≤ zero_tol = max(eig_atol, eig_rtol·max|λ|), widened
    by its residual. Small problems (dim ≤ `dense_max`) use a dense eigendecomposition;
    larger ones Lanczos from both ends within `max_hvps` products.
    """
    for name, val in (("grad_tol", grad_tol), ("eig_atol", eig_atol), ("eig_rtol", eig_rtol), ("tol", tol)):
        if not (isinstance(val, float | int) and val >= 0 and math.isfinite(val)):
            raise ValueError(f"{name} must be a finite non-negative number, got {val!r}")
    if not isinstance(max_hvps, int) or max_hvps < 2:
        raise ValueError(f"max_hvps must be an int >= 2, got {max_hvps!r}")
    op = _operator(target, point, loss_fn, data, mode)
    g = op.gradient() if hasattr(op, "gradient") else None
    gnorm = float(g.norm()) if g is not None else 0.0
    loss = op.loss() if hasattr(op, "loss") else None
    ex = _extremes(op, max_hvps, tol, dense_max)
    zero = max(eig_atol, eig_rtol * max(abs(ex.lam_min), abs(ex.lam_max)))
    neg = ex.lam_min + ex.res_min < -zero or ex.rq_min < -zero  # an eigenvalue certainly < 0
    pos = ex.lam_max - ex.res_max > zero  # an eigenvalue certainly > 0
    all_pos = ex.lam_min - ex.res_min > zero
    all_neg = ex.lam_max + ex.res_max < -zero
    reasons: list[str] = []
    if not math.isfinite(gnorm) or gnorm > grad_tol:
        kind: Kind = "not_critical"
        reasons.append(f"gradient norm {gnorm:.3g} > grad_tol {grad_tol:.3g}: keep descending; the curvature "
                       "below describes the local shape only")
    elif neg and pos:
        kind = "saddle"
        reasons.append("eigenvalues of both signs: a descent direction exists along the λ_min eigenvector")
    elif all_pos:
        kind = "minimum"
        reasons.append("all eigenvalues > 0: strict local minimum")
    elif all_neg:
        kind = "maximum"
        reasons.append("all eigenvalues < 0: strict local maximum")
    else:
        kind = "flat"
        reasons.append("some eigenvalue is zero within tolerance and none has the opposite sign: higher-order "
                       "terms decide (e.g. x³ at 0); training may crawl along flat directions")
    if "lanczos" in ex.method and kind in ("minimum", "flat"):
        reasons.append("λ_min from Lanczos: a smaller eigenvalue missed by the Krylov space is unlikely but not excluded")
    return Classification(kind, gnorm, ex.lam_min, ex.lam_max, ex.res_min, ex.res_max, float(grad_tol), zero,
                          ex.num_hvps, ex.method, loss, reasons)


@dataclass
class SignCertificate:
    """The sign of λ_min with its proof: a Ritz value θ, residual r and Rayleigh quotient."""

    sign: Literal["negative", "positive", "undecided"]
    theta: float
    residual: float
    rayleigh: float
    num_hvps: int
    certificate: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def classify_loss(model: nn.Module, loss_fn: Any, x: Tensor, y: Tensor, *, mode: str = "eval",
                  grad_tol: float = 1e-3, max_hvps: int = 80) -> dict[str, Any] | None:
    """:func:`classify` of `loss_fn(model(x), y)` at the model's weights, as a dict (λ_max, λ_min
    with residuals, the gradient norm, the verdict); None when the weights are not finite."""
    try:
        op = HessianOperator(model, loss_fn, (x, y), mode=mode)  # type: ignore[arg-type]
        return classify(op, grad_tol=grad_tol, max_hvps=max(2, min(max_hvps, op.dim)), dense_max=0).to_dict()
    except (FloatingPointError, RuntimeError, ValueError):
        return None  # non-finite weights: no curvature to read


def certify_min_sign(op: Any, max_hvps: int = 150, *, seed: int = 0, margin: float = 0.0) -> SignCertificate:
    """Decide the sign of the smallest eigenvalue with as few HVPs as possible.

    Negative once θ + r < −margin (an eigenvalue lies in [θ−r, θ+r] ⊂ (−∞, 0)); positive once the
    smallest Ritz value has θ − r > margin and its pair has converged (a random start would have to
    miss a smaller eigenvalue entirely); otherwise undecided after `max_hvps`.
    """
    op = as_operator(op)
    lz = Lanczos(op, max_iter=max_hvps, seed=seed)
    theta = res = rq = math.nan
    while not lz.done:
        lz.step()
        t, s = lz.ritz()
        theta = float(t[0])
        scale = float(abs(t).max()) or 1.0
        res = float(lz.residuals(t[:1], s[:, :1])[0])
        rq = float(lz.rayleigh(s[:, :1])[0])
        if theta + res < -margin:
            return SignCertificate("negative", theta, res, rq, lz.num_hvps,
                                   f"eigenvalue in [{theta - res:.3g}, {theta + res:.3g}] < 0 (residual bound)")
        if theta - res > margin and res <= 1e-6 * scale and lz.m >= 3:
            return SignCertificate("positive", theta, res, rq, lz.num_hvps,
                                   f"smallest Ritz pair converged at {theta:.3g} ± {res:.2g} > 0")
    return SignCertificate("undecided", theta, res, rq, lz.num_hvps,
                           f"after {lz.num_hvps} HVPs: θ_min = {theta:.3g} ± {res:.2g}, Rayleigh {rq:.3g}")


@dataclass
class ConditionEstimate:
    """κ = λ_max/λ_min for a positive definite Hessian (∞ otherwise) and how it was obtained."""

    value: float
    lambda_max: float
    lambda_min: float
    method: str
    num_hvps: int
    note: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def condition_number(
    target: Any,
    point: Tensor | Sequence[float] | None = None,
    *,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    data: Any = None,
    mode: Literal["train", "eval"] = "eval",
    max_hvps: int = 200,
    tol: float = 1e-6,
    dense_max: int = 64,
) -> ConditionEstimate:
    """The curvature ratio λ_max/λ_min: how much steeper the ravine's walls are than its floor."""
    op = _operator(target, point, loss_fn, data, mode)
    ex = _extremes(op, max_hvps, tol, dense_max)
    if ex.lam_min - ex.res_min > 0:
        value, note = ex.lam_max / ex.lam_min, "positive definite: GD needs ~κ steps per e-fold along the floor"
    else:
        value = math.inf
        note = (f"not positive definite (λ_min = {ex.lam_min:.3g} ± {ex.res_min:.2g}): κ is infinite; "
                "the ratio of extreme |λ| is reported in lambda_max/lambda_min")
    return ConditionEstimate(value, ex.lam_max, ex.lam_min, ex.method, ex.num_hvps, note)


def find_critical_point(
    f: Callable[[Tensor], Tensor],
    x0: Tensor | Sequence[float],
    *,
    tol: float = 1e-10,
    max_iter: int = 100,
) -> Tensor:
    """Newton's method on ∇f = 0 from `x0` (finds minima, maxima and saddles alike — the seeds'
    point that Newton does not distinguish them); raises if it does not converge."""
    x = torch.as_tensor(x0, dtype=torch.float64).reshape(-1).clone()
    for _ in range(max_iter):
        op = FunctionHessian(f, x)
        g = op.gradient()
        if float(g.norm()) <= tol:
            return x
        H = op.dense()
        step = torch.linalg.lstsq(H, g.unsqueeze(1)).solution.squeeze(1)
        x = x - step
    raise ValueError(f"find_critical_point did not converge from x0={list(map(float, torch.as_tensor(x0).reshape(-1)))} "
                     f"in {max_iter} iterations (last ‖∇f‖ = {float(g.norm()):.3g})")


def minimum_odds(k: int, *, trials: int = 0, seed: int = 0) -> dict[str, float | None]:
    """How likely a random critical point in k dimensions is a minimum: 0.5**k if each
    eigenvalue's sign were a fair coin (seed 003), and with `trials` > 0 the Monte-Carlo fraction
    of positive definite Wigner (GOE) Hessians, where eigenvalue repulsion makes it far smaller.
    Either way saddles dominate in high dimension."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if not isinstance(trials, int) or trials < 0:
        raise ValueError(f"trials must be a non-negative int, got {trials!r}")
    out: dict[str, float | None] = {"independent": 0.5**k, "goe": None, "goe_stderr": None}
    if trials:
        g = torch.Generator().manual_seed(int(seed))
        hits = 0
        for start in range(0, trials, 4096):
            n = min(4096, trials - start)
            A = torch.randn(n, k, k, generator=g, dtype=torch.float64)
            hits += int((torch.linalg.eigvalsh((A + A.transpose(1, 2)) / 2)[:, 0] > 0).sum())
        p = hits / trials
        out["goe"], out["goe_stderr"] = p, math.sqrt(max(p * (1 - p), 1.0 / trials) / trials)
    return out
