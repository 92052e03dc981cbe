"""The named schedules: seed 000's piecewise constant, exponential η₀·e^(−λt) and polynomial
η₀·(βt + 1)^(−α); step decay, cosine, warm-up, join, SGDR, 1cycle and warmup-stable-decay."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from .base import Schedule, _cos_interp, _int, _num, build_schedule, increasing


@dataclass(frozen=True)
class Constant(Schedule):
    """The same value at every step."""

    kind: ClassVar[str] = "constant"
    value: float

    def __post_init__(self) -> None:
        _num("value", self.value)

    def at(self, t: int) -> float:
        return self.value


def constant(value: float) -> Constant:
    """The same value at every step."""
    return Constant(value)


@dataclass(frozen=True)
class PiecewiseConstant(Schedule):
    """η_i for t_i ≤ t < t_{i+1}: ``values[i]`` from ``boundaries[i-1]`` (with t_0 = 0)."""

    kind: ClassVar[str] = "piecewise_constant"
    boundaries: tuple[int, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        b = increasing("boundaries", self.boundaries)
        v = tuple(_num(f"values[{i}]", x) for i, x in enumerate(self.values))
        if len(v) != len(b) + 1:
            raise ValueError(f"values needs len(boundaries) + 1 = {len(b) + 1} entries, got {len(v)}")
        object.__setattr__(self, "boundaries", b)
        object.__setattr__(self, "values", v)

    def at(self, t: int) -> float:
        return self.values[bisect.bisect_right(self.boundaries, t)]


piecewise_constant = PiecewiseConstant


@dataclass(frozen=True)
class Exponential(Schedule):
    """η₀·e^(−λt) (seed 000); torch's ExponentialLR(gamma) is rate = −ln(gamma)."""

    kind: ClassVar[str] = "exponential"
    init: float
    rate: float

    def __post_init__(self) -> None:
        _num("init", self.init)
        _num("rate", self.rate)

    def at(self, t: int) -> float:
        return self.init * math.exp(-self.rate * t)


exponential = Exponential


@dataclass(frozen=True)
class Polynomial(Schedule):
    """η₀·(βt + 1)^(−α) (seed 000); α = 0.5 gives the classic 1/√t decay."""

    kind: ClassVar[str] = "polynomial"
    init: float
    beta: float
    alpha: float

    def __post_init__(self) -> None:
        _num("init", self.init)
        _num("beta", self.beta, 0.0)
        _num("alpha", self.alpha, 0.0)

    def at(self, t: int) -> float:
        return self.init * (self.beta * t + 1.0) ** (-self.alpha)


polynomial = Polynomial


@dataclass(frozen=True)
class StepDecay(Schedule):
    """η₀·γ^⌊t / step_size⌋ (torch's StepLR)."""

    kind: ClassVar[str] = "step_decay"
    init: float
    step_size: int
    gamma: float = 0.1

    def __post_init__(self) -> None:
        _num("init", self.init)
        _int("step_size", self.step_size)
        _num("gamma", self.gamma, 0.0)

    def at(self, t: int) -> float:
        return self.init * self.gamma ** (t // self.step_size)


step_decay = StepDecay


@dataclass(frozen=True)
class Cosine(Schedule):
    """Cosine annealing from ``init`` to ``final`` over ``total_steps``, then ``final``
    (torch's CosineAnnealingLR up to T_max)."""

    kind: ClassVar[str] = "cosine"
    init: float
    total_steps: int
    final: float = 0.0

    def __post_init__(self) -> None:
        _num("init", self.init)
        _int("total_steps", self.total_steps)
        _num("final", self.final)

    def at(self, t: int) -> float:
        return _cos_interp(self.init, self.final, min(t, self.total_steps) / self.total_steps)


cosine = Cosine


@dataclass(frozen=True)
class LinearWarmup(Schedule):
    """Linear ramp from ``start`` (step 0) to ``peak`` (step ``warmup_steps``), then ``peak``."""

    kind: ClassVar[str] = "linear_warmup"
    peak: float
    warmup_steps: int
    start: float = 0.0

    def __post_init__(self) -> None:
        _num("peak", self.peak)
        _int("warmup_steps", self.warmup_steps)
        _num("start", self.start)

    def at(self, t: int) -> float:
        frac = min(t, self.warmup_steps) / self.warmup_steps
        return self.start + (self.peak - self.start) * frac


linear_warmup = LinearWarmup


@dataclass(frozen=True)
class Join(Schedule):
    """``schedules[i]`` from ``boundaries[i-1]`` on, each restarted at its own step 0
    (e.g. warm-up then decay)."""

    kind: ClassVar[str] = "join"
    schedules: tuple[Schedule, ...]
    boundaries: tuple[int, ...]

    def __post_init__(self) -> None:
        s = tuple(build_schedule(x) for x in self.schedules)
        b = increasing("boundaries", self.boundaries)
        if len(s) != len(b) + 1:
            raise ValueError(f"join needs len(boundaries) + 1 = {len(b) + 1} schedules, got {len(s)}")
        object.__setattr__(self, "schedules", s)
        object.__setattr__(self, "boundaries", b)

    def at(self, t: int) -> float:
        i = bisect.bisect_right(self.boundaries, t)
        return self.schedules[i].at(t - (self.boundaries[i - 1] if i else 0))


def join(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Join:
    """Run ``schedules`` one after another, switching at ``boundaries``."""
    return Join(tuple(schedules), tuple(boundaries))


def warmup(schedule: Schedule, warmup_steps: int, start: float = 0.0) -> Join:
    """Linear warm-up from ``start`` to ``schedule(0)``, then ``schedule`` from its step 0."""
    schedule = build_schedule(schedule)
    return join([LinearWarmup(schedule(0), warmup_steps, start), schedule], [warmup_steps])


@dataclass(frozen=True)
class Scale(Schedule):
    """``factor`` times another schedule."""

    kind: ClassVar[str] = "scale"
    schedule: Schedule
    factor: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "schedule", build_schedule(self.schedule))
        _num("factor", self.factor)

    def at(self, t: int) -> float:
        return self.factor * self.schedule.at(t)


scale = Scale


@dataclass(frozen=True)
class WarmRestarts(Schedule):
    """SGDR (Loshchilov & Hutter 2017): cosine from ``init`` to ``final`` over ``period``
    steps, then restart with the period multiplied by ``mult`` (torch's
    CosineAnnealingWarmRestarts)."""

    kind: ClassVar[str] = "warm_restarts"
    init: float
    period: int
    mult: int = 1
    final: float = 0.0

    def __post_init__(self) -> None:
        _num("init", self.init)
        _int("period", self.period)
        _int("mult", self.mult)
        _num("final", self.final)

    def at(self, t: int) -> float:
        if self.mult == 1:
            t_cur, t_i = t % self.period, self.period
        else:  # cycle i starts at period·(mult^i − 1)/(mult − 1)
            t_cur, t_i = t, self.period
            while t_cur >= t_i:
                t_cur, t_i = t_cur - t_i, t_i * self.mult
        return _cos_interp(self.init, self.final, t_cur / t_i)


warm_restarts = WarmRestarts


@dataclass(frozen=True)
class OneCycle(Schedule):
    """The 1cycle policy (Smith 2018), exactly torch's OneCycleLR: ramp from
    max_lr/div_factor up to ``max_lr`` over ``pct_start`` of the run, then anneal to
    max_lr/(div_factor·final_div_factor) at step total_steps − 1."""

    kind: ClassVar[str] = "one_cycle"
    max_lr: float
    total_steps: int
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    anneal: str = "cos"
    three_phase: bool = False

    def __post_init__(self) -> None:
        _num("max_lr", self.max_lr)
        _int("total_steps", self.total_steps, 2)
        if not 0.0 < _num("pct_start", self.pct_start) < 1.0:
            raise ValueError(f"pct_start must be in (0, 1), got {self.pct_start}")
        _num("div_factor", self.div_factor, 0.0, low_open=True)
        _num("final_div_factor", self.final_div_factor, 0.0, low_open=True)
        if self.anneal not in ("cos", "linear"):
            raise ValueError(f"anneal must be 'cos' or 'linear', got {self.anneal!r}")

    def at(self, t: int) -> float:
        lo = self.max_lr / self.div_factor
        end = lo / self.final_div_factor
        up = self.pct_start * self.total_steps - 1.0
        last = self.total_steps - 1.0
        if self.three_phase:
            phases = [(up, lo, self.max_lr), (2 * up, self.max_lr, lo), (last, lo, end)]
        else:
            phases = [(up, lo, self.max_lr), (last, self.max_lr, end)]
        begin = 0.0
        for i, (stop, a, b) in enumerate(phases):
            if t <= stop or i == len(phases) - 1:
                frac = min(max((t - begin) / (stop - begin), 0.0), 1.0)
                return _cos_interp(a, b, frac) if self.anneal == "cos" else a + (b - a) * frac
            begin = stop
        raise AssertionError("unreachable")


one_cycle = OneCycle


@dataclass(frozen=True)
class WarmupStableDecay(Schedule):
    """Warm-up → stable → decay (WSD): linear ramp ``start``→``peak`` over ``warmup_steps``,
    hold ``peak``, then decay to ``final`` over the last ``decay_steps`` of ``total_steps``
    (shape "linear", "cosine" or "sqrt", i.e. 1 − √frac)."""

    kind: ClassVar[str] = "warmup_stable_decay"
    peak: float
    total_steps: int
    warmup_steps: int
    decay_steps: int
    final: float = 0.0
    start: float = 0.0
    decay: str = "linear"

    def __post_init__(self) -> None:
        for n in ("peak", "final", "start"):
            _num(n, getattr(self, n))
        _int("total_steps", self.total_steps)
        _int("warmup_steps", self.warmup_steps, 0)
        _int("decay_steps", self.decay_steps, 0)
        if self.warmup_steps + self.decay_steps > self.total_steps:
            raise ValueError(
                f"warmup_steps + decay_steps ({self.warmup_steps} + {self.decay_steps}) "
                f"exceeds total_steps ({self.total_steps})"
            )
        if self.decay not in ("linear", "cosine", "sqrt"):
            raise ValueError(f"decay must be 'linear', 'cosine' or 'sqrt', got {self.decay!r}")

    def at(self, t: int) -> float:
        if t < self.warmup_steps:
            return self.start + (self.peak - self.start) * t / self.warmup_steps
        decay_start = self.total_steps - self.decay_steps
        if t < decay_start or self.decay_steps == 0:
            return self.peak
        frac = min(t - decay_start, self.decay_steps) / self.decay_steps
        if self.decay == "cosine":
            return _cos_interp(self.peak, self.final, frac)
        shape = math.sqrt(frac) if self.decay == "sqrt" else frac
        return self.peak + (self.final - self.peak) * shape


warmup_stable_decay = WarmupStableDecay
