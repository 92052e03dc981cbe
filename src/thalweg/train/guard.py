"""The non-finite guard's vocabulary: the error a run stops with, and which layer blew up."""

from __future__ import annotations

import torch

__all__ = ["NonFiniteError", "first_nonfinite_grad"]


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
