"""The elementwise contenders as named optimizers on the flat core, each a short transform
chain: NAdam, RAdam, Adamax (torch.optim's signatures, state and trajectories), Lion
(lion-pytorch's), Schedule-Free AdamW and SGD (schedulefree's). LAMB and LARS are in
:mod:`.large_batch`, Prodigy in :mod:`.prodigy`; their registry entries are in :mod:`.catalog`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from thalweg.optim.engine import plan
from thalweg.optim.engine.core import CompileMode, Rule
from thalweg.optim.engine.kernel import run_pass
from thalweg.optim.registry import Hyperparameter as H
from thalweg.optim.transforms import (
    Chain,
    Hyper,
    add_decayed_weights,
    decay_weights,
    scale_by_adamax,
    scale_by_lion,
    scale_by_lr,
    scale_by_nadam,
    scale_by_radam,
)
from thalweg.optim.transforms.adam_variants import mu_product
from thalweg.optim.transforms.context import scalar_dtype
from thalweg.optim.transforms.schedule_free import (
    InterpolateToZ,
    ScaleBySecondMoment,
    ScheduleFree,
    schedule_free_lr,
)

from .named import _BOOL, LR, _lr, _Named, _prefix, validate
from .twins import _adam_schema

__all__ = ["Adamax", "Lion", "NAdam", "RAdam", "ScheduleFreeAdamW", "ScheduleFreeSGD"]

_B0, _B1 = Hyper("betas", 0), Hyper("betas", 1)


def _decoupled_prefix(g: Mapping[str, Any]) -> list:
    """torch's order: maximize, then coupled L2 on the gradient or decoupled p ← p(1 − lr·λ)."""
    decoupled = g["decoupled_weight_decay"]
    ts = _prefix(g, coupled_decay=not decoupled)
    if decoupled and g["weight_decay"] != 0:
        ts.append(decay_weights(Hyper("weight_decay"), LR))
    return ts


def _no_amsgrad(schema: tuple[H, ...], lr: float) -> tuple[H, ...]:
    return tuple(_lr(lr) if h.name == "lr" else h for h in schema if h.name != "amsgrad")


# ---------------------------------------------------------------------------- NAdam
NADAM_SCHEMA = (*_no_amsgrad(_adam_schema(0.0, False), 2e-3),
                H("momentum_decay", 4e-3, low=0.0, help="ψ of the momentum schedule μ_t = β₁(1 − ½·0.96^(tψ))"),
                H("decoupled_weight_decay", False, **_BOOL))


class _NAdamRule(Rule):
    def key(self, g):
        return (g["maximize"], g["weight_decay"] != 0, g["decoupled_weight_decay"])

    def build(self, g):
        return Chain([*_decoupled_prefix(g), scale_by_nadam(_B0, _B1, Hyper("eps"), Hyper("momentum_decay")),
                      scale_by_lr(LR)])


class NAdam(_Named):
    """NAdam: Adam with Nesterov momentum and torch's momentum schedule; decoupled decay
    (NAdamW, AlgoPerf's baseline) as an option (torch.optim.NAdam).

    torch keeps `mu_product` (Π μ_t) per parameter; here it follows from the step count, so
    the state dict carries torch's value and one made with β₁/ψ changed mid-run is refused.
    """

    torch_twin = torch.optim.NAdam
    schema = NADAM_SCHEMA

    def __init__(self, params: Any, lr: Any = 2e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0, momentum_decay: float = 4e-3,
                 decoupled_weight_decay: bool = False, *, foreach: bool | None = None, maximize: bool = False,
                 capturable: bool = False, differentiable: bool = False, compile: CompileMode = "auto",
                 compile_options: Mapping[str, Any] | None = None) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, momentum_decay=momentum_decay,
                        decoupled_weight_decay=decoupled_weight_decay, maximize=maximize, foreach=foreach,
                        capturable=capturable, differentiable=differentiable)
        super().__init__(params, _NAdamRule(), defaults, compile, compile_options)

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        for g in sd["param_groups"]:
            for pid in g["params"]:
                st = sd["state"].get(pid)
                if st and "step" in st:  # torch's key order: step, mu_product, exp_avg, exp_avg_sq
                    mp = torch.tensor(mu_product(g["betas"][0], g["momentum_decay"], int(st["step"])),
                                      dtype=scalar_dtype())
                    sd["state"][pid] = {"step": st["step"], "mu_product": mp,
                                        **{k: v for k, v in st.items() if k != "step"}}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        try:
            groups, state = state_dict["param_groups"], state_dict["state"]
            pairs = [(gi, g, pid, state[pid]) for gi, g in enumerate(groups) for pid in g["params"] if pid in state]
        except (KeyError, TypeError):
            pairs = []  # malformed: the core's check names the problem
        for gi, g, pid, st in pairs:
            if not isinstance(st, Mapping) or "mu_product" not in st or "step" not in st:
                continue
            try:
                saved, step = float(st["mu_product"]), int(float(st["step"]))
                ours = mu_product(g["betas"][0], g["momentum_decay"], step)
            except (TypeError, ValueError, KeyError, IndexError, RuntimeError):
                continue
            if not math.isclose(saved, ours, rel_tol=1e-6, abs_tol=1e-38):
                raise ValueError(
                    f"cannot load this optimizer state: state of parameter {pid!r} of param group {gi}: "
                    f"'mu_product' is {saved:.9g}, but {step} steps with betas[0]={g['betas'][0]} and "
                    f"momentum_decay={g['momentum_decay']} give {ours:.9g} (thalweg's NAdam derives it "
                    "from the step: the run changed β₁ or ψ midway)")
        super().load_state_dict(state_dict)


# ---------------------------------------------------------------------------- RAdam
RADAM_SCHEMA = (*_no_amsgrad(_adam_schema(0.0, False), 1e-3), H("decoupled_weight_decay", False, **_BOOL))


class _RAdamRule(_NAdamRule):
    def build(self, g):
        return Chain([*_decoupled_prefix(g), scale_by_radam(_B0, _B1, Hyper("eps")), scale_by_lr(LR)])


class RAdam(_Named):
    """RAdam: Adam with the variance of its adaptive rate rectified (plain momentum for the
    first steps, while that variance is undefined); decoupled decay as an option (torch.optim.RAdam)."""

    torch_twin = torch.optim.RAdam
    schema = RADAM_SCHEMA

    def __init__(self, params: Any, lr: Any = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0, decoupled_weight_decay: bool = False, *,
                 foreach: bool | None = None, maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False, compile: CompileMode = "auto",
                 compile_options: Mapping[str, Any] | None = None) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize,
                        foreach=foreach, capturable=capturable, decoupled_weight_decay=decoupled_weight_decay,
                        differentiable=differentiable)
        super().__init__(params, _RAdamRule(), defaults, compile, compile_options)


# ---------------------------------------------------------------------------- Adamax
ADAMAX_SCHEMA = _no_amsgrad(_adam_schema(0.0, False), 2e-3)


class _AdamaxRule(Rule):
    def key(self, g):
        return (g["maximize"], g["weight_decay"] != 0)

    def build(self, g):
        return Chain([*_prefix(g), scale_by_adamax(_B0, _B1, Hyper("eps")), scale_by_lr(LR)])


class Adamax(_Named):
    """Adamax: Adam with the infinity norm in place of the second moment (torch.optim.Adamax)."""

    torch_twin = torch.optim.Adamax
    schema = ADAMAX_SCHEMA

    def __init__(self, params: Any, lr: Any = 2e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0, foreach: bool | None = None, *,
                 maximize: bool = False, differentiable: bool = False, capturable: bool = False,
                 compile: CompileMode = "auto", compile_options: Mapping[str, Any] | None = None) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, foreach=foreach,
                        maximize=maximize, differentiable=differentiable, capturable=capturable)
        super().__init__(params, _AdamaxRule(), defaults, compile, compile_options)


# ---------------------------------------------------------------------------- Lion
LION_SCHEMA = (
    _lr(1e-4),
    H("betas", (0.9, 0.99), kind="betas", low=0.0, high=1.0, high_inclusive=False,
      help="(β₁, β₂): β₁ interpolates the sign's argument, β₂ decays the momentum"),
    H("weight_decay", 0.0, low=0.0, help="decoupled decay p ← p(1 − lr·λ)"),
    H("decoupled_weight_decay", False, **_BOOL,
      help="λ per unit of lr/lr₀ (lion-pytorch's option): p ← p(1 − λ·lr/lr₀)"),
)


class _LionRule(Rule):
    def __init__(self, init_lr: float) -> None:
        self.init_lr = init_lr

    def key(self, g):
        return (g["weight_decay"] != 0, g["decoupled_weight_decay"])

    def build(self, g):
        ts = []
        if g["weight_decay"] != 0:
            ref = self.init_lr if g["decoupled_weight_decay"] else None
            ts.append(decay_weights(Hyper("weight_decay"), LR, ref))
        return Chain([*ts, scale_by_lion(_B0, _B1), scale_by_lr(LR)])


class Lion(_Named):
    """Lion: steps of constant size per coordinate, the sign of interpolated momentum; one
    state buffer (lion_pytorch.Lion's signature and trajectories)."""

    schema = LION_SCHEMA

    def __init__(self, params: Any, lr: Any = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0, decoupled_weight_decay: bool = False, *,
                 compile: CompileMode = "auto", compile_options: Mapping[str, Any] | None = None) -> None:
        defaults = dict(lr=lr, betas=betas, weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay)
        validate(defaults, self.schema)
        init_lr = float(lr(0)) if callable(lr) else float(lr)
        if decoupled_weight_decay and init_lr == 0:
            raise ValueError("Lion: decoupled_weight_decay divides by the initial lr, which is 0")
        super().__init__(params, _LionRule(init_lr), defaults, compile, compile_options)


# ---------------------------------------------------------------------------- Schedule-Free
def _sf_schema(lr: float, first: H) -> tuple[H, ...]:
    return (
        H("lr", lr, low=0.0, schedulable=True, help="constant: schedule-free needs no schedule (warmup_steps warms up)"),
        first,
        H("weight_decay", 0.0, low=0.0, help="λ·y added to the (normalized) gradient"),
        H("warmup_steps", 0, kind="int", low=0, help="linear warm-up of lr over this many steps"),
        H("r", 0.0, low=0.0, help="polynomial weighting t^r of the average"),
        H("weight_lr_power", 2.0, low=0.0, help="the average weights steps by lr_max^power"),
    )


SF_ADAMW_SCHEMA = (*_sf_schema(2.5e-3, H(
    "betas", (0.9, 0.999), kind="betas", low=0.0, high=1.0, low_inclusive=False, high_inclusive=False,
    help="β₁ interpolates y between z and x (the averaged iterate); β₂ decays the second moment")),
    H("eps", 1e-8, low=0.0))
SF_SGD_SCHEMA = _sf_schema(1.0, H("momentum", 0.9, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False,
                                  help="β: y = (1 − β)z + βx"))
_BOOKKEEPING = dict(k=0, train_mode=True, weight_sum=0.0, lr_max=-1.0, scheduled_lr=0.0)


class _SFAdamWRule(Rule):
    def key(self, g):
        return (g["weight_decay"] != 0,)

    def build(self, g):
        ts = [ScaleBySecondMoment(_B1, Hyper("eps"), step_key="k")]
        if g["weight_decay"] != 0:
            ts.append(add_decayed_weights(Hyper("weight_decay")))
        return Chain([*ts, ScheduleFree(_B0)])


class _SFSGDRule(_SFAdamWRule):
    def build(self, g):
        ts = [add_decayed_weights(Hyper("weight_decay"))] if g["weight_decay"] != 0 else []
        return Chain([*ts, ScheduleFree(Hyper("momentum"))])


class ScheduleFreeMixin:
    """The group bookkeeping and the train()/eval() switch of a schedule-free FlatOptimizer
    (mixed into ScheduleFreeAdamW / ScheduleFreeSGD; `_beta(group)` gives β)."""

    param_groups: list[dict[str, Any]]
    state: Any
    _segments: list[Any]
    _loose: list[tuple[int, Tensor]]

    def _beta(self, group: Mapping[str, Any]) -> float:
        raise NotImplementedError

    @property
    def training(self) -> bool:
        """True while the parameters hold y (where gradients are taken), False while x."""
        return bool(self.param_groups[0]["train_mode"]) if self.param_groups else True

    def _begin_step(self) -> None:
        if not self.training:
            raise RuntimeError(f"{type(self).__name__}.step() while in eval mode (the parameters hold "
                               "the averaged weights x): call optimizer.train() first")
        for g in self.param_groups:
            lr = g["scheduled_lr"] = schedule_free_lr(g)
            lr_max = g["lr_max"] = max(lr, g["lr_max"])
            g["weight_sum"] = g["weight_sum"] + ((g["k"] + 1) ** g["r"]) * (lr_max ** g["weight_lr_power"])

    def _end_step(self) -> None:
        for g in self.param_groups:
            g["k"] = g["k"] + 1

    @torch.no_grad()
    def eval(self) -> None:
        """Parameters ← x, the average to evaluate (no-op if already there)."""
        self._switch(train=False)

    @torch.no_grad()
    def train(self) -> None:
        """Parameters ← y, where gradients are taken (no-op if already there)."""
        self._switch(train=True)

    def _switch(self, train: bool) -> None:
        for gi, group in enumerate(self.param_groups):
            if bool(group["train_mode"]) == train:
                continue
            beta = self._beta(group)
            chain = Chain([InterpolateToZ(1 - beta if train else 1 - 1 / beta)])
            hp = chain.scalars(group, 1)
            for seg in self._segments:
                if seg.group_index != gi or "z" not in seg.state:
                    continue
                # parameters never stepped have no z yet (as in schedulefree); low-precision z is
                # decoded and re-encoded, master weights moved, as in a step
                plan.apply_chain(self, seg, chain, hp, [i for i, s in enumerate(seg.started) if s])
            for gj, p in self._loose:
                if gj == gi and "z" in self.state.get(p, {}):
                    run_pass(chain, p.data, p.data, [self.state[p]["z"]], hp, None, 0, None)
            group["train_mode"] = train


class ScheduleFreeAdamW(ScheduleFreeMixin, _Named):
    """Schedule-Free AdamW: no lr schedule, an online average x of the Adam iterates z; the
    parameters hold y in train mode, x after `eval()` (schedulefree.AdamWScheduleFree's
    trajectories, state and groups; starts in train mode)."""

    schema = SF_ADAMW_SCHEMA

    def __init__(self, params: Any, lr: Any = 2.5e-3, betas: tuple[float, float] = (0.9, 0.999),
                 weight_decay: float = 0.0, warmup_steps: int = 0, r: float = 0.0,
                 weight_lr_power: float = 2.0, eps: float = 1e-8, *, foreach: bool | None = None,
                 compile: CompileMode = "auto", compile_options: Mapping[str, Any] | None = None) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, r=r, warmup_steps=warmup_steps,
                        weight_lr_power=weight_lr_power, weight_decay=weight_decay, foreach=foreach,
                        **_BOOKKEEPING)
        super().__init__(params, _SFAdamWRule(), defaults, compile, compile_options)

    def _beta(self, group: Mapping[str, Any]) -> float:
        return float(group["betas"][0])


class ScheduleFreeSGD(ScheduleFreeMixin, _Named):
    """Schedule-Free SGD: the same averaging around plain SGD steps
    (schedulefree.SGDScheduleFree's trajectories; starts in train mode)."""

    schema = SF_SGD_SCHEMA

    def __init__(self, params: Any, lr: Any = 1.0, momentum: float = 0.9, weight_decay: float = 0.0,
                 warmup_steps: int = 0, r: float = 0.0, weight_lr_power: float = 2.0, *,
                 foreach: bool | None = None, compile: CompileMode = "auto",
                 compile_options: Mapping[str, Any] | None = None) -> None:
        defaults = dict(lr=lr, momentum=momentum, r=r, warmup_steps=warmup_steps,
                        weight_lr_power=weight_lr_power, weight_decay=weight_decay, foreach=foreach,
                        **_BOOKKEEPING)
        super().__init__(params, _SFSGDRule(), defaults, compile, compile_options)

    def _beta(self, group: Mapping[str, Any]) -> float:
        return float(group["momentum"])
