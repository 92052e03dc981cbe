"""One rank of a 2-process gloo run (tests/optim/test_distributed_wrappers.py starts two):
train a small model under a torch wrapper with a thalweg optimizer, then save this rank's final
parameters (or the error it met) to OUT.

    python distributed_worker.py SCENARIO RANK WORLD PORT OUT
"""

from __future__ import annotations

import sys
from datetime import timedelta

import torch
import torch.distributed as dist

import thalweg.optim as to

STEPS = 6


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))


def batch(rank: int, world: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank `rank`'s half of the global batch (the single-process reference takes all of it)."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 8, generator=g), torch.randn(32, 4, generator=g)
    n = 32 // world
    return x[rank * n:(rank + 1) * n], y[rank * n:(rank + 1) * n]


def factory(rule: str):
    return {"adamw": lambda ps: to.AdamW(ps, lr=0.02, weight_decay=0.1, compile=False),
            "shampoo": lambda ps: to.Shampoo(ps, lr=0.02, precondition_frequency=2),
            "sgd": lambda ps: to.SGD(ps, lr=0.05, momentum=0.9, compile=False),
            "adam_in_backward": lambda ps: to.Adam(ps, lr=0.02, compile=False, in_backward=True)}[rule]


def train(m: torch.nn.Module, opt: torch.optim.Optimizer, rank: int, world: int) -> None:
    x, y = batch(rank, world)
    for _ in range(STEPS):
        opt.zero_grad()
        torch.nn.functional.mse_loss(m(x), y).backward()
        opt.step()


def run(scenario: str, rank: int, world: int) -> list[torch.Tensor]:
    kind, rule, *opts = scenario.split(":")
    if kind == "single":  # the reference: one process, the whole batch
        m = model()
        train(m, factory(rule)(m.parameters()), 0, 1)
        return [p.detach() for p in m.parameters()]
    if kind == "zero1":
        from torch.distributed.optim import ZeroRedundancyOptimizer
        from torch.nn.parallel import DistributedDataParallel as DDP

        m = DDP(model())
        make = factory(rule)
        opt = ZeroRedundancyOptimizer(m.parameters(), optimizer_class=lambda ps, **kw: make(ps),
                                      parameters_as_bucket_view=opts[0] == "bucket")
        train(m, opt, rank, world)
        return [p.detach() for p in m.module.parameters()]
    if kind == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        m = DDP(model())
        train(m, factory(rule)(m.parameters()), rank, world)
        return [p.detach() for p in m.module.parameters()]
    if kind == "fsdp1":
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        orig = opts[0] == "orig"
        m = FSDP(model(), use_orig_params=orig, device_id=torch.device("cpu"))
        x, y = batch(rank, world)
        if opts[1] == "after_forward":  # the optimizer built after a first forward
            torch.nn.functional.mse_loss(m(x), y)
        opt = factory(rule)(m.parameters())
        train(m, opt, rank, world)
        with FSDP.summon_full_params(m):
            return [p.detach().clone() for p in m.parameters()]
    raise ValueError(scenario)


def main() -> None:
    scenario, rank, world, port, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
    torch.set_num_threads(1)
    if not scenario.startswith("single"):
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                                timeout=timedelta(seconds=60))
    try:
        result: object = run(scenario, rank, world)
    except Exception as e:
        result = f"{type(e).__name__}: {e}"
    torch.save(result, out)
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
