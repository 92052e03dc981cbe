"""The named first-order optimizers, each a short transform chain with torch.optim's
signature, defaults, state layout and trajectories: SGD (Polyak/Nesterov momentum),
Adagrad, RMSprop, Adadelta, Adam (AMSGrad), AdamW."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch.optim.adagrad import adagrad as _adagrad_fn  # torch's sparse paths
from torch.optim.sgd import sgd as _sgd_fn

from thalweg.optim import registry
from thalweg.optim.engine.core import CompileMode, Rule
from thalweg.optim.registry import Hyperparameter as H
from thalweg.optim.transforms import (
    Chain,
    Hyper,
    decay_weights,
    scale_by_adadelta,
    scale_by_adagrad,
    scale_by_adam,
    scale_by_lr,
    scale_by_rms,
    trace,
)
from thalweg.optim.transforms.context import resolve, scalar_dtype

from .named import _BOOL, LR, _lr, _Named, _prefix, validate

__all__ = ["SGD", "Adadelta", "Adagrad", "Adam", "AdamW", "RMSprop", "validate"]


SGD_SCHEMA = (
    _lr(1e-3),
    H("momentum", 0.0, low=0.0, high=1.0, high_inclusive=False, help="heavy-ball momentum μ"),
    H("dampening", 0.0, low=0.0, high=1.0, help="scale (1 − dampening) on new gradients in the buffer"),
    H("weight_decay", 0.0, low=0.0, help="coupled L2 penalty added to the gradient"),
    H("nesterov", False, **_BOOL, help="Nesterov look-ahead momentum"),
    H("maximize", False, **_BOOL, help="ascend instead of descend"),
)
ADAGRAD_SCHEMA = (
    _lr(1e-2),
    H("lr_decay", 0.0, low=0.0, help="lr / (1 + (t − 1)·lr_decay)"),
    H("weight_decay", 0.0, low=0.0),
    H("initial_accumulator_value", 0.0, low=0.0),
    H("eps", 1e-10, low=0.0),
    H("maximize", False, **_BOOL),
)
RMSPROP_SCHEMA = (
    _lr(1e-2),
    H("alpha", 0.99, low=0.0, high=1.0, help="smoothing constant of the squared-gradient average"),
    H("eps", 1e-8, low=0.0),
    H("weight_decay", 0.0, low=0.0),
    H("momentum", 0.0, low=0.0, high=1.0, high_inclusive=False),
    H("centered", False, **_BOOL, help="divide by the running std instead of the RMS"),
    H("maximize", False, **_BOOL),
)
ADADELTA_SCHEMA = (
    _lr(1.0),
    H("rho", 0.9, low=0.0, high=1.0, help="decay of the running averages"),
    H("eps", 1e-6, low=0.0),
    H("weight_decay", 0.0, low=0.0),
    H("maximize", False, **_BOOL),
)


def _adam_schema(weight_decay: float, decoupled: bool) -> tuple[H, ...]:
    return (
        _lr(1e-3),
        H("betas", (0.9, 0.999), kind="betas", low=0.0, high=1.0, high_inclusive=False,
          help="decay rates (β₁, β₂) of the first and second moments"),
        H("eps", 1e-8, low=0.0),
        H("weight_decay", weight_decay, low=0.0,
          help="decoupled decay p ← p(1 − lr·λ)" if decoupled else "coupled L2 penalty"),
        H("amsgrad", False, **_BOOL, help="use the running maximum of the second moment"),
        H("maximize", False, **_BOOL),
    )


ADAM_SCHEMA = (*_adam_schema(0.0, False), H("decoupled_weight_decay", False, **_BOOL))
ADAMW_SCHEMA = _adam_schema(1e-2, True)


# ---------------------------------------------------------------------------- SGD
def _torch_lr(g: Mapping[str, Any], t: int) -> Any:
    """The lr torch's functional gets at step t: the group's tensor or number, a schedule's value."""
    return g["lr"] if isinstance(g["lr"], torch.Tensor) else resolve(g["lr"], g, t - 1)


class _SGDRule(Rule):
    def sparse_step(self, g, p, grad, states, t):
        """torch's sparse SGD (its for-loop function, on this parameter's flat views)."""
        if g["momentum"] != 0:
            raise RuntimeError("SGD: sparse gradients with momentum != 0 are not supported by thalweg (torch keeps "
                               "a sparse momentum buffer); use momentum=0, or dense gradients")
        _sgd_fn([p], [grad], [None], has_sparse_grad=True, foreach=False,
                            weight_decay=g["weight_decay"], momentum=0.0, lr=_torch_lr(g, t),
                            dampening=g["dampening"], nesterov=g["nesterov"], maximize=g["maximize"])

    def key(self, g):
        return (g["maximize"], g["weight_decay"] != 0, g["momentum"] != 0, g["nesterov"])

    def build(self, g):
        ts = _prefix(g)
        if g["momentum"] != 0:
            ts.append(trace(Hyper("momentum"), Hyper("dampening"), nesterov=g["nesterov"]))
        return Chain([*ts, scale_by_lr(LR)])


class SGD(_Named):
    """Stochastic gradient descent with optional heavy-ball or Nesterov momentum (torch.optim.SGD)."""

    torch_twin = torch.optim.SGD
    schema = SGD_SCHEMA

    def __init__(self, params: Any, lr: Any = 1e-3, momentum: float = 0, dampening: float = 0,
                 weight_decay: float = 0, nesterov: bool = False, *, maximize: bool = False,
                 foreach: bool | None = None, differentiable: bool = False, fused: bool | None = None,
                 compile: CompileMode = "auto", compile_options: Mapping[str, Any] | None = None) -> None:
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize, foreach=foreach,
                        differentiable=differentiable, fused=fused)
        super().__init__(params, _SGDRule(), defaults, compile, compile_options)

    def _check_combination(self, values):
        if values.get("nesterov") and (values.get("momentum", 0) <= 0 or values.get("dampening", 0) != 0):
            raise ValueError(
                f"nesterov=True requires momentum > 0 and dampening = 0, got "
                f"momentum={values.get('momentum')!r}, dampening={values.get('dampening')!r}"
            )


# ---------------------------------------------------------------------------- Adagrad
class _AdagradRule(Rule):
    eager_state = True

    def sparse_step(self, g, p, grad, states, t):
        """torch's sparse Adagrad (its for-loop function, on this parameter's flat views)."""
        step = torch.tensor(float(t - 1), dtype=scalar_dtype())  # torch counts it up itself
        _adagrad_fn([p], [grad], [states["sum"]], [step], has_sparse_grad=True, foreach=False,
                                    lr=_torch_lr(g, t), weight_decay=g["weight_decay"],
                                    lr_decay=g["lr_decay"], eps=g["eps"], maximize=g["maximize"])

    def key(self, g):
        return (g["maximize"], g["weight_decay"] != 0)

    def build(self, g):
        return Chain([*_prefix(g), scale_by_adagrad(Hyper("lr_decay"), Hyper("eps"), g["initial_accumulator_value"]),
                      scale_by_lr(LR)])


class Adagrad(_Named):
    """AdaGrad: per-coordinate steps shrink with the accumulated squared gradient (torch.optim.Adagrad)."""

    torch_twin = torch.optim.Adagrad
    schema = ADAGRAD_SCHEMA

    def __init__(self, params: Any, lr: Any = 1e-2, lr_decay: float = 0, weight_decay: float = 0,
                 initial_accumulator_value: float = 0, eps: float = 1e-10, foreach: bool | None = None, *,
                 maximize: bool = False, differentiable: bool = False, fused: bool | None = None,
                 compile: CompileMode = "auto", compile_options: Mapping[str, Any] | None = None) -> None:
        defaults = dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, foreach=foreach,
                        maximize=maximize, differentiable=differentiable, fused=fused)
        super().__init__(params, _AdagradRule(), defaults, compile, compile_options)


# ---------------------------------------------------------------------------- RMSprop
class _RMSpropRule(Rule):
    def key(self, g):
        return (g["maximize"], g["weight_decay"] != 0, g["centered"], g["momentum"] > 0)

    def build(self, g):
        mom = Hyper("momentum") if g["momentum"] > 0 else None
        return Chain([*_prefix(g), scale_by_rms(Hyper("alpha"), Hyper("eps"), g["centered"], mom),
                      scale_by_lr(LR)])


class RMSprop(_Named):
    """RMSProp: divide by a running RMS of gradients; optional centering and momentum (torch.optim.RMSprop)."""

    torch_twin = torch.optim.RMSprop
    schema = RMSPROP_SCHEMA

    def __init__(self, params: Any, lr: Any = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0, momentum: float = 0, centered: bool = False,
                 capturable: bool = False, foreach: bool | None = None, maximize: bool = False,
                 differentiable: bool = False, *, compile: CompileMode = "auto",
                 compile_options: Mapping[str, Any] | None = None) -> None:
        defaults = dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                        weight_decay=weight_decay, capturable=capturable, foreach=foreach,
                        maximize=maximize, differentiable=differentiable)
        super().__init__(params, _RMSpropRule(), defaults, compile, compile_options)


# ---------------------------------------------------------------------------- Adadelta
class _AdadeltaRule(Rule):
    def key(self, g):
        return (g["maximize"], g["weight_decay"] != 0)

    def build(self, g):
        return Chain([*_prefix(g), scale_by_adadelta(Hyper("rho"), Hyper("eps")), scale_by_lr(LR)])


class Adadelta(_Named):
    """AdaDelta: unit-consistent steps from running RMS of updates over gradients (torch.optim.Adadelta)."""

    torch_twin = torch.optim.Adadelta
    schema = ADADELTA_SCHEMA

    def __init__(self, params: Any, lr: Any = 1.0, rho: float = 0.9, eps: float = 1e-6,
                 weight_decay: float = 0, foreach: bool | None = None, *, capturable: bool = False,
                 maximize: bool = False, differentiable: bool = False, compile: CompileMode = "auto",
                 compile_options: Mapping[str, Any] | None = None) -> None:
        defaults = dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize,
                        capturable=capturable, foreach=foreach, differentiable=differentiable)
        super().__init__(params, _AdadeltaRule(), defaults, compile, compile_options)


# ---------------------------------------------------------------------------- Adam / AdamW
class _AdamRule(Rule):
    def key(self, g):
        return (g["maximize"], g["weight_decay"] != 0, g["decoupled_weight_decay"], g["amsgrad"])

    def build(self, g):
        decoupled = g["decoupled_weight_decay"]
        ts = _prefix(g, coupled_decay=not decoupled)
        if decoupled and g["weight_decay"] != 0:
            ts.append(decay_weights(Hyper("weight_decay"), LR))
        adam = scale_by_adam(Hyper("betas", 0), Hyper("betas", 1), Hyper("eps"), g["amsgrad"])
        return Chain([*ts, adam, scale_by_lr(LR)])


class Adam(_Named):
    """Adam: momentum plus RMSProp scaling with bias correction; AMSGrad and decoupled decay
    as options (torch.optim.Adam)."""

    torch_twin = torch.optim.Adam
    schema = ADAM_SCHEMA

    def __init__(self, params: Any, lr: Any = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0, amsgrad: bool = False, *,
                 foreach: bool | None = None, maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None,
                 decoupled_weight_decay: bool = False, compile: CompileMode = "auto",
                 compile_options: Mapping[str, Any] | None = None) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        maximize=maximize, foreach=foreach, capturable=capturable,
                        differentiable=differentiable, fused=fused,
                        decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, _AdamRule(), defaults, compile, compile_options)


class AdamW(Adam):
    """Adam with decoupled weight decay p ← p(1 − lr·λ) (torch.optim.AdamW)."""

    torch_twin = torch.optim.AdamW
    schema = ADAMW_SCHEMA

    def __init__(self, params: Any, lr: Any = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False, foreach: bool | None = None, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None,
                 compile: CompileMode = "auto", compile_options: Mapping[str, Any] | None = None) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach,
                         maximize=maximize, capturable=capturable, differentiable=differentiable,
                         fused=fused, decoupled_weight_decay=True, compile=compile,
                         compile_options=compile_options)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for g in self.param_groups:
            g["decoupled_weight_decay"] = True


# ---------------------------------------------------------------------------- registry
_B = (False, True)
S = registry.SearchDim
_WD = S("weight_decay", 1e-6, 1e-1, log=True)
_B1 = S("betas", 1e-2, 0.5, log=True, index=0, one_minus=True)
_SPACES: dict[str, tuple[registry.SearchDim, ...]] = {
    "sgd": (S("lr", 1e-3, 3.0, log=True), S("momentum", 1e-2, 0.5, log=True, one_minus=True), _WD),
    "adagrad": (S("lr", 1e-3, 1.0, log=True), _WD),
    "rmsprop": (S("lr", 1e-5, 1e-1, log=True), S("alpha", 1e-3, 0.1, log=True, one_minus=True), _WD),
    "adadelta": (S("lr", 1e-2, 10.0, log=True), S("rho", 1e-3, 0.5, log=True, one_minus=True), _WD),
    "adam": (S("lr", 1e-5, 1e-1, log=True), _B1, _WD),
    "adamw": (S("lr", 1e-5, 1e-1, log=True), _B1, _WD),
}


# a run's starting lr where torch's constructor default is not one: SGD's 1e-3 barely moves a
# network (0.1 is the classic start), RMSProp's 0.01 is 10× Hinton's/Keras' 1e-3
_START_LR = {"sgd": 0.1, "rmsprop": 1e-3}


def _signature(cls: type) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters)


_TORCH_SWITCHES = ("foreach", "fused", "capturable", "differentiable")
#: the registry entries of the six (registered by :mod:`thalweg.optim.catalog`)
TWINS: list[registry.OptimizerInfo] = []
_ALIASES: dict[str, dict[str, dict[str, Any]]] = {
    "sgd": {"gd": {}, "momentum": {"momentum": 0.9}, "nesterov": {"momentum": 0.9, "nesterov": True}},
}
for _name, _cls, _ref, _grid, _desc in (
    ("sgd", SGD, torch.optim.SGD,
     {"momentum": (0.0, 0.9), "dampening": (0.0, 0.1), "nesterov": _B, "weight_decay": (0.0, 0.1), "maximize": _B},
     "gradient descent; heavy-ball or Nesterov momentum"),
    ("adagrad", Adagrad, torch.optim.Adagrad,
     {"lr_decay": (0.0, 0.01), "weight_decay": (0.0, 0.1), "initial_accumulator_value": (0.0, 0.1), "maximize": _B},
     "per-coordinate steps shrinking with accumulated squared gradients"),
    ("rmsprop", RMSprop, torch.optim.RMSprop,
     {"momentum": (0.0, 0.9), "centered": _B, "weight_decay": (0.0, 0.1), "maximize": _B},
     "steps divided by a running RMS of gradients"),
    ("adadelta", Adadelta, torch.optim.Adadelta,
     {"weight_decay": (0.0, 0.1), "maximize": _B},
     "running RMS of updates over running RMS of gradients"),
    ("adam", Adam, torch.optim.Adam,
     {"amsgrad": _B, "weight_decay": (0.0, 0.1), "decoupled_weight_decay": _B, "maximize": _B},
     "momentum + RMS scaling with bias correction"),
    ("adamw", AdamW, torch.optim.AdamW,
     {"amsgrad": _B, "weight_decay": (0.0, 0.1), "maximize": _B},
     "Adam with decoupled weight decay"),
):
    TWINS.append(registry.OptimizerInfo(
        name=_name, factory=_cls, hyperparameters=_cls.schema, description=_desc,
        torch_reference=_ref, option_grid=_grid,
        options=("compile", "compile_options", *(k for k in _TORCH_SWITCHES if k in _signature(_cls))),
        search_space=_SPACES[_name], aliases=_ALIASES.get(_name, {}), default_lr=_START_LR.get(_name),
    ))
