"""AdaHessian (Yao et al. 2020): Adam whose second moment is the squared Hutchinson diagonal
of the Hessian instead of the squared gradient.

The diagonal is estimated as z ⊙ (H z) with Rademacher probes z (±1 with equal probability),
computed with ``torch.autograd.grad`` — never ``backward(create_graph=True)``, which leaves a
reference cycle through ``p.grad``. Conv kernels average |diag| over their spatial positions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from thalweg.linalg import grad_graph_reached, hvp_from_graph, rademacher, unflatten
from thalweg.optim import registry
from thalweg.optim.second_order.newton import evaluate_closure

__all__ = ["AdaHessian", "hutchinson_diagonal"]


_PROBE_SCHEMA = (registry.Hyperparameter("n_samples", 1, kind="int", low=1),
                 registry.Hyperparameter("batch", 64, kind="int", low=1))


def hutchinson_diagonal(grads: Sequence[Tensor], params: Sequence[Tensor], *,
                        n_samples: int = 1, generator: torch.Generator | None = None,
                        batch: int = 64) -> list[Tensor]:
    """Unbiased estimate of diag(H) per parameter: the mean over probes of z ⊙ (H z).

    ``grads`` must carry their graph (``torch.autograd.grad(..., create_graph=True)``).
    Costs ``n_samples`` Hessian-vector products, ``batch`` of them per vmapped backward; the
    graph is kept until the last one.
    """
    registry.check_values(locals(), _PROBE_SCHEMA)
    params = list(params)
    n = sum(p.numel() for p in params)
    est = [torch.zeros_like(p) for p in params]
    if not any(g is not None and g.requires_grad for g in grads):
        return est
    done = 0
    while done < n_samples:
        b = min(batch, n_samples - done)
        done += b
        z = torch.empty(b, n, dtype=params[0].dtype, device=params[0].device)
        zs = unflatten(z, params)  # views: each parameter's probes, drawn in parameter order
        for zp, p in zip(zs, params, strict=True):
            zp.copy_(rademacher((b, *p.shape), generator=generator, dtype=p.dtype, device=p.device))
        # one probe: a plain product; several: one vmapped backward (row by row without vmap)
        hz = (hvp_from_graph(grads, params, z[0], retain_graph=done < n_samples).unsqueeze(0) if b == 1
              else hvp_from_graph(grads, params, z))
        for e, zp, h in zip(est, zs, unflatten(hz, params), strict=True):
            e.add_((zp * h).sum(0))
    return [e / n_samples for e in est]


def _spatial_average(d: Tensor) -> Tensor:
    """|diag| averaged over a conv kernel's spatial dims (dims ≥ 2), as in the paper."""
    if d.dim() <= 2:
        return d.abs()
    return d.abs().mean(dim=tuple(range(2, d.dim())), keepdim=True).expand_as(d)


class AdaHessian(torch.optim.Optimizer):
    """Adam with the Hutchinson Hessian diagonal (to the power ``hessian_power``) as its
    denominator; decoupled weight decay; the diagonal refreshed every ``update_every`` steps.

    Cost per step: one closure evaluation and one gradient with its graph (create_graph),
    plus ``n_samples`` Hessian-vector products on steps where the diagonal is refreshed
    (≈ 2× an Adam step in compute then, 1× otherwise); memory: two buffers per parameter
    (first moment, second moment of the diagonal). The closure returns the loss; a
    ``loss.backward()`` inside it is intercepted and AdaHessian writes ``p.grad`` itself.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.15,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-4,
        weight_decay: float = 0.0,
        hessian_power: float = 1.0,
        update_every: int = 1,
        n_samples: int = 1,
        seed: int = 0,
    ) -> None:
        registry.get("adahessian").check(locals())  # the schema's bounds (second_order.py)
        b1, b2 = float(betas[0]), float(betas[1])
        defaults = dict(lr=lr, betas=(b1, b2), eps=eps, weight_decay=weight_decay,
                        hessian_power=hessian_power)
        super().__init__(params, defaults)
        self.update_every = update_every
        self.n_samples = n_samples
        first = self.param_groups[0]["params"][0]
        self.generator = torch.Generator(device=first.device).manual_seed(seed)
        self._step = 0

    def state_dict(self) -> dict[str, Any]:
        """torch's per-parameter state plus the step counter and the probe generator."""
        sd = super().state_dict()
        sd["adahessian"] = {"step": self._step, "rng_state": self.generator.get_state(),
                            "update_every": self.update_every, "n_samples": self.n_samples}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore moments, step counter and probe generator (bitwise resume)."""
        state_dict = dict(state_dict)
        extra = state_dict.pop("adahessian", None)
        super().load_state_dict(state_dict)
        if extra is not None:
            self._step = int(extra["step"])
            self.generator.set_state(extra["rng_state"])
            self.update_every = int(extra["update_every"])
            self.n_samples = int(extra["n_samples"])

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor:  # type: ignore[override]
        """One AdaHessian step; returns the loss the closure computed."""
        if closure is None:
            raise ValueError("AdaHessian.step needs a closure that evaluates and returns the loss")
        params = [p for g in self.param_groups for p in g["params"] if p.requires_grad]
        refresh = self._step % self.update_every == 0
        with torch.enable_grad():
            loss = evaluate_closure(closure, params, "AdaHessian")
            grads, reached = grad_graph_reached(loss, params, create_graph=refresh)
            diags = (hutchinson_diagonal(grads, params, n_samples=self.n_samples,
                                         generator=self.generator) if refresh else None)
        # a parameter the loss does not reach is skipped, as torch.optim skips p.grad None
        grad_of = {id(p): g.detach() for p, g, r in zip(params, grads, reached, strict=True) if r}
        diag_of = {id(p): d for p, d in zip(params, diags or [], strict=False)}
        del grads
        self._step += 1
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if id(p) not in grad_of:
                    continue
                g = grad_of[id(p)]
                p.grad = g.clone()
                st = self.state[p]
                if not st:
                    st["step"] = torch.zeros((), dtype=torch.float64)
                    st["hessian_step"] = torch.zeros((), dtype=torch.float64)
                    st["exp_avg"] = torch.zeros_like(p)
                    st["exp_hessian_diag_sq"] = torch.zeros_like(p)
                st["step"] += 1
                st["exp_avg"].mul_(b1).add_(g, alpha=1 - b1)
                if id(p) in diag_of:
                    d = _spatial_average(diag_of[id(p)])
                    st["hessian_step"] += 1
                    st["exp_hessian_diag_sq"].mul_(b2).addcmul_(d, d, value=1 - b2)
                if st["hessian_step"] == 0:
                    continue
                bc1 = 1 - b1 ** float(st["step"])
                bc2 = 1 - b2 ** float(st["hessian_step"])
                k = group["hessian_power"]
                denom = (st["exp_hessian_diag_sq"] / bc2).sqrt_().pow_(k).add_(group["eps"])
                if group["weight_decay"]:
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                p.addcdiv_(st["exp_avg"], denom, value=-group["lr"] / bc1)
        return loss.detach()
