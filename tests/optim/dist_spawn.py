"""Real multi-process runs for the distributed tests: `run(fn, world, *args)` starts `world`
processes on gloo (127.0.0.1, a free port; `backend="nccl"` on GPUs), each calling
`fn(rank, world, *args)` inside an initialized process group whose collectives time out, and
fails the test with the first worker's traceback, or when the whole run exceeds `timeout`
seconds (the workers are killed)."""

from __future__ import annotations

import datetime
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = ["COLLECTIVE_TIMEOUT", "run"]

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
    try:
        fn(rank, world, *args)
    finally:
        dist.destroy_process_group()


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
