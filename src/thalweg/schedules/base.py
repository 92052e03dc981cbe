"""The schedule base class, dict (de)serialization, the torch ``LRScheduler`` adapter and
the plot helper."""

from __future__ import annotations

import dataclasses
import itertools
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["Schedule", "ScheduleLR", "build_schedule", "plot", "to_torch"]

_KINDS: dict[str, type[Schedule]] = {}


def _num(name: str, v: object, low: float | None = None, low_open: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise (ValueError if isinstance(v, float) else TypeError)(
            f"{name} must be a finite number, got {v!r}"
        )
    if low is not None and (v <= low if low_open else v < low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {v}")
    return float(v)


def _int(name: str, v: object, low: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{name} must be an int, got {v!r}")
    if v < low:
        raise ValueError(f"{name} must be >= {low}, got {v}")
    return v


def _cos_interp(start: float, end: float, frac: float) -> float:
    return end + (start - end) * (1.0 + math.cos(math.pi * frac)) / 2.0


@dataclass(frozen=True)
class Schedule:
    """A value as a pure function of the step: ``schedule(step) -> float`` for step ≥ 0."""

    kind: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            _KINDS[cls.kind] = cls

    def __call__(self, step: int) -> float:
        try:
            t = operator.index(step)
        except TypeError:
            raise TypeError(f"step must be an int, got {step!r}") from None
        if t < 0:
            raise ValueError(f"step must be >= 0, got {t}")
        return float(self.at(t))

    def at(self, t: int) -> float:
        """The schedule at integer step ``t`` ≥ 0 (unchecked; call the schedule instead)."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (TOML/JSON-able) that :func:`build_schedule` turns back into this."""
        out: dict[str, Any] = {"name": self.kind}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Schedule):
                v = v.to_dict()
            elif isinstance(v, tuple):
                v = [x.to_dict() if isinstance(x, Schedule) else x for x in v]
            out[f.name] = v
        return out

    def plot(self, path: str | Path, steps: int, **kwargs: Any) -> Path:
        """Write a PNG of this schedule over ``range(steps)``; see :func:`plot`."""
        return plot(self, steps, path, **kwargs)


def build_schedule(spec: Schedule | float | Mapping[str, Any]) -> Schedule:
    """A schedule from a number (constant), a schedule, or a dict ``{"name": kind, ...}`` as
    written by ``Schedule.to_dict`` (nested for join/scale)."""
    if isinstance(spec, Schedule):
        return spec
    if isinstance(spec, int | float) and not isinstance(spec, bool):
        return _KINDS["constant"](float(spec))
    if not isinstance(spec, Mapping):
        raise TypeError(f"schedule must be a number, a Schedule or a dict, got {spec!r}")
    kwargs = dict(spec)
    name = kwargs.pop("name", None)
    if name not in _KINDS:
        raise ValueError(f"schedule name must be one of {sorted(_KINDS)}, got {name!r}")
    cls = _KINDS[name]
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise TypeError(f"schedule {name!r} got unknown field(s) {unknown}; fields are {sorted(fields)}")
    if "schedules" in kwargs:
        kwargs["schedules"] = tuple(build_schedule(s) for s in kwargs["schedules"])
    for key in ("boundaries", "values"):
        if key in kwargs:
            kwargs[key] = tuple(kwargs[key])
    try:
        return cls(**kwargs)
    except TypeError as e:
        if "missing" in str(e):
            raise TypeError(f"schedule {name!r}: {e}") from None
        raise


class ScheduleLR(LRScheduler):
    """A torch ``LRScheduler`` that sets every param group's lr to ``schedule(step)``
    (absolute values, not multipliers); its state is only the step, so it checkpoints with
    ``weights_only=True``."""

    def __init__(self, optimizer: torch.optim.Optimizer, schedules: Sequence[Schedule]) -> None:
        if len(schedules) != len(optimizer.param_groups):
            raise ValueError(
                f"got {len(schedules)} schedules for {len(optimizer.param_groups)} param groups"
            )
        self.schedules = list(schedules)
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        return [s(self.last_epoch) for s in self.schedules]

    _get_closed_form_lr = get_lr

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "schedules")}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = {k: v for k, v in state_dict.items() if k not in ("optimizer", "schedules")}
        self.__dict__.update(state)
        for group, lr in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


def to_torch(
    schedule: Schedule | Sequence[Schedule], optimizer: torch.optim.Optimizer
) -> ScheduleLR:
    """Drive a plain torch optimizer's lr by a schedule (or one per param group): after
    construction lr = schedule(0); after the k-th ``scheduler.step()``, schedule(k)."""
    if isinstance(schedule, Sequence):
        schedules = [build_schedule(s) for s in schedule]
    else:
        schedules = [build_schedule(schedule)] * len(optimizer.param_groups)
    return ScheduleLR(optimizer, schedules)


def plot(
    schedules: Schedule | Mapping[str, Schedule],
    steps: int,
    path: str | Path,
    *,
    title: str | None = None,
    log: bool = False,
) -> Path:
    """Write a PNG of one schedule, or of several side by side (a dict name → schedule),
    over steps 0 … steps−1; ``log`` uses a logarithmic value axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _int("steps", steps)
    items = {"": schedules} if isinstance(schedules, Schedule) else dict(schedules)
    if not items:
        raise ValueError("schedules is empty")
    fig, axes = plt.subplots(1, len(items), figsize=(3.6 * len(items) + 0.8, 3.0), squeeze=False)
    ts = list(range(steps))
    for ax, (name, s) in zip(axes[0], items.items(), strict=True):
        s = build_schedule(s)
        ax.plot(ts, [s(t) for t in ts], lw=1.8, color="#1f5fa8")
        ax.set_title(name or title or s.kind, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if log:
            ax.set_yscale("log")
    axes[0][0].set_ylabel("learning rate")
    if title and len(items) > 1:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def increasing(name: str, values: Sequence[object]) -> tuple[int, ...]:
    """Validate strictly increasing positive int boundaries."""
    b = tuple(_int(f"{name}[{i}]", x) for i, x in enumerate(values))
    if any(x >= y for x, y in itertools.pairwise(b)):
        raise ValueError(f"{name} must be strictly increasing, got {list(b)}")
    return b
