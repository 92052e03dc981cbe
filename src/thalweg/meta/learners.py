"""Meta-learners as two-level optimization on `torch.func`: MAML, FOMAML, Reptile, and the
pretrained (joint-training) baseline.

The inner level adapts the shared initialization θ to each task of a meta-batch with a few
steps of an inner optimizer on the task's support set (`functional_call` on a dict of
parameters, `vmap` over the tasks where the model allows it, a loop otherwise). The outer level
moves θ (and the learned inner step sizes, for Meta-SGD) to make the adapted models good on
the query sets: `meta_backward(episode)` leaves that meta-gradient in `.grad`, so any
optimizer — `thalweg.optim.registry.create(name, learner.parameters(), ...)` — takes the outer
step. MAML differentiates through the inner updates (second order); FOMAML detaches the inner
gradients (dφ/dθ ≈ I); Reptile's meta-gradient is θ − mean φ.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from thalweg.losses import LOSSES
from thalweg.meta.inner import InnerOptimizer, Params, inner_optimizer
from thalweg.meta.tasks import Episode, MetaError

__all__ = [
    "FOMAML", "MAML", "MetaLearner", "Pretrained", "Reptile", "accuracy", "adaptation_table",
    "loss_function",
]

LossFn = Callable[[Tensor, Tensor], Tensor]
Mode = Literal["second", "first", "none"]


def accuracy(out: Tensor, y: Tensor) -> Tensor:
    """Fraction of correct argmax predictions (a measure for :meth:`MetaLearner.evaluate`)."""
    return (out.argmax(dim=-1) == y).float().mean()


def loss_function(loss: str | LossFn) -> LossFn:
    """"mse" or "cross_entropy" (the task's :class:`~thalweg.losses.TaskLoss`: mean over the
    task's examples), or a callable as is."""
    if callable(loss):
        return loss
    if loss not in LOSSES:
        raise MetaError("loss", loss, f"expected one of {sorted(LOSSES)} or a callable")
    return LOSSES[loss]


def _detach(p: Params) -> Params:
    return {k: v.detach() for k, v in p.items()}


def _stack(outs: Sequence[Any]) -> Any:
    first = outs[0]
    if isinstance(first, Tensor):
        return torch.stack(outs)
    if isinstance(first, dict):
        return {k: _stack([o[k] for o in outs]) for k in first}
    return type(first)(_stack([o[i] for o in outs]) for i in range(len(first)))


def _vmap_unsafe(model: nn.Module) -> str | None:
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats:
            return f"{name or type(m).__name__} is a BatchNorm in train mode (it updates running statistics)"
    return None


class MetaLearner:
    """Shared machinery; subclasses define :meth:`meta_backward`.

    `vectorize`: True (vmap over tasks), False (a loop), or "auto" (vmap unless a module
    forbids it, e.g. BatchNorm in train mode, or vmap fails; then a loop, with a warning).
    """

    method = "learner"
    min_inner_steps = 0

    def __init__(self, model: nn.Module, loss: str | LossFn = "mse", *, inner_steps: int = 1,
                 inner_lr: float = 0.01, inner: Any = None, learn_inner_lr: bool = False,
                 vectorize: bool | Literal["auto"] = "auto") -> None:
        if isinstance(inner_steps, bool) or not isinstance(inner_steps, int) or inner_steps < self.min_inner_steps:
            raise MetaError("inner_steps", inner_steps,
                            f"{self.method} needs an integer >= {self.min_inner_steps}"
                            + (" (with no inner step there is nothing to meta-learn)"
                               if self.min_inner_steps else ""))
        if vectorize not in (True, False, "auto"):
            raise MetaError("vectorize", vectorize, 'expected true, false or "auto"')
        self.model, self.loss = model, loss_function(loss)
        self.inner_steps, self.vectorize = inner_steps, vectorize
        self.inner: InnerOptimizer = inner_optimizer(inner, inner_lr)
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.inner_lrs: nn.ParameterList | None = None
        if learn_inner_lr:
            if not self.inner.supports_learned_lr:
                raise MetaError("learn_inner_lr", True, "learned per-parameter inner learning rates "
                                f"(Meta-SGD) need the plain SGD inner optimizer, not {self.inner!r}")
            named = dict(model.named_parameters())
            self.inner_lrs = nn.ParameterList(
                [nn.Parameter(torch.full_like(named[n].detach(), float(inner_lr))) for n in self.names])
        self._vmap_failed: str | None = None
        self._vmapping = False

    # ----- what the outer optimizer sees -----------------------------------------------
    def parameters(self) -> list[nn.Parameter]:
        """The outer variables: the model's trainable parameters, then the learned inner lrs."""
        named = dict(self.model.named_parameters())
        return [named[n] for n in self.names] + list(self.inner_lrs or [])

    def state_dict(self) -> dict[str, Any]:
        """Model weights and learned inner lrs (tensors only: `weights_only` checkpoints)."""
        lrs = [p.detach().clone() for p in self.inner_lrs] if self.inner_lrs is not None else []
        return {"model": self.model.state_dict(), "inner_lrs": lrs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        if self.inner_lrs is not None:
            with torch.no_grad():
                for p, v in zip(self.inner_lrs, state["inner_lrs"], strict=True):
                    p.copy_(v)

    # ----- the functional core ---------------------------------------------------------
    def _params(self) -> Params:
        named = dict(self.model.named_parameters())
        return {n: named[n] for n in self.names}

    def _lrs(self) -> Params | None:
        return None if self.inner_lrs is None else dict(zip(self.names, self.inner_lrs, strict=True))

    def forward(self, params: Params, x: Tensor) -> Tensor:
        """The model at `params` (buffers and frozen parameters are the module's own)."""
        rest = {n: t for n, t in self.model.named_parameters() if n not in params}
        rest.update(dict(self.model.named_buffers()))
        return functional_call(self.model, (params, rest), (x,))

    def task_loss(self, params: Params, x: Tensor, y: Tensor) -> Tensor:
        """Mean loss of the model at `params` on one task's examples."""
        return self.loss(self.forward(params, x), y)

    def _adapt(self, params: Params, sx: Tensor, sy: Tensor, steps: int, mode: Mode,
               lrs: Params | None) -> Params:
        """`steps` inner updates on one task's support set. `mode` "second" keeps the graph of
        the inner gradients, "first" detaches them, "none" detaches everything."""
        if mode == "none":
            params = _detach(params)
            lrs = None if lrs is None else _detach(lrs)
        state = self.inner.init(params)
        for t in range(1, steps + 1):
            g = self._grad(params if mode == "second" else _detach(params), sx, sy, mode == "second")
            params, state = self.inner.step(params, g, state, t, lrs)
        return params

    def _grad(self, params: Params, x: Tensor, y: Tensor, create_graph: bool) -> Params:
        """∇ of the task loss: `torch.func.grad` under vmap; in the loop, `torch.autograd.grad`
        (which lets modules such as BatchNorm update their buffers in place)."""
        if self._vmapping:
            return grad(self.task_loss)(params, x, y)
        leaves = {k: v if v.requires_grad else v.detach().requires_grad_() for k, v in params.items()}
        with torch.enable_grad():
            gs = torch.autograd.grad(self.task_loss(leaves, x, y), list(leaves.values()),
                                     create_graph=create_graph)
        return dict(zip(leaves, gs, strict=True))

    def _use_vmap(self) -> bool:
        if self.vectorize is False or self._vmap_failed:
            return False
        return self.vectorize is True or _vmap_unsafe(self.model) is None

    def map_tasks(self, fn: Callable[..., Any], *batched: Tensor) -> Any:
        """`fn` applied to each task's slice of `batched` (vmap or loop), results stacked."""
        if self._use_vmap():
            self._vmapping = True
            try:
                return vmap(fn, randomness="different")(*batched)
            except RuntimeError as e:
                if self.vectorize is True:
                    raise
                self._vmap_failed = str(e).splitlines()[0]
                warnings.warn(f"vmap over tasks failed ({self._vmap_failed}); looping over tasks",
                              stacklevel=2)
            finally:
                self._vmapping = False
        return _stack([fn(*(b[i] for b in batched)) for i in range(batched[0].shape[0])])

    @property
    def vectorized(self) -> bool:
        """Whether the next meta-batch runs under vmap."""
        return self._use_vmap()

    # ----- the two levels --------------------------------------------------------------
    def meta_backward(self, episode: Episode) -> Tensor:
        """Accumulate the meta-gradient of `episode` into `.grad`; return the meta-loss."""
        raise NotImplementedError

    def adapt(self, episode: Episode, steps: int | None = None) -> Params:
        """Adapted parameters per task (leading dim T), detached: for inspection and plots."""
        n = self.inner_steps if steps is None else steps
        params, lrs = self._params(), self._lrs()
        return self.map_tasks(lambda sx, sy: self._adapt(params, sx, sy, n, "none", lrs),
                              episode.support_x, episode.support_y)

    def evaluate(self, episode: Episode, steps: int, measure: LossFn | None = None,
                 chunk: int = 200) -> Tensor:
        """`measure(model(query_x), query_y)` after 0, 1, …, `steps` inner steps on the support
        set, for every task: a tensor (T, steps + 1, …). The default measure is the loss."""
        measure = measure or self.loss
        params, lrs = _detach(self._params()), self._lrs()
        lrs = None if lrs is None else _detach(lrs)

        def curve(sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> Tensor:
            p, state, out = params, self.inner.init(params), []
            for t in range(steps + 1):
                out.append(measure(self.forward(p, qx), qy).detach())
                if t < steps:
                    g = _detach(self._grad(p, sx, sy, False))
                    p, state = self.inner.step(p, g, state, t + 1, lrs)
            return torch.stack(out)

        parts = [self.map_tasks(curve, e.support_x, e.support_y, e.query_x, e.query_y)
                 for e in (episode.select(slice(i, i + chunk)) for i in range(0, len(episode), chunk))]
        return torch.cat(parts)


class MAML(MetaLearner):
    """Model-agnostic meta-learning (Finn et al. 2017): the query loss after `inner_steps`
    inner updates, differentiated through those updates (second order; `first_order=True`
    detaches the inner gradients). `learn_inner_lr=True` learns a step size per weight
    (Meta-SGD, Li et al. 2017)."""

    method = "maml"
    min_inner_steps = 1

    def __init__(self, model: nn.Module, loss: str | LossFn = "mse", *, first_order: bool = False,
                 **kwargs: Any) -> None:
        self.first_order = first_order
        if first_order:
            self.method = "fomaml"
        super().__init__(model, loss, **kwargs)

    def meta_backward(self, episode: Episode) -> Tensor:
        params, lrs = self._params(), self._lrs()
        mode: Mode = "first" if self.first_order else "second"

        def query_loss(sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> Tensor:
            return self.task_loss(self._adapt(params, sx, sy, self.inner_steps, mode, lrs), qx, qy)

        loss = self.map_tasks(query_loss, episode.support_x, episode.support_y, episode.query_x,
                              episode.query_y).mean()
        loss.backward()
        return loss.detach()


class FOMAML(MAML):
    """First-order MAML: the query gradient at the adapted weights is the meta-gradient."""

    method = "fomaml"

    def __init__(self, model: nn.Module, loss: str | LossFn = "mse", **kwargs: Any) -> None:
        super().__init__(model, loss, first_order=True, **kwargs)


class Reptile(MetaLearner):
    """Reptile (Nichol et al. 2018): adapt each task for `inner_steps` steps, then move θ toward
    the adapted weights; the meta-gradient left in `.grad` is θ − mean over tasks of φ, so
    outer SGD with lr ε is θ ← θ + ε·(mean φ − θ)."""

    method = "reptile"
    min_inner_steps = 1

    def __init__(self, model: nn.Module, loss: str | LossFn = "mse", *, inner_steps: int = 5,
                 **kwargs: Any) -> None:
        if kwargs.get("learn_inner_lr"):
            raise MetaError("learn_inner_lr", True, "Reptile has no gradient for the inner step sizes")
        super().__init__(model, loss, inner_steps=inner_steps, **kwargs)

    def meta_backward(self, episode: Episode) -> Tensor:
        params = self._params()

        def adapted(sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> tuple[Params, Tensor]:
            phi = self._adapt(params, sx, sy, self.inner_steps, "none", None)
            return phi, self.task_loss(phi, qx, qy).detach()

        phi, losses = self.map_tasks(adapted, episode.support_x, episode.support_y,
                                     episode.query_x, episode.query_y)
        with torch.no_grad():
            for n, p in params.items():
                g = p - phi[n].mean(dim=0)
                if p.grad is None:
                    p.grad = g
                else:
                    p.grad.add_(g)
        return losses.mean()


class Pretrained(MetaLearner):
    """The baseline: the same network trained on the task mixture without adaptation (every
    support and query example at θ), fine-tuned at test time with the same inner optimizer."""

    method = "pretrained"

    def __init__(self, model: nn.Module, loss: str | LossFn = "mse", **kwargs: Any) -> None:
        super().__init__(model, loss, **kwargs)

    def meta_backward(self, episode: Episode) -> Tensor:
        params = self._params()

        def joint(sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> Tensor:
            return self.task_loss(params, torch.cat([sx, qx]), torch.cat([sy, qy]))

        loss = self.map_tasks(joint, episode.support_x, episode.support_y, episode.query_x,
                              episode.query_y).mean()
        loss.backward()
        return loss.detach()


def adaptation_table(curves: Tensor, steps: Sequence[int] | None = None) -> dict[str, list[float]]:
    """Mean and 95 % confidence half-width (1.96·s/√T) over tasks of an adaptation curve
    (T, S + 1) from :meth:`MetaLearner.evaluate`: `{"steps", "mean", "ci95"}`."""
    c = curves.double()
    n = c.shape[0]
    half = 1.96 * c.std(dim=0, unbiased=True) / n**0.5 if n > 1 else torch.zeros(c.shape[1])
    return {"steps": list(steps) if steps is not None else list(range(c.shape[1])),
            "mean": [float(v) for v in c.mean(dim=0)], "ci95": [float(v) for v in half]}
