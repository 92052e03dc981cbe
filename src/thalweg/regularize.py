"""Regularization (seed 002): explicit penalties (L1, L2, entropy/confidence), structural
(label smoothing), data (mixup, cutout), process (early stopping, FGSM adversarial
examples) and gradient clipping against exploding gradients. Dropout and normalization are
model switches (:mod:`thalweg.models`).

L2 here is *coupled*: ``l2_penalty`` is added to the loss, so its gradient λθ passes through
the optimizer's preconditioner — exactly torch's ``weight_decay`` in SGD/Adam. AdamW instead
*decouples* the decay (θ ← θ − ηλθ outside the adaptive step); the tests show both.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "EarlyStopping",
    "Mixed",
    "clip_grad_norm",
    "clip_grad_value",
    "confidence_penalty",
    "cutout",
    "fgsm",
    "l1_penalty",
    "l2_penalty",
    "label_smoothing",
    "mixup",
]

Params = nn.Module | Iterable[torch.Tensor]


def _params(params: Params, weights_only: bool) -> list[torch.Tensor]:
    ps = list(params.parameters() if isinstance(params, nn.Module) else params)
    if not all(isinstance(p, torch.Tensor) for p in ps):
        raise TypeError("params must be an nn.Module or an iterable of tensors")
    ps = [p for p in ps if p.dim() >= 2] if weights_only else ps
    if not ps:
        raise ValueError("no parameters to penalize" + (" (weights_only=True)" if weights_only else ""))
    return ps


def _nonneg(name: str, v: float) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    return float(v)


def l1_penalty(params: Params, weight: float = 1.0, weights_only: bool = False) -> torch.Tensor:
    """weight·Σ|θ| (lasso; drives parameters to exactly zero). ``weights_only`` skips 1-D
    parameters (biases, norm scales)."""
    w = _nonneg("weight", weight)
    return w * sum(p.abs().sum() for p in _params(params, weights_only))  # type: ignore[return-value]


def l2_penalty(params: Params, weight: float = 1.0, weights_only: bool = False) -> torch.Tensor:
    """weight/2·Σθ², whose gradient weight·θ is torch's coupled ``weight_decay``."""
    w = _nonneg("weight", weight)
    total = sum(p.square().sum() for p in _params(params, weights_only))
    return 0.5 * w * total  # type: ignore[return-value]


def label_smoothing(logits: torch.Tensor, target: torch.Tensor, smoothing: float = 0.1,
                    reduction: str = "mean") -> torch.Tensor:  # fmt: skip
    """Cross-entropy against (1−ε)·one-hot + ε/K (Szegedy et al. 2016): the model is never
    asked for infinite logits. Wraps ``F.cross_entropy(label_smoothing=ε)``."""
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    return F.cross_entropy(logits, target, label_smoothing=smoothing, reduction=reduction)


def confidence_penalty(logits: torch.Tensor, weight: float = 0.1,
                       reduction: str = "mean") -> torch.Tensor:  # fmt: skip
    """−weight·H(softmax(logits)) (Pereyra et al. 2017, entropy regularization): add it to the
    loss to penalize over-confident (low-entropy) predictions."""
    w = _nonneg("weight", weight)
    logp = F.log_softmax(logits, dim=-1)
    entropy = -(logp.exp() * logp).sum(dim=-1)
    if reduction == "none":
        return -w * entropy
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    return -w * (entropy.mean() if reduction == "mean" else entropy.sum())


class Mixed(NamedTuple):
    """A mixup batch: inputs λ·x + (1−λ)·x[perm], both label sets and λ."""

    x: torch.Tensor
    y_a: torch.Tensor
    y_b: torch.Tensor
    lam: float

    def loss(self, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
             output: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """λ·loss(output, y_a) + (1−λ)·loss(output, y_b) — the mixup objective."""
        return self.lam * loss_fn(output, self.y_a) + (1.0 - self.lam) * loss_fn(output, self.y_b)


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float = 0.2,
          generator: torch.Generator | None = None) -> Mixed:  # fmt: skip
    """Mixup (Zhang et al. 2018): blend the batch with a shuffled copy, λ ~ Beta(α, α).
    λ is drawn by inverse CDF from ``generator``, so a checkpointed generator resumes exactly."""
    from scipy.special import betaincinv

    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]}")
    u = float(torch.rand((), generator=generator))
    lam = float(betaincinv(alpha, alpha, u))
    perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
    return Mixed(lam * x + (1.0 - lam) * x[perm], y, y[perm], lam)


def cutout(x: torch.Tensor, size: int, generator: torch.Generator | None = None,
           spatial_dims: int | None = None) -> torch.Tensor:  # fmt: skip
    """Cutout (DeVries & Taylor 2017): zero one window of ``size`` (a size×size square in 2-D)
    per example, centred uniformly at random and clipped at the borders, same for all channels.

    Layouts: (N, L) and (N, C, L) are 1-D, (N, C, H, W) is 2-D; pass ``spatial_dims=2`` for
    (N, H, W). Returns a new tensor."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    if spatial_dims is None:
        spatial_dims = {2: 1, 3: 1, 4: 2}.get(x.dim(), 0)
    if spatial_dims not in (1, 2) or x.dim() < spatial_dims + 1:
        raise ValueError(f"cutout needs (N, L), (N, C, L), (N, H, W) or (N, C, H, W) input, "
                         f"got shape {tuple(x.shape)} with spatial_dims={spatial_dims}")  # fmt: skip
    n, spatial = x.shape[0], x.shape[x.dim() - spatial_dims :]
    inside = []  # per spatial dim: (N, extent) True inside the window
    for extent in spatial:
        start = torch.randint(extent, (n, 1), generator=generator) - size // 2
        pos = torch.arange(extent).unsqueeze(0)
        inside.append((pos >= start) & (pos < start + size))
    cut = inside[0] if spatial_dims == 1 else inside[0].unsqueeze(2) & inside[1].unsqueeze(1)
    mask = (~cut).to(x.dtype)
    shape = (n,) + (1,) * (x.dim() - 1 - spatial_dims) + tuple(spatial)
    return x * mask.reshape(shape).to(x.device)


def fgsm(model: nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
         x: torch.Tensor, y: torch.Tensor, epsilon: float,
         clamp: tuple[float, float] | None = None) -> torch.Tensor:  # fmt: skip
    """Fast gradient sign method (Goodfellow et al. 2015): x + ε·sign(∇ₓ loss), the worst
    case within an L∞ ball to first order; train on these for adversarial training.
    Parameter ``.grad`` fields are untouched."""
    eps = _nonneg("epsilon", epsilon)
    x_req = x.detach().clone().requires_grad_(True)
    loss = loss_fn(model(x_req), y)
    (grad,) = torch.autograd.grad(loss, x_req)
    x_adv = x.detach() + eps * grad.sign()
    if clamp is not None:
        x_adv = x_adv.clamp(*clamp)
    return x_adv


def clip_grad_norm(params: Params, max_norm: float, norm_type: float = 2.0,
                   error_if_nonfinite: bool = False) -> torch.Tensor:  # fmt: skip
    """Rescale all gradients together so their global norm is at most ``max_norm``; returns
    the norm before clipping. Wraps ``torch.nn.utils.clip_grad_norm_``."""
    if not (math.isfinite(max_norm) and max_norm > 0):
        raise ValueError(f"max_norm must be > 0, got {max_norm}")
    ps = params.parameters() if isinstance(params, nn.Module) else params
    return torch.nn.utils.clip_grad_norm_(ps, max_norm, norm_type, error_if_nonfinite)


def clip_grad_value(params: Params, clip_value: float) -> None:
    """Clamp every gradient entry to [−clip_value, clip_value] (changes the direction, unlike
    norm clipping). Wraps ``torch.nn.utils.clip_grad_value_``."""
    if not (math.isfinite(clip_value) and clip_value > 0):
        raise ValueError(f"clip_value must be > 0, got {clip_value}")
    ps = params.parameters() if isinstance(params, nn.Module) else params
    torch.nn.utils.clip_grad_value_(ps, clip_value)


class EarlyStopping:
    """Stop when the monitored value has not improved by more than ``min_delta`` for
    ``patience`` consecutive checks (``mode`` "min" for losses, "max" for accuracies).
    ``step(value)`` returns True when training should stop."""

    def __init__(self, patience: int = 5, min_delta: float = 0.0, mode: str = "min") -> None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be a positive int, got {patience!r}")
        _nonneg("min_delta", min_delta)
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.patience, self.min_delta, self.mode = patience, float(min_delta), mode
        self.best: float | None = None
        self.best_step = -1
        self.num_checks = 0
        self.bad_checks = 0
        self.improved = False
        self.should_stop = False

    def step(self, value: float) -> bool:
        """Record one validation value; True once ``patience`` checks passed without improvement."""
        v = float(value)
        better = math.isfinite(v) and (
            self.best is None
            or (v < self.best - self.min_delta if self.mode == "min" else v > self.best + self.min_delta)
        )
        self.improved = better
        if better:
            self.best, self.best_step, self.bad_checks = v, self.num_checks, 0
        else:
            self.bad_checks += 1
        self.num_checks += 1
        self.should_stop = self.bad_checks >= self.patience
        return self.should_stop

    def state_dict(self) -> dict[str, Any]:
        """Plain numbers only, so it checkpoints with ``torch.load(weights_only=True)``."""
        return {k: getattr(self, k) for k in ("patience", "min_delta", "mode", "best",
                                              "best_step", "num_checks", "bad_checks",
                                              "improved", "should_stop")}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; the mode must match."""
        if state.get("mode", self.mode) != self.mode:
            raise ValueError(f"early-stopping state has mode={state['mode']!r}, this one {self.mode!r}")
        for k, v in state.items():
            if k not in self.state_dict():
                raise ValueError(f"unknown early-stopping state key {k!r}")
            setattr(self, k, v)
