"""Numerical guards and batch-level regularizers used inside a training step.

`first_nonfinite_grad` names the layer whose gradient blew up; `penalty` is the explicit
L1/L2 term on weight matrices; `mixup_batch` blends a batch with a shuffled copy of itself.
"""

from __future__ import annotations

import torch

__all__ = ["NonFiniteError", "first_nonfinite_grad", "mixup_batch", "penalty"]


class NonFiniteError(RuntimeError):
    """Training produced NaN/inf too often; `what` names the loss or the parameter."""

    def __init__(self, message: str, *, what: str, step: int) -> None:
        super().__init__(message)
        self.what, self.step = what, step


def first_nonfinite_grad(names: list[str], params: list[torch.Tensor]) -> str:
    """'gradient of <name>' for the first parameter (in model order) with a NaN/inf gradient."""
    for name, p in zip(names, params, strict=True):
        if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
            return f"gradient of layer {name!r}"
    return "gradient norm (overflow in the norm itself)"


def penalty(params: list[torch.Tensor], l1: float, l2: float) -> torch.Tensor:
    """l1·Σ|w| + l2/2·Σw² over weight matrices and kernels (biases and norm scales exempt)."""
    weights = [p for p in params if p.dim() >= 2]
    total = weights[0].new_zeros(())
    for w in weights:
        if l1:
            total = total + l1 * w.abs().sum()
        if l2:
            total = total + 0.5 * l2 * w.pow(2).sum()
    return total


def mixup_batch(
    x: torch.Tensor, y: torch.Tensor, alpha: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Mixup (Zhang et al. 2018): λ ~ Beta(α, α) drawn from `generator` (so resumable),
    x ← λx + (1−λ)x[perm]; returns (mixed x, the partner labels y[perm], λ)."""
    from scipy.stats import beta

    u = float(torch.rand((), generator=generator))
    lam = float(beta.ppf(u, alpha, alpha))
    perm = torch.randperm(len(x), generator=generator).to(x.device)
    return lam * x + (1.0 - lam) * x[perm], y[perm], lam
