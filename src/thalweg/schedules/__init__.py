"""Learning-rate schedules as pure, closed-form functions of the step (resuming needs only
the step number). Every schedule is a frozen dataclass, callable ``step -> float``, that
round-trips through a plain dict (``to_dict`` / :func:`build_schedule`) for configs.

Seed 000's forms: piecewise constant η_i for t_i ≤ t < t_{i+1}, exponential η₀·e^(−λt),
polynomial η₀·(βt + 1)^(−α); seed 004's step decay and cosine annealing; seed 002's warm-up
and warm restarts. :func:`to_torch` adapts any schedule to a torch ``LRScheduler``.
"""

from .base import Schedule, ScheduleLR, build_schedule, plot, to_torch
from .library import (
    Constant,
    Cosine,
    Exponential,
    Join,
    LinearWarmup,
    OneCycle,
    PiecewiseConstant,
    Polynomial,
    Scale,
    StepDecay,
    WarmRestarts,
    WarmupStableDecay,
    constant,
    cosine,
    exponential,
    join,
    linear_warmup,
    one_cycle,
    piecewise_constant,
    polynomial,
    scale,
    step_decay,
    warm_restarts,
    warmup,
    warmup_stable_decay,
)

__all__ = [
    "Constant", "Cosine", "Exponential", "Join", "LinearWarmup", "OneCycle", "PiecewiseConstant",
    "Polynomial", "Scale", "Schedule", "ScheduleLR", "StepDecay", "WarmRestarts",
    "WarmupStableDecay", "build_schedule", "constant", "cosine", "exponential", "join",
    "linear_warmup", "one_cycle", "piecewise_constant", "plot", "polynomial", "scale",
    "step_decay", "to_torch", "warm_restarts", "warmup", "warmup_stable_decay",
]  # fmt: skip
