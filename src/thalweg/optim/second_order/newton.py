"""Newton's method for small and medium problems: damped (H + λI) and saddle-free (|H| + λI).

The seeds' story in one class: a pure Newton step lands on the minimum of a quadratic in one
step, walks *to* a saddle when H is indefinite, and is repaired by |H| (``saddle_free``) or
by damping, a learning rate and an Armijo line search. The Hessian is exact (dense, via
batched Hessian-vector products) up to ``max_exact`` parameters and is touched only through
Hessian-vector products above that (conjugate gradient for ``damped``, a Lanczos low-rank
|H| for ``saddle_free``). The products, the dense Hessian, CG and Lanczos come from
:mod:`thalweg.linalg`, shared with :mod:`thalweg.curvature`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from thalweg.linalg import (
    GraphHessian,
    cg,
    dense_hessian,
    flatten,
    grad_graph_reached,
    lanczos,
    unflatten,
)
from thalweg.optim import registry

__all__ = ["Newton"]

Closure = Callable[[], Tensor]


class _DeferBackward(TorchFunctionMode):
    """Makes ``loss.backward()`` inside a closure a no-op, so a torch-style closure leaves its
    graph intact for double backward; the optimizer then differentiates the loss itself."""

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func is Tensor.backward:
            return None
        return func(*args, **(kwargs or {}))


def evaluate_closure(closure: Closure, params: Sequence[Tensor], who: str) -> Tensor:
    """Run a closure (with or without its own ``loss.backward()``) and return its scalar loss
    with the graph kept; ``p.grad`` is left unset for the caller to fill."""
    for p in params:
        p.grad = None
    with _DeferBackward():
        loss = closure()
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        raise TypeError(f"closure must return a scalar loss tensor, got {loss!r}")
    if any(p.grad is not None for p in params):
        raise RuntimeError(
            f"the closure computed gradients itself (torch.autograd.backward?); {who} "
            f"differentiates the loss with torch.autograd.grad: return the loss, or call "
            f"loss.backward() (which {who} intercepts)"
        )
    return loss


def _solve_exact(h: Tensor, g: Tensor, damping: float, mode: str) -> tuple[Tensor, Tensor]:
    """-(H + λI)⁻¹g or -(|H| + λI)⁻¹g through one eigendecomposition (pseudo-inverse on 0)."""
    evals, evecs = torch.linalg.eigh(h)
    denom = (evals.abs() if mode == "saddle_free" else evals) + damping
    tiny = denom.abs() <= 1e-12 * max(float(denom.abs().max()), 1e-30)
    inv = torch.where(tiny, torch.zeros_like(denom), 1.0 / torch.where(tiny, 1.0, denom))
    return -(evecs @ (inv * (evecs.T @ g))), evals


def _krylov_direction(grads: list[Tensor], params: list[Tensor], g: Tensor, group: dict[str, Any],
                      state: dict[str, Any]) -> Tensor:
    """The step direction from Hessian-vector products only: truncated CG on (H + λI)d = −g
    (``damped``) or the saddle-free solve on a Lanczos basis started at g (``saddle_free``)."""
    hess = GraphHessian(grads, params)
    mode, lam = group["mode"], group["damping"]
    k = min(group["krylov_iters"], g.numel())
    if mode == "damped":
        return cg(lambda v: hess.matvec(v) + lam * v, -g, max_iter=k, rtol=group["cg_tol"]).x
    if g.norm() == 0:
        return torch.zeros_like(g)
    lz = lanczos(hess, g, steps=k, restart=False, dtype=g.dtype)
    q = lz.basis
    d, evals = _solve_exact(lz.tridiagonal_matrix(), q @ g, lam, mode)
    state["min_eigenvalue"] = float(evals[0])
    state["max_eigenvalue"] = float(evals[-1])
    return q.T @ d


class Newton(torch.optim.Optimizer):
    """Newton's method x ← x + t·d with d = -(H + λI)⁻¹g (``damped``) or -(|H| + λI)⁻¹g
    (``saddle_free``), and t from Armijo backtracking starting at ``lr``.

    Cost per step: one closure evaluation with its graph and one gradient; then either the
    dense Hessian (n HVPs, batched, plus an O(n³) eigendecomposition; O(n²) memory) when
    n ≤ ``max_exact`` or ``solver="exact"``, or at most ``krylov_iters`` HVPs (O(n) memory
    for CG, O(k·n) for Lanczos); plus up to ``max_backtracks`` forward-only evaluations for
    the line search. The closure re-evaluates the model and returns the loss; a
    ``loss.backward()`` inside it is intercepted (Newton differentiates the loss itself with
    ``torch.autograd.grad`` and writes ``p.grad``), so torch.optim.LBFGS closures work as is.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1.0,
        damping: float = 0.0,
        mode: Literal["damped", "saddle_free"] = "damped",
        solver: Literal["auto", "exact", "krylov"] = "auto",
        max_exact: int = 2048,
        krylov_iters: int = 50,
        cg_tol: float = 1e-8,
        line_search: bool = True,
        armijo_c: float = 1e-4,
        backtrack: float = 0.5,
        max_backtracks: int = 30,
    ) -> None:
        registry.get("newton").check(locals())  # the schema's bounds (second_order.py)
        defaults = dict(
            lr=lr, damping=damping, mode=mode, solver=solver, max_exact=max_exact,
            krylov_iters=krylov_iters, cg_tol=cg_tol, line_search=line_search,
            armijo_c=armijo_c, backtrack=backtrack, max_backtracks=max_backtracks,
        )
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError(
                f"Newton couples all parameters through H and takes one parameter group; "
                f"got {len(self.param_groups)}"
            )

    def _params(self) -> list[Tensor]:
        return [p for p in self.param_groups[0]["params"] if p.requires_grad]

    def _set(self, params: list[Tensor], vec: Tensor) -> None:
        for p, v in zip(params, unflatten(vec, params), strict=True):
            p.copy_(v)

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Tensor:  # type: ignore[override]
        """One Newton step; returns the loss before the step."""
        if closure is None:
            raise ValueError("Newton.step needs a closure that re-evaluates and returns the loss")
        group = self.param_groups[0]
        params = self._params()
        with torch.enable_grad():
            loss = evaluate_closure(closure, params, "Newton")
            grads, reached = grad_graph_reached(loss, params)
            # a parameter the loss does not reach takes no part (torch.optim's rule): not
            # even a rounding-level move through the eigenvectors of the coupled system
            params = [p for p, r in zip(params, reached, strict=True) if r]
            grads = [g for g, r in zip(grads, reached, strict=True) if r]
            state = self.state[self._params()[0]]  # the optimizer's state lives under its first parameter
            if not params:
                state["step"] = state.get("step", 0) + 1
                return loss.detach()
            loss = loss.detach()
            g = flatten(grads).detach()
            n = g.numel()
            exact = group["solver"] == "exact" or (
                group["solver"] == "auto" and n <= group["max_exact"]
            )
            if exact:
                h = dense_hessian(grads, params)
                d, evals = _solve_exact(h, g, group["damping"], group["mode"])
                state["min_eigenvalue"] = float(evals[0])
                state["max_eigenvalue"] = float(evals[-1])
            else:
                d = _krylov_direction(grads, params, g, group, state)
            grads.clear()  # free the double-backward graph before the line search
        x0 = flatten(params).clone()
        f0 = float(loss)
        t = group["lr"]
        if group["line_search"]:
            slope = float(g @ d)
            if slope >= 0 and g.norm() > 0:  # not a descent direction: steepest descent
                d, slope = -g, -float(g @ g)
                state["fallback_steps"] = state.get("fallback_steps", 0) + 1
            for _ in range(group["max_backtracks"] + 1):
                self._set(params, x0 + t * d)
                with _DeferBackward():
                    f_new = float(closure())  # forward only: we are under no_grad
                if f_new <= f0 + group["armijo_c"] * t * slope:
                    break
                t *= group["backtrack"]
            else:
                if not f_new <= f0:  # no decrease at all: stay put
                    self._set(params, x0)
                    t = 0.0
        else:
            self._set(params, x0 + t * d)
        for p, gp in zip(params, unflatten(g, params), strict=True):  # after the closure's zero_grad
            p.grad = gp.clone()
        state["step"] = state.get("step", 0) + 1
        state["step_size"] = t
        state["direction_norm"] = float(d.norm())
        return loss
