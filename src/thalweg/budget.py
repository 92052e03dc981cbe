"""What a command will cost before it starts — memory and least compute time — and the one cap
every command applies: refused, naming the field to change, when it cannot fit in the free
memory or in a year. `thalweg train` (the model's own estimate, `thalweg.train.budget`),
`thalweg meta`, the bench and the data files all measure with these.

The time is a lower bound (peak FLOP rate, a per-step floor), so a refusal is never wrong;
the memory is what the arrays will hold, so a file or a batch that cannot fit is refused
in milliseconds instead of an allocation traceback minutes in.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

__all__ = ["MAX_SECONDS", "STEP_FLOOR_S", "available_bytes", "duration", "flop_rate", "forward_cost",
           "memory_problem", "size", "time_problem"]

_CPU_FLOPS_PER_THREAD = 2e11  # optimistic (AVX-512 FMA peak), so the time is a lower bound
_CUDA_FLOPS = 1e15
STEP_FLOOR_S = 20e-6  # a loop's own per-step work (Python, a fused optimizer kernel)
MAX_SECONDS = 365 * 24 * 3600.0


def size(n: float | None) -> str:
    """Bytes as text: 3.2 GB."""
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1024 or unit == "PB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} EB"


def duration(s: float) -> str:
    """Seconds as text: 4.2 days."""
    for unit, span in (("years", 365 * 86400.0), ("days", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if s >= span:
            return f"{s / span:.3g} {unit}"
    return f"{s:.2g} s"


def available_bytes(device: torch.device | str = "cpu") -> int | None:
    """Free memory on `device` now (CPU: MemAvailable), or None when unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def flop_rate(device: torch.device | str = "cpu", threads: int | None = None) -> float:
    """Peak FLOP/s of `device` (CPU: per thread × threads), optimistic on purpose."""
    if torch.device(device).type == "cuda":
        return _CUDA_FLOPS
    return _CPU_FLOPS_PER_THREAD * (threads or torch.get_num_threads())


def forward_cost(model: nn.Module, x: torch.Tensor) -> tuple[float, int, int]:
    """(FLOPs, activation bytes, largest activation bytes) of one example's forward pass, by
    forward hooks on the leaf modules, in eval mode and without grad (nothing changes)."""
    cost = [0.0, 0, 0]

    def hook(mod: nn.Module, inp: Any, out: Any) -> None:
        if not isinstance(out, torch.Tensor):
            return
        n = out.numel() * out.element_size()
        cost[1] += n
        cost[2] = max(cost[2], n)
        if isinstance(mod, nn.Linear):
            cost[0] += 2.0 * mod.in_features * out.numel()
        elif isinstance(mod, nn.modules.conv._ConvNd):
            cost[0] += 2.0 * (mod.weight.numel() // mod.out_channels) * out.numel()
        else:
            cost[0] += out.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if not any(m.children())]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    return cost[0], int(cost[1]), int(cost[2])


def memory_problem(need: float, device: torch.device | str = "cpu", what: str = "this run") -> str | None:
    """Why `need` bytes cannot fit in the free memory of `device` (None: they fit, or the free
    memory is unknown) — the words of every refusal."""
    avail = available_bytes(device)
    if avail is None or need <= avail:
        return None
    return f"{what} needs about {size(need)} of memory, but the {torch.device(device).type} device has {size(avail)} free"


def time_problem(seconds: float, what: str = "this run", detail: str = "") -> str | None:
    """Why a command that needs at least `seconds` is refused (None: under a year)."""
    if seconds <= MAX_SECONDS:
        return None
    return f"{what} would take at least {duration(seconds)}{f' ({detail})' if detail else ''}; lower it"
