"""The held batch and what is measured on it: a batch kept aside from training, one monitored
forward/backward on it (`measure`), the Hessian of its loss as an operator (`hessian`) and the
curvature probe's top eigenvalues (`top_eigenvalues`). Shared by the watcher, its report and
the trainer's board."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["HeldBatch", "LossModule", "LossOf", "as_loss", "detach_value", "hessian", "measure", "top_eigenvalues"]

LossOf = Callable[[nn.Module], Tensor]


class HeldBatch:
    """A batch kept aside for the measurements (curvature probe, the doctor's forward/backward).

    `batch` is an `(x, y)` pair of tensors scored by `loss_fn(model(x), y)`; a mapping of
    tensors a model takes as keywords and scores itself (Hugging Face: `model(**batch).loss`,
    or `loss_fn(model(**batch), batch)` when given); or a callable `model -> loss`.
    """

    def __init__(self, batch: Any, loss_fn: Callable[..., Tensor] | None = None) -> None:
        if callable(batch) and not isinstance(batch, nn.Module):
            self.kind, self.batch = "callable", batch
        elif isinstance(batch, Mapping):
            self.kind, self.batch = "mapping", {k: detach_value(v) for k, v in batch.items()}
        elif isinstance(batch, tuple | list) and len(batch) == 2 and all(isinstance(t, Tensor) for t in batch):
            if loss_fn is None:
                raise ValueError("probe=(x, y) needs loss_fn=(output, target) -> loss, e.g. "
                                 "torch.nn.functional.cross_entropy")
            self.kind, self.batch = "pair", (batch[0].detach(), batch[1].detach())
        else:
            raise TypeError("probe must be an (x, y) pair of tensors, a mapping of tensors (keyword "
                            f"inputs), or a callable model -> loss; got {type(batch).__name__}")
        self.loss_fn = loss_fn

    def loss(self, model: nn.Module) -> Tensor:
        """The loss of `model` on this batch (moved to the model's device)."""
        dev = next(model.parameters()).device
        if self.kind == "callable":
            return self.batch(model)
        if self.kind == "pair":
            x, y = (t.to(dev) for t in self.batch)
            return self.loss_fn(model(x), y)  # type: ignore[misc]
        b = {k: v.to(dev) if isinstance(v, Tensor) else v for k, v in self.batch.items()}
        out = model(**b)
        if self.loss_fn is not None:
            return self.loss_fn(out, b)
        loss = out.get("loss") if isinstance(out, Mapping) else getattr(out, "loss", None)
        if loss is None:
            raise ValueError("the model returned no loss for the held batch: include labels in it, "
                             "or give loss_fn=(output, batch) -> loss")
        return loss

    def labels(self) -> tuple[Tensor, Tensor] | None:
        """(x, y) when this is a classification pair with integer labels (for data statistics)."""
        if self.kind == "pair" and not self.batch[1].is_floating_point():
            return self.batch  # type: ignore[return-value]
        return None


def detach_value(v: Any) -> Any:
    return v.detach() if isinstance(v, Tensor) else v


class LossModule(nn.Module):
    """`forward(ignored) -> loss of the wrapped model on the held batch`: a HessianOperator over
    any model, however it is called (its parameters are the wrapped model's)."""

    def __init__(self, model: nn.Module, held: HeldBatch) -> None:
        super().__init__()
        self.model = model
        self._held = held

    def forward(self, x: Tensor) -> Tensor:
        # attention through the math kernel: the fused CPU/GPU kernels have no double backward
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel([SDPBackend.MATH]):
            return self._held.loss(self.model)


def as_loss(out: Tensor, y: Tensor) -> Tensor:
    return out


def measure(model: nn.Module, held: HeldBatch) -> dict[str, Any]:
    """One monitored training-mode forward/backward on the held batch (dropout seeded); the
    model's gradients, RNG and mode are left as they were."""
    from thalweg.monitors import Monitor

    params = list(model.parameters())
    saved = [p.grad for p in params]
    was = model.training
    try:
        with Monitor(model) as mon:
            model.train()
            for p in params:
                p.grad = None
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                loss = held.loss(model)
            if loss.requires_grad:
                loss.backward()
            return mon.measure(loss=float(loss.detach()))
    finally:
        for p, g in zip(params, saved, strict=True):
            p.grad = g
        model.train(was)


def hessian(model: nn.Module, held: HeldBatch) -> Any:
    """The Hessian of the held batch's loss w.r.t. `model`'s parameters, as an operator."""
    from thalweg.curvature import HessianOperator

    z = torch.zeros(1)
    return HessianOperator(LossModule(model, held), as_loss, (z, z), mode="eval")


def top_eigenvalues(op: Any, *, k: int = 1, iters: int = 30) -> dict[str, Any]:
    """The k largest eigenvalues of a Hessian operator by Lanczos (tol 1e-3, at most `iters`
    products), with their residuals ‖Hy − θy‖: the curvature probe's one recipe."""
    from thalweg.curvature import eigs

    k = min(k, op.dim)
    res = eigs(op, k=k, which="largest", tol=1e-3, max_iter=min(op.dim, max(iters, 2 * k)))
    return {"eigenvalues": [float(v) for v in res.eigenvalues], "residuals": [float(v) for v in res.residuals],
            "num_hvps": res.num_hvps}
