"""The gradient noise scale (McCandlish et al. 2018, "An Empirical Model of Large-Batch
Training"): how large a batch must be before its gradient stops being mostly noise."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .splits import Splits

__all__ = ["NoiseScale", "gradient_noise_scale"]


@dataclass(frozen=True)
class NoiseScale:
    """B_simple = tr(Σ)/|G|² with its two ingredients and a suggested batch size."""

    b_simple: float
    trace_sigma: float
    grad_sq_norm: float
    small_batch: int
    big_batch: int
    repeats: int
    suggested_batch_size: int

    def summary(self) -> str:
        """One line a person can act on."""
        return (
            f"gradient noise scale B_simple ≈ {self.b_simple:.4g} (tr Σ ≈ {self.trace_sigma:.4g}, "
            f"|G|² ≈ {self.grad_sq_norm:.4g}); batches much smaller than this are noise-dominated, "
            f"much larger ones waste compute; suggested batch size {self.suggested_batch_size}"
        )


def _flat_grad(
    model: nn.Module, loss_fn: Callable[..., torch.Tensor], params: list[torch.Tensor],
    xb: torch.Tensor, yb: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    loss = loss_fn(model(xb), yb)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([
        (g if g is not None else torch.zeros_like(p)).reshape(-1).double()
        for g, p in zip(grads, params, strict=True)
    ])  # fmt: skip


def gradient_noise_scale(
    model: nn.Module,
    loss_fn: Callable[..., torch.Tensor],
    data: Splits | tuple[torch.Tensor, torch.Tensor],
    small_batch: int = 32,
    big_batch: int = 512,
    repeats: int = 20,
    seed: int = 0,
) -> NoiseScale:
    """Estimate B_simple = tr(Σ)/|G|² at the model's current parameters from mean-loss
    gradients on batches of two sizes (sampled with replacement, so E|G_B|² = |G|² + tr(Σ)/B
    holds exactly): |G|² ≈ (B_big|G_big|² − B_small|G_small|²)/(B_big − B_small) and
    tr Σ ≈ (|G_small|² − |G_big|²)/(1/B_small − 1/B_big), each averaged over ``repeats``.

    ``loss_fn`` must average over the batch (e.g. ``nn.CrossEntropyLoss()``). ``data`` is
    (x, y) or a :class:`Splits` (its training split). Parameter ``.grad`` fields are left
    untouched; the model is used in its current train/eval mode."""
    if isinstance(data, Splits):
        x, y = data.x_train, data.y_train
    elif isinstance(data, tuple | list) and len(data) == 2:
        x, y = data
    else:
        raise TypeError(f"data must be a Splits or an (x, y) pair, got {type(data).__name__}")
    for arg, v in (("small_batch", small_batch), ("big_batch", big_batch), ("repeats", repeats)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{arg} must be a positive int, got {v!r}")
    if big_batch <= small_batch:
        raise ValueError(f"big_batch ({big_batch}) must be larger than small_batch ({small_batch})")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no parameters that require grad")
    n = int(x.shape[0])
    g = torch.Generator().manual_seed(seed)
    sq_small = sq_big = 0.0
    for _ in range(repeats):
        for b, is_small in ((small_batch, True), (big_batch, False)):
            idx = torch.randint(n, (b,), generator=g).to(x.device)
            sq = float(_flat_grad(model, loss_fn, params, x[idx], y[idx]).square().sum())
            if is_small:
                sq_small += sq / repeats
            else:
                sq_big += sq / repeats
    bs, bb = float(small_batch), float(big_batch)
    grad_sq = (bb * sq_big - bs * sq_small) / (bb - bs)
    trace = (sq_small - sq_big) / (1.0 / bs - 1.0 / bb)
    if grad_sq <= 0 or trace <= 0:
        # Noise swamps the signal (near a minimum) or the estimate is too noisy: no finite scale.
        b_simple = math.inf
        suggested = n
    else:
        b_simple = trace / grad_sq
        suggested = int(min(n, max(1, 2 ** round(math.log2(max(b_simple, 1.0))))))
    return NoiseScale(
        b_simple=b_simple, trace_sigma=trace, grad_sq_norm=grad_sq,
        small_batch=small_batch, big_batch=big_batch, repeats=repeats,
        suggested_batch_size=suggested,
    )  # fmt: skip
