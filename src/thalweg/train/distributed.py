"""Data-parallel plumbing: the same `thalweg train` under `torchrun` trains with DDP.

torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; we pick gloo on CPU and nccl on GPU. Each rank's
`thalweg.data.Loader` takes its interleaved shard of the epoch's order (a DistributedSampler),
so with the global batch split evenly the ranks together see exactly the batches of a single
process. Only rank 0 writes files.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["DistContext", "pick_device", "replicas", "setup", "teardown"]


@dataclass
class DistContext:
    """Who we are in the job: rank, world size and the device this rank trains on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order (a list of one without DDP)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def pick_device(preference: str, local_rank: int = 0) -> torch.device:
    """The device `[train] device` asks for ("auto": CUDA when there is one)."""
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            from thalweg.train.config import ConfigError

            raise ConfigError("train", "device", preference, "CUDA is not available here")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def setup(device: str = "auto", timeout_s: float = 600.0) -> DistContext:
    """Join the torchrun job if there is one (gloo on CPU, nccl on GPU), else a single process;
    a collective that waits more than `timeout_s` fails (a lost rank never hangs the others)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if world <= 1:
        return DistContext(device=dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    here = False
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
        here = True
    return DistContext(
        rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
        device=dev, initialized_here=here,
    )


def replicas(ctx: DistContext) -> Any:
    """The process group over which DDP replicates the model (None in one process): matrix
    rules split their work over it, one owner rank per matrix."""
    return dist.group.WORLD if ctx.enabled else None


def teardown(ctx: DistContext) -> None:
    """Leave the process group if :func:`setup` created it."""
    if ctx.initialized_here and dist.is_initialized():
        dist.destroy_process_group()
