"""L-BFGS (Liu & Nocedal 1989): torch's implementation, with thalweg's validation and defaults.

torch.optim.LBFGS is correct; this subclass only turns the strong-Wolfe line search on by
default, rejects bad hyperparameters with errors that name them, and accepts closures that
either call ``backward()`` themselves (torch's convention) or just return the loss (the
convention of thalweg's other second-order optimizers), so one closure serves all four.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from thalweg.optim import registry

__all__ = ["LBFGS"]


class LBFGS(torch.optim.LBFGS):
    """Limited-memory BFGS with a strong-Wolfe line search by default.

    Cost per ``step``: up to ``max_iter`` iterations and ``max_eval`` closure evaluations
    (forward + one gradient each; no Hessian-vector products); memory 2·``history_size``
    vectors of the parameter size. Use it full-batch: the curvature pairs assume a
    deterministic objective. ``max_eval=None`` means max(1.25·max_iter, max_iter + 5): torch's
    default for max_iter ≥ 20, but torch's rule leaves ``max_iter=1`` no evaluation for the
    line search, so the parameters never move.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1.0,
        max_iter: int = 20,
        max_eval: int | None = None,
        tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-9,
        history_size: int = 100,
        line_search_fn: str | None = "strong_wolfe",
    ) -> None:
        registry.get("lbfgs").check(locals())  # the schema's bounds (second_order.py)
        if max_eval is None:  # torch's 1.25·max_iter, but leave the line search a budget
            max_eval = max(max_iter * 5 // 4, max_iter + 5)
        super().__init__(
            params, lr=lr, max_iter=max_iter, max_eval=max_eval,
            tolerance_grad=tolerance_grad, tolerance_change=tolerance_change,
            history_size=history_size, line_search_fn=line_search_fn,
        )

    def step(self, closure: Callable[[], Tensor]) -> Tensor:  # type: ignore[override]
        """Run up to ``max_iter`` L-BFGS iterations; returns the loss before the first one."""
        if closure is None:
            raise ValueError("LBFGS.step needs a closure that re-evaluates and returns the loss")
        params = [p for g in self.param_groups for p in g["params"] if p.requires_grad]

        def closure_with_grad() -> Tensor:
            for p in params:
                p.grad = None
            loss = closure()
            if all(p.grad is None for p in params) and isinstance(loss, Tensor) and loss.requires_grad:
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                for p, gp in zip(params, grads, strict=True):
                    p.grad = torch.zeros_like(p) if gp is None else gp
            return loss

        return super().step(closure_with_grad)
