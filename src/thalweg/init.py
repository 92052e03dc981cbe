"""Weight initialization: the seeds' Xavier/Glorot and Kaiming/He rules, orthogonal matrices,
and data-driven LSUV, plus :func:`initialize` that applies a scheme to a whole model.

Why it matters (seeds 000/002): a deep stack multiplies the signal by each layer's weights,
so a per-layer variance gain slightly below or above one vanishes or explodes geometrically
with depth. The formulas below keep that gain at one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

__all__ = [
    "SCHEMES",
    "activation_variance",
    "freeze",
    "gain",
    "initialize",
    "kaiming_normal",
    "kaiming_uniform",
    "lsuv",
    "orthogonal",
    "xavier_normal",
    "xavier_uniform",
]

SCHEMES = ("default", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal",
           "orthogonal", "lsuv", "normal", "zeros", "constant")  # fmt: skip
_TORCH_GAINS = ("linear", "identity", "conv1d", "conv2d", "conv3d", "sigmoid", "tanh", "relu",
                "leaky_relu", "selu")  # fmt: skip
_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@cache
def _gelu_gain() -> float:
    # gain = 1/√E[gelu(z)²], z ~ N(0, 1) (the ReLU analogue gives √2), by Gauss–Hermite
    # quadrature.
    z, w = np.polynomial.hermite_e.hermegauss(80)
    g = torch.nn.functional.gelu(torch.as_tensor(z, dtype=torch.float64)).numpy()
    return float(1.0 / math.sqrt(np.sum(w * g * g) / math.sqrt(2.0 * math.pi)))


def gain(nonlinearity: str = "linear", param: float | None = None) -> float:
    """The factor that keeps activation variance at one through ``nonlinearity``: torch's
    ``calculate_gain`` (√2 for relu, 5/3 for tanh, …) extended with gelu."""
    if nonlinearity == "gelu":
        return _gelu_gain()
    if nonlinearity not in _TORCH_GAINS:
        raise ValueError(
            f"nonlinearity must be one of {sorted((*_TORCH_GAINS, 'gelu'))}, got {nonlinearity!r}"
        )
    return float(nn.init.calculate_gain(nonlinearity, param))  # type: ignore[arg-type]


def _check_weight(tensor: object) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"tensor must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dim() < 2:
        raise ValueError(
            f"tensor must have at least 2 dimensions (out, in, …), got shape {tuple(tensor.shape)}"
        )
    return tensor


def xavier_uniform(tensor: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """Glorot: U(−a, a) with a = gain·√(6/(n_in + n_out)), so Var = gain²·2/(n_in + n_out)."""
    return nn.init.xavier_uniform_(_check_weight(tensor), gain=gain)


def xavier_normal(tensor: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """Glorot: N(0, σ²) with σ² = gain²·2/(n_in + n_out)."""
    return nn.init.xavier_normal_(_check_weight(tensor), gain=gain)


def _fans(tensor: torch.Tensor) -> tuple[int, int]:
    receptive = math.prod(tensor.shape[2:])
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def _kaiming(tensor: torch.Tensor, nonlinearity: str, a: float, mode: str,
             uniform: bool) -> torch.Tensor:  # fmt: skip
    _check_weight(tensor)
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _fans(tensor)
    std = gain(nonlinearity, a if nonlinearity == "leaky_relu" else None) / math.sqrt(
        fan_in if mode == "fan_in" else fan_out
    )
    with torch.no_grad():
        if uniform:
            return tensor.uniform_(-math.sqrt(3.0) * std, math.sqrt(3.0) * std)
        return tensor.normal_(0.0, std)


def kaiming_uniform(tensor: torch.Tensor, nonlinearity: str = "relu", a: float = 0.0,
                    mode: str = "fan_in") -> torch.Tensor:  # fmt: skip
    """He: U(−a, a) with a = gain·√(3/n_in) (= √(6/n_in) for ReLU), so Var = gain²/n_in."""
    return _kaiming(tensor, nonlinearity, a, mode, uniform=True)


def kaiming_normal(tensor: torch.Tensor, nonlinearity: str = "relu", a: float = 0.0,
                   mode: str = "fan_in") -> torch.Tensor:  # fmt: skip
    """He: N(0, σ²) with σ² = gain²/n_in (= 2/n_in for ReLU)."""
    return _kaiming(tensor, nonlinearity, a, mode, uniform=False)


def orthogonal(tensor: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """A (semi-)orthogonal matrix times ``gain`` (Saxe et al. 2014): every singular value is
    ``gain``, so the layer preserves norms exactly at initialization."""
    return nn.init.orthogonal_(_check_weight(tensor), gain=gain)


def _layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _LAYERS)]


@torch.no_grad()
def _set_weight(layer: nn.Module, fill: Callable[[torch.Tensor], object], bias: float = 0.0) -> None:
    w = torch.empty_like(layer.weight)
    fill(w)
    if parametrize.is_parametrized(layer, "weight"):
        layer.weight = w  # right_inverse sets the underlying parameters (e.g. weight norm's g, v)
    else:
        layer.weight.copy_(w)
    if layer.bias is not None:
        layer.bias.fill_(bias)


@torch.no_grad()
def lsuv(model: nn.Module, x_batch: torch.Tensor, tol: float = 0.05, max_iters: int = 10,
         orthonormal: bool = True) -> nn.Module:  # fmt: skip
    """Layer-sequential unit variance (Mishkin & Matas 2016): orthogonal init, then for each
    Linear/Conv layer in order, rescale its weight until its output variance on ``x_batch`` is
    1 ± ``tol``. Runs in eval mode (no dropout noise); returns ``model``, changed in place."""
    if not isinstance(x_batch, torch.Tensor) or x_batch.shape[0] < 2:
        raise ValueError("x_batch must be a tensor with at least 2 examples")
    if tol <= 0 or max_iters < 1:
        raise ValueError(f"tol must be > 0 and max_iters >= 1, got tol={tol}, max_iters={max_iters}")
    layers = _layers(model)
    if not layers:
        raise ValueError("model has no Linear/Conv layers to initialize")
    was_training = model.training
    model.eval()
    try:
        for _, layer in layers:
            if orthonormal:
                _set_weight(layer, orthogonal)
            elif layer.bias is not None:
                layer.bias.zero_()
        for _, layer in layers:
            captured: list[torch.Tensor] = []
            handle = layer.register_forward_hook(lambda m, i, o, c=captured: c.append(o))
            try:
                for _ in range(max_iters):
                    captured.clear()
                    model(x_batch)
                    var = float(captured[0].var())
                    if not math.isfinite(var) or var == 0.0 or abs(var - 1.0) < tol:
                        break
                    _scale_weight(layer, 1.0 / math.sqrt(var))
            finally:
                handle.remove()
    finally:
        model.train(was_training)
    return model


@torch.no_grad()
def activation_variance(model: nn.Module, x: torch.Tensor) -> list[tuple[str, float]]:
    """(layer name, variance of its output on ``x``) for every Linear/Conv layer in order of
    execution: the vanishing/exploding signal made visible. Runs in eval mode."""
    seen: list[tuple[str, float]] = []
    handles = [
        layer.register_forward_hook(lambda m, i, o, n=name: seen.append((n, float(o.var()))))
        for name, layer in _layers(model)
    ]
    was_training = model.training
    model.eval()
    try:
        model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return seen


def _scale_weight(layer: nn.Module, factor: float) -> None:
    if parametrize.is_parametrized(layer, "weight"):
        layer.weight = layer.weight * factor
    else:
        layer.weight.mul_(factor)


def initialize(model: nn.Module, scheme: str, nonlinearity: str | None = None, *,
               x_batch: torch.Tensor | None = None, std: float = 0.01, value: float = 0.0,
               bias: float = 0.0) -> nn.Module:  # fmt: skip
    """Re-initialize every Linear/Conv weight of ``model`` with ``scheme`` and fill the biases
    with ``bias`` (0 by default).

    Schemes: "default" (leave torch's), "xavier_uniform"/"xavier_normal" and "orthogonal"
    (gain of ``nonlinearity`` if given, else 1), "kaiming_uniform"/"kaiming_normal"
    (``nonlinearity`` default "relu"), "lsuv" (needs ``x_batch``), "normal" (N(0, std²): a
    deliberately unscaled init for experiments), and torch.nn.init's "zeros" and "constant"
    (every weight = ``value``): symmetric starts whose units of a layer stay identical — the
    failure the doctor's SYMMETRIC_INIT names."""
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {list(SCHEMES)}, got {scheme!r}")
    if nonlinearity is not None:
        gain(nonlinearity)  # validates the name
    for name, v in (("value", value), ("bias", bias)):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ValueError(f"{name} must be a finite number, got {v!r}")
    if scheme == "default":
        if bias:
            for _, layer in _layers(model):
                if layer.bias is not None:
                    with torch.no_grad():
                        layer.bias.fill_(bias)
        return model
    if scheme == "lsuv":
        if x_batch is None:
            raise ValueError("scheme 'lsuv' needs x_batch (a batch of training inputs)")
        return lsuv(model, x_batch)
    if scheme == "normal" and not (math.isfinite(std) and std > 0):
        raise ValueError(f"std must be a positive number, got {std}")
    g = gain(nonlinearity) if nonlinearity is not None else 1.0
    act = nonlinearity or "relu"
    fill: Callable[[torch.Tensor], object] = {
        "xavier_uniform": lambda w: xavier_uniform(w, g),
        "xavier_normal": lambda w: xavier_normal(w, g),
        "kaiming_uniform": lambda w: kaiming_uniform(w, act),
        "kaiming_normal": lambda w: kaiming_normal(w, act),
        "orthogonal": lambda w: orthogonal(w, g),
        "normal": lambda w: nn.init.normal_(w, 0.0, std),
        "zeros": nn.init.zeros_,
        "constant": lambda w: nn.init.constant_(w, value),
    }[scheme]
    layers = _layers(model)
    if not layers:
        raise ValueError("model has no Linear/Conv layers to initialize")
    for _, layer in layers:
        _set_weight(layer, fill, bias)
    return model


def freeze(model: nn.Module, prefixes: list[str] | tuple[str, ...]) -> list[str]:
    """Keep the parameters whose names start with one of ``prefixes`` (e.g. "net.1" for a whole
    layer) at their current values: ``requires_grad = False``, so no gradient reaches them and
    optimizers skip them, as torch.optim does. Returns the frozen names; a prefix that matches no
    parameter is an error naming it and the parameters there are."""
    named = list(model.named_parameters())
    frozen: list[str] = []
    for pre in prefixes:
        if not isinstance(pre, str) or not pre:
            raise ValueError(f"freeze prefixes must be non-empty strings, got {pre!r}")
        hits = [n for n, _ in named if n == pre or n.startswith(pre + ".")]
        if not hits:
            names = ", ".join(n for n, _ in named)
            raise ValueError(f"freeze prefix {pre!r} matches no parameter; the parameters are: {names}")
        frozen += [n for n in hits if n not in frozen]
    for n, p in named:
        if n in frozen:
            p.requires_grad_(False)
    return frozen
