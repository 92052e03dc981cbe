"""The base every named first-order rule shares (`_Named`: schema and torch's checks, torch's own
step for `differentiable`/`capturable`) and its schema and prefix helpers, kept apart from torch's
twins (:mod:`.twins`) so the contenders and large-batch rules build on it without importing them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch.optim.optimizer import _device_dtype_check_for_fused

from thalweg.optim import registry
from thalweg.optim.engine.core import CompileMode, FlatOptimizer, Rule
from thalweg.optim.engine.memory import pending_memory_options
from thalweg.optim.registry import Hyperparameter as H
from thalweg.optim.transforms import Hyper, Transform, add_decayed_weights, flip_sign

from .torch_twin import DELEGATED, check_like_torch, delegate_step, delegated_method

__all__ = ["LR", "validate"]

LR = Hyper("lr")
_BOOL = {"kind": "bool"}


def _lr(default: float) -> H:
    return H("lr", default, low=0.0, help="learning rate (a number or a schedule)", schedulable=True)


def validate(values: Mapping[str, Any], schema: Iterable[H], where: str = "") -> None:
    """Check hyperparameters against a schema (:meth:`Hyperparameter.check` on each); the
    ValueError names the argument and value."""
    registry.check_values(values, schema, where)


class _Named(FlatOptimizer):
    #: the torch.optim class with this rule's signature and trajectories (None: no twin)
    torch_twin: type[torch.optim.Optimizer] | None = None

    def __init__(self, params: Any, rule: Rule, defaults: dict[str, Any], compile: CompileMode,
                 compile_options: Mapping[str, Any] | None) -> None:
        def check() -> None:
            validate(defaults, self.schema)
            self._check_combination(defaults)

        params = check_like_torch(self.torch_twin, params, defaults, check)
        delegated = [k for k in DELEGATED if defaults.get(k)]
        if delegated:
            self._flat = False
            memory = pending_memory_options()
            if memory or compile is True:
                given = ", ".join([*(f"{k}={v!r}" for k, v in memory.items()), *(["compile=True"] if compile is True else [])])
                raise ValueError(
                    f"{type(self).__name__}: {delegated[0]}=True runs torch.optim's own implementation, which has no "
                    f"flat buffers, so {given} cannot apply; drop it, or use {delegated[0]}=False")
        super().__init__(params, rule, defaults, compile=compile, compile_options=compile_options)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        validate(param_group, self.schema, f"param group {len(self.param_groups)}: ")
        self._check_combination({**self.defaults, **param_group})
        super().add_param_group(param_group)

    def _check_combination(self, values: Mapping[str, Any]) -> None:
        """Cross-argument checks (e.g. Nesterov needs momentum)."""

    # ---------------------------------------------------------------- torch's own implementation
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        """One update of every parameter with a gradient (see :class:`FlatOptimizer`)."""
        if self._flat:
            for g in self.param_groups:
                if g.get("fused"):  # torch's check: a fused kernel exists for these devices
                    for p in g["params"]:
                        if p.grad is not None:
                            _device_dtype_check_for_fused(p)
            return super().step(closure)
        return delegate_step(self, self.torch_twin, closure)  # type: ignore[arg-type]

    def zero_grad(self, set_to_none: bool = True) -> None:
        if self._flat:
            super().zero_grad(set_to_none)
        else:
            torch.optim.Optimizer.zero_grad(self, set_to_none)

    def __getattr__(self, name: str) -> Any:
        # torch's step calls its class's private helpers (`_init_group`) on `self`
        if self.__dict__.get("_flat") is False and name.startswith("_") and not name.startswith("__"):
            return delegated_method(self, type(self).torch_twin, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


def _prefix(group: Mapping[str, Any], coupled_decay: bool = True) -> list[Transform]:
    out: list[Transform] = []
    if group["maximize"]:
        out.append(flip_sign(True))
    if coupled_decay and group["weight_decay"] != 0:
        out.append(add_decayed_weights(Hyper("weight_decay")))
    return out
