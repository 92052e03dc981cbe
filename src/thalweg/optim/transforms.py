"""Elementwise gradient transforms, optax style, that compose into one fused update.

A transform owns some state buffers (named as in `torch.optim`'s state dicts, so checkpoints
load both ways), asks the host for a few per-step scalars (computed in float64 from the step
count and hyperparameters), and maps an update `u` (and the parameter `p`) to a new one with
plain elementwise math. :func:`chain` strings transforms together; the optimizer core runs
the chain over flat buffers, eagerly or through `torch.compile` (one fused kernel).

Hyperparameters are numbers, schedules (callables `step -> value`), or :class:`Hyper`
references to a key of the parameter group (how the named optimizers in :mod:`rules` let
`group["lr"] = ...` take effect on the next step without recompiling).
"""

from __future__ import annotations

import torch

from .chain import Chain, Hyper, HyperValue, Transform, chain, global_norm, resolve

__all__ = [
    "Chain",
    "Hyper",
    "Transform",
    "add_decayed_weights",
    "chain",
    "clip",
    "clip_by_global_norm",
    "decay_weights",
    "flip_sign",
    "global_norm",
    "scale",
    "scale_by_adadelta",
    "scale_by_adagrad",
    "scale_by_adam",
    "scale_by_lr",
    "scale_by_rms",
    "trace",
]

# --------------------------------------------------------------------------------------
# The transforms. Each mirrors the operation order of torch.optim's for-loop implementation
# where one exists, so trajectories agree to float rounding.


class scale(Transform):
    """u ← factor · u."""

    n_scalars = 1
    final_scale = True

    def __init__(self, factor: HyperValue) -> None:
        self.factor = factor

    def scalars(self, group, step):
        return (resolve(self.factor, group, step - 1),)

    def apply(self, u, p, state, s, gnorm):
        return u * s[0]


class scale_by_lr(Transform):
    """u ← −lr · u (the final descent step; `lr` may be a schedule)."""

    n_scalars = 1
    final_scale = True

    def __init__(self, lr: HyperValue) -> None:
        self.lr = lr

    def scalars(self, group, step):
        return (-resolve(self.lr, group, step - 1),)

    def apply(self, u, p, state, s, gnorm):
        return u * s[0]


class flip_sign(Transform):
    """u ← −u when maximizing (torch's `maximize=True`)."""

    n_scalars = 1

    def __init__(self, maximize: HyperValue = True) -> None:
        self.maximize = maximize

    def scalars(self, group, step):
        return (-1.0 if resolve(self.maximize, group, step - 1) else 1.0,)

    def apply(self, u, p, state, s, gnorm):
        return u * s[0]


class add_decayed_weights(Transform):
    """Coupled L2 decay: u ← u + λ·p (torch's `weight_decay` for SGD/Adam)."""

    n_scalars = 1

    def __init__(self, weight_decay: HyperValue) -> None:
        self.weight_decay = weight_decay

    def scalars(self, group, step):
        return (resolve(self.weight_decay, group, step - 1),)

    def apply(self, u, p, state, s, gnorm):
        return u + p * s[0]


class decay_weights(Transform):
    """Decoupled decay (AdamW): p ← p·(1 − lr·λ) before the update is added."""

    n_scalars = 1

    def __init__(self, weight_decay: HyperValue, lr: HyperValue) -> None:
        self.weight_decay = weight_decay
        self.lr = lr

    def scalars(self, group, step):
        lr = resolve(self.lr, group, step - 1)
        return (1.0 - lr * resolve(self.weight_decay, group, step - 1),)

    def apply(self, u, p, state, s, gnorm):
        p.mul_(s[0])
        return u


class clip(Transform):
    """Clip every coordinate of u to [−max_delta, max_delta]."""

    n_scalars = 1

    def __init__(self, max_delta: HyperValue) -> None:
        self.max_delta = max_delta

    def scalars(self, group, step):
        return (resolve(self.max_delta, group, step - 1),)

    def apply(self, u, p, state, s, gnorm):
        return u.clamp(-s[0], s[0])


class clip_by_global_norm(Transform):
    """Rescale u so that the norm over *all* parameters is at most `max_norm`.

    Must come first in a chain (the norm is of the incoming gradients, one reduction pass).
    """

    n_scalars = 1
    needs_global_norm = True

    def __init__(self, max_norm: HyperValue) -> None:
        self.max_norm = max_norm

    def scalars(self, group, step):
        return (resolve(self.max_norm, group, step - 1),)

    def apply(self, u, p, state, s, gnorm):
        assert gnorm is not None
        factor = torch.clamp(s[0] / (gnorm + 1e-6), max=1.0)
        return u * factor


class trace(Transform):
    """Heavy-ball (Polyak) or Nesterov momentum, exactly as torch's SGD.

    buf ← g on the first step, then buf ← μ·buf + (1 − dampening)·g; the update is buf, or
    g + μ·buf for Nesterov.
    """

    n_scalars = 3
    state_keys = ("momentum_buffer",)

    def __init__(self, momentum: HyperValue, dampening: HyperValue = 0.0, nesterov: bool = False):
        self.momentum = momentum
        self.dampening = dampening
        self.nesterov = nesterov

    def scalars(self, group, step):
        mu = resolve(self.momentum, group, step - 1)
        if step == 1:  # torch clones the gradient into the fresh buffer
            return (0.0, 1.0, mu)
        return (mu, 1.0 - resolve(self.dampening, group, step - 1), mu)

    def apply(self, u, p, state, s, gnorm):
        buf = state[0].mul_(s[0]).add_(u * s[1])
        return u + buf * s[2] if self.nesterov else buf

    def structure(self):
        return ("trace", self.nesterov)


class scale_by_adam(Transform):
    """Adam's moments with bias correction (optionally AMSGrad), torch's operation order.

    With `lr` given, the step size −lr/(1 − β₁ᵗ) is folded in (as torch does) and the result
    is the final update; without it, the result is the unit-scale Adam direction.
    """

    counts_steps = True
    n_scalars = 6

    def __init__(
        self,
        b1: HyperValue = 0.9,
        b2: HyperValue = 0.999,
        eps: HyperValue = 1e-8,
        amsgrad: bool = False,
        lr: HyperValue | None = None,
    ) -> None:
        self.b1, self.b2, self.eps, self.amsgrad, self.lr = b1, b2, eps, amsgrad, lr
        self.state_keys = ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if amsgrad else ())

    def scalars(self, group, step):
        b1 = resolve(self.b1, group, step - 1)
        b2 = resolve(self.b2, group, step - 1)
        # Without an lr this is a direction (+m̂/denom); with one it is the final −lr·m̂/denom.
        sign_lr = 1.0 if self.lr is None else -resolve(self.lr, group, step - 1)
        eps = resolve(self.eps, group, step - 1)
        # 1/√(1 − β₂ᵗ) as a factor: one vector division per element instead of two (the
        # kernel is bound by division throughput on CPU); differs from torch by ≤ 1 ulp.
        return (1 - b1, b2, 1 - b2, (1 - b2**step) ** -0.5, eps, sign_lr / (1 - b1**step))

    def apply(self, u, p, state, s, gnorm):
        m = state[0].lerp_(u, s[0])
        v = state[1].mul_(s[1]).add_(s[2] * u * u)
        if self.amsgrad:
            v = state[2].copy_(torch.maximum(state[2], v))
        denom = v.sqrt().mul_(s[3]).add_(s[4])
        return m.div(denom).mul_(s[5])

    def structure(self):
        return ("adam", self.amsgrad)


class scale_by_rms(Transform):
    """RMSProp: divide by the running RMS of gradients (centered: by their running std);
    with momentum, accumulate the scaled step in a buffer. torch's operation order."""

    counts_steps = True
    n_scalars = 4

    def __init__(
        self, alpha: HyperValue = 0.99, eps: HyperValue = 1e-8, centered: bool = False,
        momentum: HyperValue | None = None,
    ) -> None:
        self.alpha, self.eps, self.centered, self.momentum = alpha, eps, centered, momentum
        keys = ["square_avg"]
        if momentum is not None:
            keys.append("momentum_buffer")
        if centered:
            keys.append("grad_avg")
        self.state_keys = tuple(keys)

    def scalars(self, group, step):
        a = resolve(self.alpha, group, step - 1)
        mu = 0.0 if self.momentum is None else resolve(self.momentum, group, step - 1)
        return (a, 1 - a, resolve(self.eps, group, step - 1), mu)

    def apply(self, u, p, state, s, gnorm):
        sq = state[0].mul_(s[0]).add_(s[1] * u * u)
        if self.centered:
            gavg = state[-1].lerp_(u, s[1])
            avg = (sq - gavg * gavg).sqrt_().add_(s[2])
        else:
            avg = sq.sqrt().add_(s[2])
        if self.momentum is not None:
            return state[1].mul_(s[3]).add_(u / avg)
        return u / avg

    def structure(self):
        return ("rms", self.centered, self.momentum is not None)


class scale_by_adagrad(Transform):
    """AdaGrad: divide by the root of the accumulated squared gradients, with torch's
    `lr_decay` folded into the step size −lr/(1 + (t − 1)·decay)."""

    counts_steps = True
    n_scalars = 2
    state_keys = ("sum",)

    def __init__(
        self, lr: HyperValue | None = None, lr_decay: HyperValue = 0.0, eps: HyperValue = 1e-10,
        initial_accumulator_value: HyperValue = 0.0,
    ) -> None:
        self.lr, self.lr_decay, self.eps = lr, lr_decay, eps
        self.initial_accumulator_value = initial_accumulator_value

    def init(self, p):
        return {"sum": torch.full_like(p, float(self.initial_accumulator_value))}

    def scalars(self, group, step):
        # Without an lr this is a direction; with one it is the final −clr·g/(√sum + eps).
        sign_lr = 1.0 if self.lr is None else -resolve(self.lr, group, step - 1)
        clr = sign_lr / (1 + (step - 1) * resolve(self.lr_decay, group, step - 1))
        return (resolve(self.eps, group, step - 1), clr)

    def apply(self, u, p, state, s, gnorm):
        acc = state[0].add_(u * u)
        return u.div(acc.sqrt().add_(s[0])).mul_(s[1])


class scale_by_adadelta(Transform):
    """AdaDelta: the update's scale is the ratio of running RMS of past updates to that of
    gradients (no learning rate needed; torch multiplies by `lr`, default 1)."""

    counts_steps = True
    n_scalars = 3
    state_keys = ("square_avg", "acc_delta")

    def __init__(self, rho: HyperValue = 0.9, eps: HyperValue = 1e-6) -> None:
        self.rho, self.eps = rho, eps

    def scalars(self, group, step):
        rho = resolve(self.rho, group, step - 1)
        return (rho, 1 - rho, resolve(self.eps, group, step - 1))

    def apply(self, u, p, state, s, gnorm):
        sq = state[0].mul_(s[0]).add_(s[1] * u * u)
        std = (sq + s[2]).sqrt_()
        delta = (state[1] + s[2]).sqrt_().div_(std).mul_(u)
        state[1].mul_(s[0]).add_(s[1] * delta * delta)
        return delta
