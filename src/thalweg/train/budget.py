"""Before a run starts: its parameters, memory and least possible time — and a refusal that
names the field when it cannot fit.

The model is built on the `meta` device (no memory, no random numbers drawn) and one training
batch goes forward and backward under torch's `FlopCounterMode`, with a saved-tensor hook
summing what autograd keeps for backward. So `width = 10**7` is refused in milliseconds with
the memory it would need, instead of an allocation traceback minutes later.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from thalweg.train.config import ConfigError, RunConfig

__all__ = ["Estimate", "check_fits", "estimate"]

# copies of the parameters a run holds: weights, gradients, two optimizer slots (Adam's
# moments), and the checkpoint and best.pt snapshots taken while the disk is written
_PARAM_COPIES = 7
_CPU_FLOPS_PER_THREAD = 2e11  # optimistic (AVX-512 FMA peak), so the time is a lower bound
_CUDA_FLOPS = 1e15
_STEP_FLOOR_S = 20e-6  # the loop's own per-step work (Python, a fused optimizer kernel)
_MAX_SECONDS = 365 * 24 * 3600.0


@dataclass(frozen=True)
class Estimate:
    """What a run will cost, computed from the config and the data before anything is built."""

    parameters: int
    param_bytes: int  # all copies of the parameters (see _PARAM_COPIES)
    activation_bytes: int  # kept for backward by one training batch, plus one eval batch
    data_bytes: int  # the splits, counted when they move to an accelerator
    available_bytes: int | None  # free memory on the device now (None: unknown)
    flops: float  # total training and evaluation FLOPs
    min_seconds: float  # a lower bound: peak throughput, no overhead

    @property
    def memory_bytes(self) -> int:
        return self.param_bytes + self.activation_bytes + self.data_bytes

    def describe(self) -> str:
        avail = f" of {_size(self.available_bytes)} free" if self.available_bytes else ""
        return (f"{self.parameters:,} parameters, ~{_size(self.memory_bytes)} of memory{avail}, "
                f"at least {_duration(self.min_seconds)} of compute")


def _size(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1024 or unit == "PB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} EB"


def _duration(s: float) -> str:
    for unit, size in (("years", 365 * 86400.0), ("days", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if s >= size:
            return f"{s / size:.3g} {unit}"
    return f"{s:.2g} s"


def _available(device: torch.device) -> int | None:
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


def estimate(cfg: RunConfig, splits: Any, device: torch.device, total_steps: int,
             world_size: int = 1) -> Estimate:
    """Parameters, memory and least time of the run `cfg` on `splits` (shapes only are used)."""
    from torch.utils.flop_counter import FlopCounterMode

    from thalweg.train.components import build_model

    t = cfg.train
    batch = max(1, t.batch_size // world_size)
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        model = build_model(cfg, splits)
        params = {id(p) for p in model.parameters()}
        n_params = sum(p.numel() for p in model.parameters())
        p_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        x = torch.empty((batch, *splits.in_shape), dtype=splits.x_train.dtype)
        saved = [0, 0]  # total, largest per row

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            if id(tensor) not in params:
                size = tensor.numel() * tensor.element_size()
                saved[0] += size
                saved[1] = max(saved[1], size // batch)
            return tensor

        try:
            with FlopCounterMode(display=False) as fc, \
                    torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
                model(x).float().sum().backward()
            step_flops = float(fc.get_total_flops())
        except Exception:  # an op without a meta kernel: the estimate never blocks a run
            step_flops, saved = 6.0 * n_params * batch, [0, 0]
    n_val = len(splits.x_val)
    evals = t.epochs if not t.eval_every else max(1, total_steps // t.eval_every)
    flops = step_flops * total_steps + step_flops / 3 / batch * n_val * evals
    if device.type == "cuda":
        rate = _CUDA_FLOPS
    else:
        rate = _CPU_FLOPS_PER_THREAD * (t.num_threads or torch.get_num_threads())
    data = 0
    if device.type != "cpu":
        data = sum(getattr(splits, k).numel() * getattr(splits, k).element_size()
                   for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"))
    return Estimate(
        parameters=n_params, param_bytes=p_bytes * _PARAM_COPIES,
        activation_bytes=saved[0] + 2 * saved[1] * min(t.eval_batch_size, max(n_val, 1)),
        data_bytes=data, available_bytes=_available(device), flops=flops,
        min_seconds=max(flops / rate, total_steps * _STEP_FLOOR_S),
    )


def check_fits(est: Estimate, cfg: RunConfig, device: torch.device) -> None:
    """Refuse, naming the field to change, a run that cannot fit in memory or in a year."""
    if est.available_bytes is not None and est.memory_bytes > est.available_bytes:
        m = cfg.model
        if est.activation_bytes > est.param_bytes:
            section, field, value = "train", "batch_size", cfg.train.batch_size
        else:
            section = "model"
            field = next((k for k in ("width", "channels", "depth", "kernel_size")
                          if getattr(m, k) is not None), "name")
            value = getattr(m, field)
        raise ConfigError(section, field, value,
                          f"this run needs about {_size(est.memory_bytes)} of memory "
                          f"({est.parameters:,} parameters: {_size(est.param_bytes)} with "
                          f"gradients, optimizer state and checkpoint copies; "
                          f"{_size(est.activation_bytes)} of activations), but the {device.type} "
                          f"device has {_size(est.available_bytes)} free")
    if est.min_seconds > _MAX_SECONDS:
        raise ConfigError("train", "epochs", cfg.train.epochs,
                          f"this run would take at least {_duration(est.min_seconds)} "
                          f"({est.flops:.3g} FLOPs at the device's peak rate); lower it")
