"""The learning-rate range test (Smith, 2015): raise the learning rate exponentially over a few
hundred minibatches, watch the smoothed loss, stop when it blows up, and suggest a rate. The
model, the optimizer state and the RNG are restored exactly afterwards.

The curve the suggestion reads is smoothed *without lag*: a running median of 5 (single spikes
out), then a centered Gaussian of fixed width in log10(lr) (`width` decades). A trailing EMA,
as most range tests use, lags by ~1/(1 − β) steps — with β = 0.98 and 100 steps over 7
decades that is ~3 decades, so its "minimum" sits where the loss is already blowing up and
the suggestion moves with the number of steps. The EMA still decides when to stop (a few late
steps cost nothing there).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from thalweg.optim.engine.modes import train_mode

__all__ = ["LRFinderResult", "Rule", "figure_lr_find", "lr_find", "smooth", "suggest"]

Rule = Literal["steepest", "min/10"]
RULES: dict[str, str] = {
    "min/10": "one tenth of the learning rate at the smoothed loss's minimum",
    "steepest": "steepest descent of the smoothed loss before its minimum (most negative d loss / d log lr)",
}
#: the default rule: the minimum sits just below where training blows up, which does not
#: depend on the sweep's length; the steepest point does (the loss falls once the summed
#: learning rate is large enough, so twice the steps put it at about half the lr)
DEFAULT_RULE = "min/10"
#: σ of the centered Gaussian smoothing, in decades of learning rate
WIDTH = 0.15
LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class LRFinderResult:
    """The sweep: learning rates tried, raw and smoothed losses, the suggestion and its rule."""

    lrs: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    suggestion: float | None
    rule: str
    diverged: bool
    diverge_factor: float
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def best_lr(self) -> float:
        """The learning rate at the smoothed loss's minimum."""
        return float(self.lrs[int(np.nanargmin(self.smoothed))])

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, lrs=self.lrs, losses=self.losses, smoothed=self.smoothed,
                 suggestion=np.nan if self.suggestion is None else self.suggestion,
                 rule=self.rule, diverged=self.diverged)
        return path


def smooth(lrs: np.ndarray, losses: np.ndarray, width: float = WIDTH) -> np.ndarray:
    """The losses smoothed without lag: a running median of 5 (a single spike cannot move the
    curve), then a centered Gaussian of σ = `width` decades in log10(lr), so the same sweep
    sampled by 100 or 400 steps gives the same curve. Non-finite losses stay non-finite."""
    lrs, y = np.asarray(lrs, float), np.asarray(losses, float)
    out = np.full(len(y), np.inf)
    ok = np.isfinite(y)
    if not ok.any():
        return out
    x, v = np.log10(lrs[ok]), y[ok]
    med = np.array([np.median(v[max(0, i - 2): i + 3]) for i in range(len(v))])
    w = np.exp(-0.5 * ((x[:, None] - x[None, :]) / width) ** 2)
    out[ok] = (w @ med) / w.sum(axis=1)
    return out


def suggest(lrs: np.ndarray, smoothed: np.ndarray, rule: str = DEFAULT_RULE, skip: float = 0.1
            ) -> float | None:
    """The suggested learning rate from a sweep, by ``rule`` (see ``RULES``); None if too short.
    "steepest" looks only before the smoothed minimum, where the loss is still falling."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {sorted(RULES)}, got {rule!r}")
    lrs, smoothed = np.asarray(lrs, float), np.asarray(smoothed, float)
    ok = np.isfinite(smoothed)
    lrs, smoothed = lrs[ok], smoothed[ok]
    if len(lrs) < 3:
        return None
    i_min = int(np.argmin(smoothed))
    if rule == "min/10":
        return float(lrs[i_min] / 10)
    lo = min(int(skip * len(lrs)), max(i_min - 2, 0))  # ignore the first points
    seg = slice(lo, max(i_min + 1, lo + 3))
    slope = np.gradient(smoothed[seg], np.log(lrs[seg]))
    return float(lrs[seg][int(np.argmin(slope))])


def _batches(data: Any, batch_size: int, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
    """Endless minibatches from ``(x, y)`` tensors (random, seeded) or any iterable of batches."""
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        x, y = data
        if len(x) != len(y) or len(x) == 0:
            raise ValueError(f"data must be non-empty with len(x) == len(y), got {len(x)}, {len(y)}")
        while True:
            idx = torch.randperm(len(x), generator=generator)
            for i in range(0, len(x) - batch_size + 1 if len(x) >= batch_size else 1, batch_size):
                j = idx[i:i + batch_size]
                yield x[j], y[j]
    if not isinstance(data, Iterable):
        raise TypeError(f"data must be (x, y) tensors or an iterable of batches, got {type(data).__name__}")
    while True:
        empty = True
        for xb, yb in data:
            empty = False
            yield xb, yb
        if empty:
            raise ValueError("data yielded no batches")


def _set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        if isinstance(g.get("lr"), Tensor):
            g["lr"].fill_(lr)
        else:
            g["lr"] = lr


def lr_find(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: LossFn, data: Any, *,
            start_lr: float = 1e-7, end_lr: float = 10.0, num_steps: int = 100,
            batch_size: int = 64, beta: float = 0.98, diverge_factor: float = 4.0,
            rule: str = DEFAULT_RULE, seed: int = 0, width: float = WIDTH) -> LRFinderResult:
    """Sweep the learning rate from ``start_lr`` to ``end_lr`` geometrically over ``num_steps``
    minibatches; stop once a bias-corrected EMA (factor ``beta``) of the loss exceeds
    ``diverge_factor`` × its best.

    The curve that is returned and suggested from is :func:`smooth` (centered, ``width``
    decades), not the EMA. Model parameters and buffers, optimizer state and torch's RNG are
    restored bit for bit afterwards.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    if not (0 < start_lr < end_lr) or not math.isfinite(end_lr):
        raise ValueError(f"need 0 < start_lr < end_lr, got start_lr={start_lr!r}, end_lr={end_lr!r}")
    if not isinstance(num_steps, int) or num_steps < 3:
        raise ValueError(f"num_steps must be an int >= 3, got {num_steps!r}")
    if not 0 <= beta < 1:
        raise ValueError(f"beta must be in [0, 1), got {beta!r}")
    if not diverge_factor > 1:
        raise ValueError(f"diverge_factor must be > 1, got {diverge_factor!r}")
    if rule not in RULES:
        raise ValueError(f"rule must be one of {sorted(RULES)}, got {rule!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not (width > 0 and math.isfinite(width)):
        raise ValueError(f"width must be a positive number of decades, got {width!r}")

    saved_model = copy.deepcopy(model.state_dict())
    saved_opt = copy.deepcopy(optimizer.state_dict())
    saved_rng = torch.get_rng_state()
    was_training = model.training
    gen = torch.Generator().manual_seed(seed)
    lrs = start_lr * (end_lr / start_lr) ** (np.arange(num_steps) / (num_steps - 1))
    tried, raw = [], []
    avg, best, diverged = 0.0, math.inf, False
    try:
        with train_mode(optimizer):  # a schedule-free optimizer steps at y, in train mode
            model.train()
            batches = _batches(data, batch_size, gen)
            for i, lr in enumerate(lrs):
                xb, yb = next(batches)
                _set_lr(optimizer, float(lr))
                optimizer.zero_grad()
                loss = loss_fn(model(xb), yb)
                value = float(loss.detach())
                tried.append(float(lr))
                raw.append(value)
                if not math.isfinite(value):
                    diverged = True
                    break
                avg = beta * avg + (1 - beta) * value
                s = avg / (1 - beta ** (i + 1))
                best = min(best, s)
                if s > diverge_factor * best and i > 0:
                    diverged = True
                    break
                loss.backward()
                optimizer.step()
    finally:
        model.load_state_dict(saved_model)
        optimizer.load_state_dict(saved_opt)
        torch.set_rng_state(saved_rng)
        model.train(was_training)
    lr_arr, raw_arr = np.array(tried), np.array(raw)
    sm = smooth(lr_arr, raw_arr, width)
    return LRFinderResult(lr_arr, raw_arr, sm, suggest(lr_arr, sm, rule), rule, diverged,
                          diverge_factor, meta={"start_lr": start_lr, "end_lr": end_lr,
                                                "num_steps": num_steps, "beta": beta, "width": width})


def _y_window(res: LRFinderResult) -> tuple[float | None, float | None]:
    """The loss axis: from below the lowest raw *and* smoothed loss (a raw minimum is never
    clipped) to a margin above where the sweep started, so the divergence at the end does not
    squash the interesting part into a line."""
    sm = res.smoothed[np.isfinite(res.smoothed)]
    raw = res.losses[np.isfinite(res.losses)]
    if not len(sm) and not len(raw):
        return None, None
    lows = [float(a.min()) for a in (sm, raw) if len(a)]
    start = max(float(a[0]) for a in (sm, raw) if len(a))
    lo = min(lows)
    top = start + 0.6 * abs(start - lo) + 1e-12
    return lo - 0.08 * (top - lo), top


def figure_lr_find(res: LRFinderResult, title: str | None = None) -> Any:
    """Loss against learning rate (log axis): raw and smoothed, the suggestion and its rule."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.4))
    ax.plot(res.lrs, res.losses, color="C0", alpha=0.3, lw=1, label="loss (per batch)")
    ax.plot(res.lrs, res.smoothed, color="C0", lw=2, label=f"smoothed (centered, σ = {res.meta.get('width', WIDTH):g} decade)")
    ax.set_xscale("log")
    lo, top = _y_window(res)
    if lo is not None:
        ax.set_ylim(lo, top)
    if res.suggestion is not None:
        ax.axvline(res.suggestion, color="C3", ls="--", lw=1.5,
                   label=f"suggested lr = {res.suggestion:.2g}")

    ax.axvline(res.best_lr, color="0.4", ls=":", lw=1, label=f"minimum at lr = {res.best_lr:.2g}")
    if res.diverged:
        ax.scatter([res.lrs[-1]], [min(res.smoothed[-1], ax.get_ylim()[1])], marker="X", s=90,
                   c="C3", edgecolors="black", zorder=5,
                   label=f"stopped: loss > {res.diverge_factor:g}× best")
    ax.set_xlabel("learning rate (log)")
    if res.suggestion is not None:  # under the axis label: it never covers a loss
        ax.annotate(f"rule: {RULES[res.rule]}", (0.0, 0.0), xycoords="axes fraction", xytext=(0, -36),
                    textcoords="offset points", va="top", fontsize=8, color="C3")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(title or "learning-rate range test", fontsize=11)
    fig.tight_layout()
    return fig
