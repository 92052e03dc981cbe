"""The distributed tests' shared cases: a small model with uneven shards, its batches, a
training loop, FSDP2 sharding, DCP save/load, and real multi-process runs.

`run(fn, world, *args)` starts `world`
processes on gloo (127.0.0.1, a free port; `backend="nccl"` on GPUs), each calling
`fn(rank, world, *args)` inside an initialized process group whose collectives time out, and
fails the test with the first worker's traceback, or when the whole run exceeds `timeout`
seconds (the workers are killed)."""

from __future__ import annotations

import datetime
import itertools
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

__all__ = ["COLLECTIVE_TIMEOUT", "STEPS", "assign", "full", "load", "make_batches", "make_model", "run", "same", "save",
           "shard", "train"]

#: every collective of a test run gives up after this long (a hung rank fails, never hangs)
COLLECTIVE_TIMEOUT = datetime.timedelta(seconds=60)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, fn: Callable[..., Any], world: int, port: int, args: tuple[Any, ...], backend: str) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    device = {"device_id": torch.device("cuda", rank)} if backend == "nccl" else {}
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=COLLECTIVE_TIMEOUT, **device)
    fn(rank, world, *args)
    # Success: wait until every rank is done with its collectives, then leave without the
    # interpreter's and the process group's C++ teardown. That teardown sometimes aborts
    # ("terminate called without an active exception", SIGABRT) after all the test's work has
    # passed, which torch.multiprocessing reports as a failed run. A failure above raises
    # instead, so spawn writes the worker's traceback and the test fails with it.
    dist.barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run(fn: Callable[..., Any], world: int, *args: Any, timeout: float = 180.0, backend: str = "gloo") -> None:
    """Run `fn(rank, world, *args)` on `world` ranks; raise if any fails or time runs out."""
    ctx = mp.start_processes(_entry, args=(fn, world, _free_port(), args, backend), nprocs=world, join=False,
                             start_method="spawn")
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=1.0):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
            raise TimeoutError(f"distributed test did not finish in {timeout:.0f} s")


STEPS = 4


def make_model(bias: bool) -> nn.Sequential:
    """Five layers: three matrices of one shape (a stack split across owners), rows 8, 8, 8,
    7 and 5 (uneven over 2 ranks), biases for the rules that stack vectors too."""
    torch.manual_seed(0)
    dims = [6, 8, 8, 8, 7, 5]
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(dims):
        layers += [nn.Linear(a, b, bias=bias), nn.Tanh()]
    return nn.Sequential(*layers[:-1])


def make_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(16, 6, generator=g), torch.randn(16, 5, generator=g)) for _ in range(STEPS)]


def train(net: nn.Module, opt: torch.optim.Optimizer, data: list[Any]) -> None:
    for x, y in data:
        opt.zero_grad()
        F.mse_loss(net(x), y).backward()
        opt.step()


def shard(model: nn.Sequential) -> nn.Sequential:
    from torch.distributed.fsdp import fully_shard

    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer)
    fully_shard(model)
    return model


def full(model: nn.Module) -> list[torch.Tensor]:
    return [p.full_tensor() if hasattr(p, "full_tensor") else p.detach() for p in model.parameters()]


def assign(model: nn.Module, values: list[torch.Tensor]) -> None:
    """Set the (maybe sharded) parameters of `model` to full values."""
    from torch.distributed.tensor import distribute_tensor

    with torch.no_grad():
        for p, v in zip(model.parameters(), values, strict=True):
            if hasattr(p, "to_local"):
                p.to_local().copy_(distribute_tensor(v.detach(), p.device_mesh, p.placements).to_local())
            else:
                p.copy_(v)


def same(a: list[torch.Tensor], b: list[torch.Tensor], what: str) -> None:
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        assert torch.equal(x, y), f"{what}: parameter {i} differs by {(x - y).abs().max().item():.3g}"


def save(model: nn.Module, opt: torch.optim.Optimizer, path: Path) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    msd, osd = get_state_dict(model, opt)
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(path))


def load(model: nn.Module, opt: torch.optim.Optimizer, path: Path) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    msd, osd = get_state_dict(model, opt)
    sd = {"model": msd, "optim": osd}
    dcp.load(sd, checkpoint_id=str(path))
    set_state_dict(model, opt, model_state_dict=sd["model"], optim_state_dict=sd["optim"])


def saved_by_one(make: Callable[..., torch.optim.Optimizer], bias: bool, data: list[Any], path: Path) -> None:
    """One process trains 2 steps and saves model and optimizer through DCP to `path`."""
    net = make_model(bias)
    opt = make(list(net.parameters()))
    train(net, opt, data[:2])
    save(net, opt, path)


def resumed_on_two(make: Callable[..., torch.optim.Optimizer], bias: bool, data: list[Any],
                   root: Path, name: str) -> dict[str, list[torch.Tensor]]:
    """On 2 ranks: train 2 steps sharded and save to `root/NAME-2`; then, from `NAME-2` and
    from `NAME-1` (one process's), a fresh sharded model and optimizer load and train on:
    their full weights at the end, per source."""
    a = shard(make_model(bias))
    oa = make(list(a.parameters()))
    train(a, oa, data[:2])
    save(a, oa, root / f"{name}-2")
    out = {}
    for source in ("2", "1"):
        b = shard(make_model(bias))
        ob = make(list(b.parameters()))
        load(b, ob, root / f"{name}-{source}")
        train(b, ob, data[2:])
        out[source] = full(b)
    return out


def resumed_on_one(make: Callable[..., torch.optim.Optimizer], bias: bool, data: list[Any],
                   path: Path) -> list[torch.Tensor]:
    """One process loads what 2 ranks saved at `path` and trains on: its weights at the end."""
    net = make_model(bias)
    opt = make(list(net.parameters()))
    load(net, opt, path)
    train(net, opt, data[2:])
    return list(net.parameters())
