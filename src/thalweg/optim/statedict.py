"""Checking an optimizer state dict whole before loading it, so a bad one is one clear error
(naming the group, parameter and key) and a failed load changes nothing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor

from .registry import Hyperparameter, HyperparameterError, check_values

if TYPE_CHECKING:
    from .core import FlatOptimizer

__all__ = ["check_loadable"]

#: the learning rate's check when an optimizer has no schema of its own
_LR = Hyperparameter("lr", 1.0, low=0.0, schedulable=True)
_SCHEDULE_STEP = Hyperparameter("lr_schedule_step", 0, kind="int", low=0)
_STEP = Hyperparameter("step", 0.0, low=0.0)


def _fail(msg: str) -> None:
    raise ValueError(f"cannot load this optimizer state: {msg}")


def check_loadable(opt: FlatOptimizer, sd: Any) -> None:
    """Raise a ValueError unless `sd` is a state dict `opt` can load completely."""
    name = type(opt).__name__
    if not isinstance(sd, Mapping):
        _fail(f"{name}.load_state_dict takes the dict state_dict() returns (keys 'state' and "
              f"'param_groups'), got {type(sd).__name__} {sd!r:.60}")
    missing = [k for k in ("state", "param_groups") if k not in sd]
    if missing:
        _fail(f"the state dict lacks {missing} (it has {sorted(map(str, sd))})")
    groups, state = sd["param_groups"], sd["state"]
    if not isinstance(groups, Sequence) or isinstance(groups, (str, bytes)):
        _fail(f"'param_groups' must be a list of dicts, got {type(groups).__name__}")
    if not isinstance(state, Mapping):
        _fail(f"'state' must be a dict keyed by parameter id, got {type(state).__name__}")
    if len(groups) != len(opt.param_groups):
        _fail(f"the state dict has {len(groups)} param group(s), this {name} has {len(opt.param_groups)}")
    schema = opt.schema or (_LR,)
    owner: dict[Any, tuple[int, int, Tensor, dict[str, Any]]] = {}
    for gi, (saved, ours) in enumerate(zip(groups, opt.param_groups, strict=True)):
        where = f"param group {gi}: "
        if not isinstance(saved, Mapping) or not isinstance(saved.get("params"), Sequence):
            _fail(f"{where}expected a dict with a 'params' list, got {saved!r:.80}")
        if len(saved["params"]) != len(ours["params"]):
            _fail(f"{where}the state dict has {len(saved['params'])} parameter(s), this {name} has "
                  f"{len(ours['params'])}")
        try:
            check_values(saved, schema, where)
            check_values(saved, (_SCHEDULE_STEP,), where)
        except HyperparameterError as e:
            _fail(str(e))
        merged = {**ours, **{k: v for k, v in saved.items() if k != "params"}}
        for j, (pid, p) in enumerate(zip(saved["params"], ours["params"], strict=True)):
            owner[pid] = (gi, j, p, merged)
    chains: dict[int, Any] = {}
    for pid, st in state.items():
        if pid not in owner:
            _fail(f"'state' has an entry for parameter id {pid!r}, which no param group lists")
        gi, j, p, group = owner[pid]
        where = f"state of parameter {j} of param group {gi}"
        if not isinstance(st, Mapping):
            _fail(f"{where}: expected a dict of tensors, got {type(st).__name__}")
        if not st:
            continue
        if gi not in chains:
            try:
                chains[gi] = opt.rule.build(group)
            except (KeyError, TypeError, ValueError) as e:
                _fail(f"param group {gi}: {e}")
        keys = chains[gi].state_keys
        lacking = [k for k in keys if k not in st]
        if lacking:
            _fail(f"{where} lacks {lacking} needed by {name} (it has {sorted(map(str, st))})")
        for k in keys:
            v = st[k]
            if not isinstance(v, Tensor):
                _fail(f"{where}: {k!r} must be a tensor, got {type(v).__name__}")
            if v.shape != p.shape:
                _fail(f"{where}: {k!r} has shape {tuple(v.shape)}, the parameter has {tuple(p.shape)}")
        if "step" in st:
            step = st["step"]
            if isinstance(step, Tensor):
                if step.numel() != 1:
                    _fail(f"{where}: 'step' must hold one number, got shape {tuple(step.shape)}")
                step = float(step.item())
            try:
                _STEP.check(step, where=f"{where}: 'step'")
            except HyperparameterError as e:
                _fail(str(e))
