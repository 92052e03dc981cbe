"""The non-finite guard: what blew up, and what the loop should do about it.

The guard decides; the loop acts. :func:`on_nonfinite` counts a NaN/inf step in the
:class:`~thalweg.train.rundir.state.TrainState` and returns a :class:`Decision`: skip the step, roll
back to the newest good checkpoint with a lower lr, or stop with a message that names the
culprit and gives advice that fits the config.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch

from thalweg.train.config import RunConfig
from thalweg.train.rundir.state import TrainState

__all__ = ["Action", "Decision", "NonFiniteError", "first_nonfinite_grad", "on_nonfinite"]


class NonFiniteError(RuntimeError):
    """Training produced NaN/inf too often; `what` names the loss or the parameter."""

    def __init__(self, message: str, *, what: str, step: int) -> None:
        super().__init__(message)
        self.what, self.step = what, step


class Action(enum.Enum):
    """What the loop does after a non-finite step."""

    SKIP = "skip"  # drop this step's gradient and go on
    ROLLBACK = "rollback"  # restore the newest good checkpoint, lr × rollback_lr_factor
    STOP = "stop"  # raise NonFiniteError(message)


@dataclass(frozen=True)
class Decision:
    action: Action
    what: str  # "loss", "gradient of layer 'net.3.weight'", ...
    message: str = ""  # for STOP: the reason and the advice


def first_nonfinite_grad(names: list[str], params: list[torch.Tensor]) -> str:
    """'gradient of layer <name>' for the first parameter (in model order) with a NaN/inf
    gradient; if every entry is finite the norm itself overflowed: name the largest one."""
    largest, where = -1.0, "?"
    for name, p in zip(names, params, strict=True):
        if p.grad is None:
            continue
        if not bool(torch.isfinite(p.grad).all()):
            return f"gradient of layer {name!r}"
        m = float(p.grad.abs().max()) if p.grad.numel() else 0.0
        if m > largest:
            largest, where = m, name
    return f"gradient norm (overflow; largest entry {largest:.3g} in layer {where!r})"


def advice(cfg: RunConfig) -> str:
    """What to change after a blow-up, without suggesting what is already set — and not the
    learning rate when `eps = 0` is the cause (an adaptive rule divides 0 by 0 where a
    gradient is zero, at any learning rate)."""
    if cfg.optimizer.hyperparameters().get("eps") == 0:
        return ("set [optimizer] eps above 0 (e.g. 1e-8): with eps = 0 the update divides by zero wherever a "
                "gradient is zero, whatever the learning rate")
    clip = cfg.regularization.clip_norm
    if clip is None:
        return "lower [optimizer] lr or set [regularization] clip_norm"
    return f"lower [optimizer] lr (gradients are already clipped at clip_norm = {clip:g})"


def on_nonfinite(state: TrainState, cfg: RunConfig, what: str) -> Decision:
    """Count a NaN/inf step; K in a row: roll back, unless `max_rollbacks` are spent: stop."""
    t = cfg.train
    state.streak += 1
    state.skipped += 1
    if state.streak < t.nonfinite_patience:
        return Decision(Action.SKIP, what)
    if state.rollbacks >= t.max_rollbacks:
        msg = (f"training stopped at step {state.step}: {state.streak} non-finite steps in a row "
               f"(last: {what}) after {state.rollbacks} rollback(s) with lr x"
               f"{t.rollback_lr_factor}; {advice(cfg)}")
        return Decision(Action.STOP, what, msg)
    return Decision(Action.ROLLBACK, what)
