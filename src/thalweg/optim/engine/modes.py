"""Optimizers whose parameters during training are not the ones to evaluate.

Schedule-free optimizers take gradients at y but the model to evaluate, keep or save as best
is x (an average): they have `eval()` (parameters ← x) and `train()` (parameters ← y), as the
`schedulefree` package's do. Every evaluation path wraps itself in :func:`eval_mode`, every
training loop that may receive such an optimizer in any mode in :func:`train_mode`; for any
other optimizer both do nothing.

>>> with eval_mode(optimizer):
...     metrics = evaluate(model, x_val, y_val)
...     torch.save(model.state_dict(), "best.pt")   # x, the weights to use
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

__all__ = ["eval_mode", "has_modes", "is_training", "set_mode", "train_mode"]


def has_modes(optimizer: Any) -> bool:
    """Whether `optimizer` has the train()/eval() switch (thalweg's or schedulefree's)."""
    return callable(getattr(optimizer, "eval", None)) and callable(getattr(optimizer, "train", None))


def is_training(optimizer: Any) -> bool | None:
    """True/False for an optimizer with modes (its parameters hold y / x), None otherwise."""
    if not has_modes(optimizer):
        return None
    if hasattr(optimizer, "training"):
        return bool(optimizer.training)
    groups = getattr(optimizer, "param_groups", None) or [{}]
    return bool(groups[0].get("train_mode", True))


def set_mode(optimizer: Any, training: bool) -> None:
    """Switch an optimizer with modes to train (True) or eval (False); others are left alone."""
    if has_modes(optimizer) and is_training(optimizer) != training:
        (optimizer.train if training else optimizer.eval)()


@contextlib.contextmanager
def _mode(optimizer: Any, training: bool) -> Iterator[None]:
    before = is_training(optimizer)
    if before is None:
        yield
        return
    set_mode(optimizer, training)
    try:
        yield
    finally:
        set_mode(optimizer, before)


def eval_mode(optimizer: Any) -> contextlib.AbstractContextManager[None]:
    """Inside: the parameters are the ones to evaluate (x); the mode before is restored after."""
    return _mode(optimizer, False)


def train_mode(optimizer: Any) -> contextlib.AbstractContextManager[None]:
    """Inside: the parameters are the ones gradients are taken at (y); restored after."""
    return _mode(optimizer, True)
