"""FSDP2 in the trainer: `[distributed] strategy = "fsdp2"` under `torchrun` shards every
layer's parameters (`fully_shard`: each rank keeps its rows of each tensor, gathered for
forward and backward, gradients reduce-scattered), builds the optimizer over the shards,
and checkpoints model and optimizer through torch.distributed.checkpoint (DCP): each rank
writes its own shards into `checkpoints/step_N.dcp/`, beside the step file rank 0 writes.

A checkpoint directory is written under a temporary name and renamed once every rank has
finished, and the step file (which lists the SHA-256 of every file in the directory) is
written after that: a step file always has its shards, and a rank killed at any moment
leaves at most a temporary directory, removed at the next resume.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from thalweg.train.config import ConfigError, RunConfig
from thalweg.train.rundir.checkpoint import _debug_kill

__all__ = ["check", "full_model_state", "load", "save", "shard"]


def check(cfg: RunConfig, info: Any) -> None:
    """Refuse, naming the setting, what the trainer cannot run sharded."""
    o, d = cfg.optimizer, cfg.diagnostics
    if info.needs_model:
        raise ConfigError("optimizer", "name", o.name, "hooks into the model's layers, which FSDP2 replaces "
                          'with sharded ones; use [distributed] strategy = "ddp"')
    if d.monitors:
        raise ConfigError("diagnostics", "monitors", True, 'per-layer monitors read whole tensors; with [distributed] '
                          'strategy = "fsdp2" set monitors = false (or use strategy = "ddp")')
    if d.curvature_every:
        raise ConfigError("diagnostics", "curvature_every", d.curvature_every, "curvature probes run on rank 0 "
                          'alone, which a sharded model cannot; set 0 with [distributed] strategy = "fsdp2"')


def shard(model: nn.Module) -> nn.Module:
    """`fully_shard` every module that holds parameters of its own, then the root (one
    all-gather per layer, the root's for what is left)."""
    from torch.distributed.fsdp import fully_shard

    for m in list(model.modules()):
        if m is not model and any(True for _ in m.parameters(recurse=False)):
            fully_shard(m)
    fully_shard(model)
    return model


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights on CPU, on rank 0 (collective: every rank calls it; the
    others get {}), for best.pt and the report, which one process reads."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _states(model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_state_dict

    msd, osd = get_state_dict(model, opt)
    return {"model": msd, "optimizer": osd}


def _holds_state(opt: torch.optim.Optimizer) -> bool:
    """Whether the optimizer has state on every rank (False: on none, before its first step).

    DCP's `get_optimizer_state_dict` would otherwise create it by a step with zero gradients
    and lr 0, which advances every step counter (Adam's bias correction, Adafactor's decay)
    of the run being saved; a rank that owns no matrix of a matrix rule holds none either,
    and its lone step would wait forever for the others."""
    import torch.distributed as dist

    flag = torch.tensor([float(bool(opt.state))])
    dist.all_reduce(flag)
    n = int(flag.item())
    if 0 < n < dist.get_world_size():
        raise RuntimeError(f"{dist.get_world_size() - n} rank(s) hold no optimizer state (a matrix rule with "
                           "fewer matrices than ranks leaves some ranks without any); DCP cannot checkpoint "
                           "it: use fewer ranks or [distributed] strategy = \"ddp\"")
    return n > 0


def save(directory: Path, model: nn.Module, opt: torch.optim.Optimizer, main: bool) -> tuple[Path, bool]:
    """Write model and optimizer shards to `directory` (collective). Every rank writes into
    `.NAME.tmp`; after DCP's closing collective rank 0 renames it. Returns the directory and
    whether it holds optimizer state (not before the first step: see :func:`_holds_state`)."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    tmp = directory.with_name(f".{directory.name}.tmp")
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(directory, ignore_errors=True)  # a directory without its step file (killed before it)
    dist.barrier()
    with_opt = _holds_state(opt)
    dcp.save(_states(model, opt) if with_opt else {"model": get_model_state_dict(model)}, checkpoint_id=str(tmp))
    _debug_kill("shards-written")
    dist.barrier()
    if main:
        os.replace(tmp, directory)
        fd = os.open(directory.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    dist.barrier()
    return directory, with_opt


def load(directory: Path, model: nn.Module, opt: torch.optim.Optimizer | None) -> None:
    """Read model (and optimizer: `opt` not None) shards from `directory` into the sharded
    model (collective). Raises ValueError naming the directory when they do not fit."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        set_model_state_dict,
        set_state_dict,
    )

    state = _states(model, opt) if opt is not None else {"model": get_model_state_dict(model)}
    try:
        dcp.load(state, checkpoint_id=str(directory))
    except BaseException as e:  # DCP's CheckpointException is a BaseException
        if isinstance(e, KeyboardInterrupt | SystemExit):
            raise
        raise ValueError(f"{directory.name}/ does not load: {str(e).splitlines()[0][:300]}") from None
    if opt is None:
        set_model_state_dict(model, state["model"])
        return
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
