"""Checking an optimizer state dict whole before loading it, so a bad one is one clear error
(naming the group, parameter and key) and a failed load changes nothing; loading it into the
segments' storage formats; converting a low-precision one to torch.optim's float32 layout.

Formats (docs/memory.md): a param group's `state_dtype` says how its state entries are
stored — absent/"fp32": torch's tensors; "bf16": the same keys as bfloat16 tensors; "int8":
each state key holds int8 codes of the parameter's shape, `<key>.scale` the float32 scales of
the `state_block_size`-element blocks it touches, and `block_offset` where it starts in the
first. `master_param` is a bf16 parameter's float32 master copy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from thalweg.optim.registry import Hyperparameter, HyperparameterError, check_values

from . import storage
from .flat import FlatCore
from .memory import MEMORY_SCHEMA

__all__ = ["apply_loaded", "check_loadable", "to_torch_state_dict"]

_MEMORY = tuple(h for h in MEMORY_SCHEMA if h.name in storage.MEMORY_KEYS)

#: the learning rate's check when an optimizer has no schema of its own
_LR = Hyperparameter("lr", 1.0, low=0.0, schedulable=True)
_SCHEDULE_STEP = Hyperparameter("lr_schedule_step", 0, kind="int", low=0)
_STEP = Hyperparameter("step", 0.0, low=0.0)


def _fail(msg: str) -> None:
    raise ValueError(f"cannot load this optimizer state: {msg}")


def check_loadable(opt: FlatCore, sd: Any) -> None:
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
    owner: dict[Any, tuple[int, int, Tensor, dict[str, Any], Mapping[str, Any]]] = {}
    for gi, (saved, ours) in enumerate(zip(groups, opt.param_groups, strict=True)):
        where = f"param group {gi}: "
        if not isinstance(saved, Mapping) or not isinstance(saved.get("params"), Sequence):
            _fail(f"{where}expected a dict with a 'params' list, got {saved!r:.80}")
        if len(saved["params"]) != len(ours["params"]):
            _fail(f"{where}the state dict has {len(saved['params'])} parameter(s), this {name} has "
                  f"{len(ours['params'])}")
        try:
            check_values(saved, schema, where)
            check_values(saved, (_SCHEDULE_STEP, *_MEMORY), where)
        except HyperparameterError as e:
            _fail(str(e))
        merged = {**ours, **{k: v for k, v in saved.items() if k != "params"}}
        for j, (pid, p) in enumerate(zip(saved["params"], ours["params"], strict=True)):
            owner[pid] = (gi, j, p, merged, saved)
    chains: dict[int, Any] = {}
    for pid, st in state.items():
        if pid not in owner:
            _fail(f"'state' has an entry for parameter id {pid!r}, which no param group lists")
        gi, j, p, group, saved_group = owner[pid]
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
        int8 = saved_group.get("state_dtype") == "int8"  # the checkpoint's format, not ours
        need = [*keys, *(f"{k}.scale" for k in keys)] + (["block_offset"] if keys else []) if int8 else keys
        lacking = [k for k in need if k not in st]
        if lacking:
            _fail(f"{where} lacks {lacking} needed by {name} (it has {sorted(map(str, st))})")
        for k in keys:
            v = st[k]
            if not isinstance(v, Tensor):
                _fail(f"{where}: {k!r} must be a tensor, got {type(v).__name__}")
            if v.shape != p.shape:
                _fail(f"{where}: {k!r} has shape {tuple(v.shape)}, the parameter has {tuple(p.shape)}")
            if int8:
                _check_int8(where, k, st, p, int(saved_group.get("state_block_size", storage.DEFAULT_BLOCK)))
        if "master_param" in st and (not isinstance(st["master_param"], Tensor) or st["master_param"].shape != p.shape):
            _fail(f"{where}: 'master_param' must be a tensor of the parameter's shape {tuple(p.shape)}")
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


def _check_int8(where: str, k: str, st: Mapping[str, Any], p: Tensor, block: int) -> None:
    codes, scale, off = st[k], st[f"{k}.scale"], st["block_offset"]
    if (codes.is_floating_point() and not bool(torch.equal(codes, codes.round()))) or (
            codes.numel() and (codes.min() < -128 or codes.max() > 127)):
        _fail(f"{where}: {k!r} must hold int8 codes (whole numbers in [-128, 127])")
    if isinstance(off, Tensor):
        off = off.item() if off.numel() == 1 else off
    if isinstance(off, bool) or not isinstance(off, int) or not 0 <= off < block:
        _fail(f"{where}: 'block_offset' must be an integer in [0, {block}), got {off!r}")
    blocks = -(-(off + p.numel()) // block)
    if not isinstance(scale, Tensor) or scale.shape != (blocks,):
        shape = tuple(scale.shape) if isinstance(scale, Tensor) else type(scale).__name__
        _fail(f"{where}: {k + '.scale'!r} must be a tensor of shape ({blocks},) "
              f"(blocks of {block} from offset {off}), got {shape}")


def _saved_entries(opt: FlatCore, sd: Mapping[str, Any]) -> dict[int, tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """id(param) → (its entry in the saved state, its saved param group), before torch's
    loader casts every floating tensor to the parameter's dtype (a float32 master copy of a
    bf16 parameter would lose its point)."""
    out = {}
    for saved, ours in zip(sd["param_groups"], opt.param_groups, strict=True):
        for pid, p in zip(saved["params"], ours["params"], strict=True):
            if pid in sd["state"]:
                out[id(p)] = (sd["state"][pid], saved)
    return out


def apply_loaded(opt: FlatCore, sd: Mapping[str, Any], torch_load: Callable[[Any], None]) -> None:
    """Load a checked state dict: torch's loader for the groups, then every segment's state
    written in this optimizer's own formats (int8 ↔ bf16 ↔ float32 converted; the same
    int8 layout copied code for code, so a save/load round trip is exact)."""
    schedules = {i: g["lr"] for i, g in enumerate(opt.param_groups)
                 if callable(g["lr"]) and not isinstance(g["lr"], Tensor)}
    mine = [{k: g[k] for k in storage.MEMORY_KEYS if k in g} for g in opt.param_groups]
    saved = _saved_entries(opt, sd)
    torch_load(sd)
    schedule_steps: dict[int, int] = {}
    for i, g in enumerate(opt.param_groups):
        if "lr_schedule_step" in g:
            schedule_steps[i] = int(g.pop("lr_schedule_step"))
        if i in schedules:
            g["lr"] = schedules[i]
        for k in storage.MEMORY_KEYS:  # this optimizer's formats, not the checkpoint's
            g.pop(k, None)
        g.update(mine[i])
    for seg in opt._segments:
        chain = opt._ensure_chain(seg)
        layout = seg.layout
        assert layout is not None
        seg.fn = None
        entries = [saved.get(id(p), ({}, {})) for p in seg.params]
        for k in chain.state_keys:
            storage.write_params(seg, layout, k, [_saved_values(seg, layout, k, i, e, g) for i, (e, g) in enumerate(entries)])
        for i, (entry, _) in enumerate(entries):
            if not entry:  # never stepped (or a stateless rule such as plain SGD)
                seg.started[i] = False
                seg.steps[i] = schedule_steps.get(seg.group_index, 0)
                seg.step_t[i] = 0
                continue
            if layout.master and seg.master is not None:
                seg._view(seg.master, i).copy_(entry.get("master_param", seg.p_views[i]))
            if "step" in entry:
                n = float(entry["step"])
            else:  # SGD keeps no step; a momentum buffer means at least one step was taken
                n = float(max(1, schedule_steps.get(seg.group_index, 1)))
            seg.steps[i] = int(n)
            seg.step_t[i] = n
            opt._start(seg, i)


def _saved_values(seg: Any, layout: Any, k: str, i: int, entry: Mapping[str, Any],
                  group: Mapping[str, Any]) -> Tensor | None:
    """Parameter i's saved values of state `k` to write (None: nothing saved, or the same
    int8 codes and scales, copied here as they are so a round trip is exact)."""
    if not entry:
        return None
    if group.get("state_dtype") != "int8":
        return entry[k].to(seg.device)
    block, off = int(group.get("state_block_size", storage.DEFAULT_BLOCK)), seg.offsets[i]
    if layout.quantized and block == layout.block and int(entry["block_offset"]) == off % block:
        seg._view(seg.state[k], i).copy_(entry[k].to(torch.int8))
        seg.scales[k][off // block : off // block + entry[f"{k}.scale"].numel()] = entry[f"{k}.scale"]
        return None
    return storage.decode_saved(entry, k, block).to(seg.device)


def to_torch_state_dict(sd: Mapping[str, Any]) -> dict[str, Any]:
    """A thalweg state dict with bf16 or int8 state as torch.optim's float32 layout (codes
    dequantized; scales, offsets, master copies and the memory options dropped), for
    `torch.optim.Adam(...).load_state_dict`. The error is the format's (docs/memory.md)."""
    groups = []
    fmt: dict[Any, tuple[str | None, int]] = {}
    for g in sd["param_groups"]:
        groups.append({k: v for k, v in g.items() if k not in storage.MEMORY_KEYS})
        for pid in g["params"]:
            fmt[pid] = (g.get("state_dtype"), int(g.get("state_block_size", storage.DEFAULT_BLOCK)))
    state: dict[Any, dict[str, Any]] = {}
    for pid, entry in sd["state"].items():
        kind, block = fmt.get(pid, (None, storage.DEFAULT_BLOCK))
        out: dict[str, Any] = {}
        for k, v in entry.items():
            if k.endswith(".scale") or k in ("block_offset", "master_param"):
                continue
            if kind == "int8" and isinstance(v, Tensor) and k != "step":
                v = storage.decode_saved(entry, k, block)
            elif kind == "bf16" and isinstance(v, Tensor) and k != "step":
                v = v.float()
            out[k] = v
        state[pid] = out
    return {**{k: v for k, v in sd.items() if k not in ("state", "param_groups")},
            "state": state, "param_groups": groups}
