"""Inner-loop optimizers: pure functions of (params, grads, state) that stay differentiable.

The meta-gradient of MAML flows through every inner update, so an inner optimizer must never
overwrite a tensor autograd still needs. :class:`InnerSGD` is plain out-of-place SGD (optionally
with learned per-parameter step sizes, Meta-SGD). :class:`InnerChain` runs *any* elementwise
thalweg transform chain — the same `Chain` objects the flat optimizers run — on fresh copies
under `torch.func.functionalize`, which turns the chain's in-place math into out-of-place ops:
differentiable to any order and vectorizable with `vmap`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol

import torch
from torch import Tensor
from torch.func import functionalize

from thalweg.meta.tasks import MetaError
from thalweg.optim.transforms.chain import Chain, global_norm

__all__ = ["InnerChain", "InnerOptimizer", "InnerSGD", "Params", "inner_optimizer"]

Params = dict[str, Tensor]
State = dict[str, list[Tensor]]


class InnerOptimizer(Protocol):
    """One inner update `step(params, grads, state, t, lrs) -> (params, state)`, out of place."""

    supports_learned_lr: bool

    def init(self, params: Params) -> State:
        """Fresh per-task state."""
        ...

    def step(self, params: Params, grads: Params, state: State, t: int,
             lrs: Params | None = None) -> tuple[Params, State]:
        """Inner step `t` (counting from 1); `lrs` are learned step sizes where supported."""
        ...


def _check_lr(lr: Any) -> float:
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not math.isfinite(lr) or lr <= 0:
        raise MetaError("inner_lr", lr, "must be a finite number > 0")
    return float(lr)


class InnerSGD:
    """θ ← θ − α·g out of place; α is one number, or learned per-parameter tensors (Meta-SGD)."""

    supports_learned_lr = True

    def __init__(self, lr: float = 0.01) -> None:
        self.lr = _check_lr(lr)

    def init(self, params: Params) -> State:
        return {}

    def step(self, params: Params, grads: Params, state: State, t: int,
             lrs: Params | None = None) -> tuple[Params, State]:
        if lrs is None:
            return {k: p - self.lr * grads[k] for k, p in params.items()}, state
        return {k: p - lrs[k] * grads[k] for k, p in params.items()}, state

    def __repr__(self) -> str:
        return f"InnerSGD(lr={self.lr})"


class InnerChain:
    """Any elementwise thalweg `Chain` as the inner optimizer (Adam, momentum, clipping …).

    `group` resolves the chain's `Hyper` references (the parameter group of a named optimizer).
    """

    supports_learned_lr = False

    def __init__(self, chain: Chain, group: Mapping[str, Any] | None = None, name: str = "") -> None:
        if not isinstance(chain, Chain):
            raise MetaError("inner", chain, "expected a thalweg.optim Chain (thalweg.optim.chain(...))")
        self.chain, self.group, self.name = chain, dict(group or {}), name

    @classmethod
    def from_registry(cls, name: str, **hparams: Any) -> InnerChain:
        """The chain of a registry optimizer (`"adam"`, `"sgd"` with momentum, …) with `hparams`."""
        from thalweg.optim import FlatOptimizer, registry

        try:
            opt = registry.create(name, [torch.zeros(1, requires_grad=True)], **hparams)
        except (ValueError, TypeError) as e:
            raise MetaError("inner.optimizer", name, str(e)) from None
        if not isinstance(opt, FlatOptimizer):
            raise MetaError("inner.optimizer", name, "is not an elementwise optimizer (a transform "
                            "chain); second-order and matrix optimizers cannot be inner optimizers")
        group = {k: v for k, v in opt.param_groups[0].items() if k != "params"}
        return cls(opt.rule.build(group), group, name=name)

    def init(self, params: Params) -> State:
        out: State = {}
        for k, p in params.items():
            fresh = self.chain.init(p)
            out[k] = [fresh[key] for key in self.chain.state_keys]
        return out

    def step(self, params: Params, grads: Params, state: State, t: int,
             lrs: Params | None = None) -> tuple[Params, State]:
        hp = self.chain.scalars(self.group, t)
        gnorm = global_norm(list(grads.values())) if self.chain.needs_global_norm else None
        chain = self.chain

        def update(p: Tensor, g: Tensor, *st: Tensor) -> tuple[Tensor, list[Tensor]]:
            p, new = p.clone(), [s.clone() for s in st]
            chain.update(p, g, new, hp, gnorm)
            return p, new

        fn = functionalize(update)
        new_p: Params = {}
        new_s: State = {}
        for k, p in params.items():
            new_p[k], new_s[k] = fn(p, grads[k], *state[k])
        return new_p, new_s

    def __repr__(self) -> str:
        return f"InnerChain({self.name or self.chain.structure()})"


def inner_optimizer(spec: InnerOptimizer | Chain | str | None, lr: float, **hparams: Any) -> InnerOptimizer:
    """Normalize the `inner=` argument: None or "sgd" (no options) → :class:`InnerSGD`; a Chain
    → :class:`InnerChain`; another registry name → its chain with `lr` and `hparams`."""
    if spec is None or (spec == "sgd" and not hparams):
        return InnerSGD(lr)
    if isinstance(spec, Chain):
        return InnerChain(spec)
    if isinstance(spec, str):
        return InnerChain.from_registry(spec, lr=_check_lr(lr), **hparams)
    if hasattr(spec, "step") and hasattr(spec, "init"):
        return spec
    raise MetaError("inner", spec, "expected None, a registry optimizer name, a Chain or an "
                    "inner optimizer")
