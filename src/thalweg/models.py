"""Small reference models (linear, MLP, 1-D and 2-D CNNs, a GRU) used by the trainer, the bench
and the tests.

Every model has the same switches, so the seeds' pipeline parts can be turned on and off:
``norm`` ∈ {none, batch, layer, weight} (batch norm, layer norm, weight normalization),
``dropout`` (probability) and ``activation`` ∈ {relu, tanh, sigmoid, gelu}.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

__all__ = ["ACTIVATIONS", "GRU", "MLP", "MODELS", "NORMS", "CNN1d", "CNN2d", "Linear", "build_model"]

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
}
NORMS: tuple[str, ...] = ("none", "batch", "layer", "weight")
MODELS: tuple[str, ...] = ("linear", "mlp", "cnn1d", "cnn2d", "gru")


def _check_choice(arg: str, value: object, choices: tuple[str, ...] | list[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{arg} must be one of {sorted(choices)}, got {value!r}")
    return value


def _check_int(arg: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{arg} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{arg} must be >= {minimum}, got {value}")
    return value


def _check_dropout(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"dropout must be a float, got {type(value).__name__} {value!r}")
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {value}")
    return float(value)


def _activation(name: str) -> nn.Module:
    return ACTIVATIONS[_check_choice("activation", name, list(ACTIVATIONS))]()


def _dense(n_in: int, n_out: int, norm: str) -> nn.Module:
    layer = nn.Linear(n_in, n_out)
    return weight_norm(layer) if norm == "weight" else layer


class Linear(nn.Module):
    """A linear (affine) model on flattened inputs: the seeds' linear regression / softmax
    regression; ``norm`` batch/layer normalizes the inputs, weight reparametrizes the weight."""

    def __init__(
        self, in_features: int, out_features: int, norm: str = "none", dropout: float = 0.0
    ) -> None:
        super().__init__()
        _check_int("in_features", in_features, 1)
        _check_int("out_features", out_features, 1)
        _check_choice("norm", norm, NORMS)
        p = _check_dropout(dropout)
        layers: list[nn.Module] = [nn.Flatten()]
        if norm == "batch":
            layers.append(nn.BatchNorm1d(in_features))
        elif norm == "layer":
            layers.append(nn.LayerNorm(in_features))
        if p > 0:
            layers.append(nn.Dropout(p))
        layers.append(_dense(in_features, out_features, norm))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``x`` of shape (N, *) to (N, out_features)."""
        return self.net(x)


class MLP(nn.Module):
    """A fully connected network: ``depth`` hidden layers of ``width`` units, each
    Linear → norm → activation → dropout, then a Linear output layer."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        width: int = 128,
        depth: int = 2,
        activation: str = "relu",
        norm: str = "none",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_int("in_features", in_features, 1)
        _check_int("out_features", out_features, 1)
        _check_int("width", width, 1)
        _check_int("depth", depth, 0)
        _check_choice("norm", norm, NORMS)
        _check_choice("activation", activation, list(ACTIVATIONS))
        p = _check_dropout(dropout)
        layers: list[nn.Module] = [nn.Flatten()]
        n_in = in_features
        for _ in range(depth):
            layers.append(_dense(n_in, width, norm))
            if norm == "batch":
                layers.append(nn.BatchNorm1d(width))
            elif norm == "layer":
                layers.append(nn.LayerNorm(width))
            layers.append(_activation(activation))
            if p > 0:
                layers.append(nn.Dropout(p))
            n_in = width
        layers.append(_dense(n_in, out_features, norm))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``x`` of shape (N, *) to (N, out_features)."""
        return self.net(x)


def _conv_out_length(length: int, kernel_size: int, stride: int) -> int:
    pad = kernel_size // 2
    return (length + 2 * pad - kernel_size) // stride + 1


def _conv_blocks(dims: int, c_in: int, sizes: tuple[int, ...], channels: int, depth: int, kernel_size: int,
                 activation: str, norm: str, dropout: float) -> tuple[nn.Sequential, tuple[int, ...]]:  # fmt: skip
    """`depth` blocks of stride-2 convolution (1-D or 2-D) → norm → activation → dropout, the
    arguments checked; returns the blocks and the output's spatial sizes. Layer norm on
    feature maps is GroupNorm with one group."""
    _check_int("channels", channels, 1)
    _check_int("depth", depth, 1)
    _check_int("kernel_size", kernel_size, 1)
    _check_choice("norm", norm, NORMS)
    _check_choice("activation", activation, list(ACTIVATIONS))
    p = _check_dropout(dropout)
    conv_cls, batch_norm = (nn.Conv1d, nn.BatchNorm1d) if dims == 1 else (nn.Conv2d, nn.BatchNorm2d)
    layers: list[nn.Module] = []
    for _ in range(depth):
        conv = conv_cls(c_in, channels, kernel_size, stride=2, padding=kernel_size // 2)
        layers.append(weight_norm(conv) if norm == "weight" else conv)
        if norm == "batch":
            layers.append(batch_norm(channels))
        elif norm == "layer":
            layers.append(nn.GroupNorm(1, channels))
        layers.append(_activation(activation))
        if p > 0:
            layers.append(nn.Dropout(p))
        c_in, sizes = channels, tuple(_conv_out_length(n, kernel_size, 2) for n in sizes)
    return nn.Sequential(*layers), sizes


class CNN1d(nn.Module):
    """A 1-D convolutional network (for MNIST-1D): ``depth`` blocks of
    Conv1d(stride 2) → norm → activation → dropout, then a Linear classifier.

    Inputs are (N, length) or (N, in_channels, length). Layer norm on feature maps is
    GroupNorm with one group (normalizes over channels and positions per example)."""

    def __init__(
        self,
        length: int,
        out_features: int,
        in_channels: int = 1,
        channels: int = 32,
        depth: int = 2,
        kernel_size: int = 5,
        activation: str = "relu",
        norm: str = "none",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_int("length", length, 1)
        _check_int("out_features", out_features, 1)
        _check_int("in_channels", in_channels, 1)
        self.length = length
        self.in_channels = in_channels
        self.features, (n,) = _conv_blocks(1, in_channels, (length,), channels, depth, kernel_size, activation,
                                           norm, dropout)  # fmt: skip
        self.head = nn.Sequential(nn.Flatten(), _dense(channels * n, out_features, norm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``x`` of shape (N, length) or (N, in_channels, length) to (N, out_features)."""
        if x.dim() == 2 and self.in_channels == 1:
            x = x.unsqueeze(1)
        if x.dim() != 3 or x.shape[1] != self.in_channels or x.shape[2] != self.length:
            raise ValueError(
                f"CNN1d expects input (N, {self.in_channels}, {self.length})"
                f"{' or (N, ' + str(self.length) + ')' if self.in_channels == 1 else ''}, "
                f"got {tuple(x.shape)}"
            )
        return self.head(self.features(x))


class CNN2d(nn.Module):
    """A 2-D convolutional network (for 8×8 digits): ``depth`` blocks of Conv2d(stride 2) →
    norm → activation → dropout, then a Linear classifier. Inputs are (N, C, H, W), or
    flattened (N, C·H·W) with the image shape given as ``shape``."""

    def __init__(
        self,
        shape: tuple[int, int, int],
        out_features: int,
        channels: int = 32,
        depth: int = 2,
        kernel_size: int = 3,
        activation: str = "relu",
        norm: str = "none",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_int("out_features", out_features, 1)
        self.shape = tuple(shape)
        self.features, (h, w) = _conv_blocks(2, self.shape[0], self.shape[1:], channels, depth, kernel_size,
                                             activation, norm, dropout)  # fmt: skip
        self.head = nn.Sequential(nn.Flatten(), _dense(channels * h * w, out_features, norm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``x`` of shape (N, C, H, W) or (N, C·H·W) to (N, out_features)."""
        x = x.reshape(len(x), *self.shape)
        return self.head(self.features(x))


class GRU(nn.Module):
    """A bidirectional GRU over a sequence (MNIST-1D's GRU: ``width`` hidden units per
    direction, every time step's output flattened into a Linear classifier).

    Inputs are (N, length) — one feature per step — or (N, in_channels, length)."""

    def __init__(
        self,
        length: int,
        out_features: int,
        in_channels: int = 1,
        width: int = 6,
        depth: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_int("length", length, 1)
        _check_int("out_features", out_features, 1)
        _check_int("width", width, 1)
        _check_int("depth", depth, 1)
        p = _check_dropout(dropout)
        self.length, self.in_channels = length, in_channels
        self.gru = nn.GRU(in_channels, width, num_layers=depth, batch_first=True, bidirectional=True,
                          dropout=p if depth > 1 else 0.0)
        self.drop = nn.Dropout(p) if p > 0 else nn.Identity()
        self.head = nn.Linear(2 * width * length, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``x`` of shape (N, length) or (N, in_channels, length) to (N, out_features)."""
        seq = x.unsqueeze(-1) if x.dim() == 2 else x.transpose(1, 2)
        out, _ = self.gru(seq)
        return self.head(self.drop(out).flatten(1))


def _image_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(C, H, W) of an image input: given as such, (H, W), or flattened to a square (H·H,)."""
    if len(shape) == 3:
        return shape  # type: ignore[return-value]
    if len(shape) == 2:
        return (1, shape[0], shape[1])
    side = math.isqrt(shape[0])
    if len(shape) == 1 and side * side == shape[0]:
        return (1, side, side)
    raise ValueError(f"cnn2d needs an image in_shape (C, H, W), (H, W) or a square (H·H,), got {shape}")


def build_model(
    name: str, in_shape: tuple[int, ...], out_features: int, **kwargs: object
) -> nn.Module:
    """Construct a reference model by name (`MODELS`) for inputs of shape
    ``in_shape`` (without the batch dimension); ``kwargs`` go to the model's constructor."""
    _check_choice("name", name, MODELS)
    shape = tuple(in_shape)
    if not shape or not all(isinstance(s, int) and s >= 1 for s in shape):
        raise ValueError(f"in_shape must be a non-empty tuple of positive ints, got {in_shape!r}")
    factory: Callable[..., nn.Module]
    args: dict[str, object]
    if name == "cnn2d":
        args = {"shape": _image_shape(shape)}
        factory = CNN2d
    elif name in ("cnn1d", "gru"):
        if len(shape) == 1:
            args = {"length": shape[0], "in_channels": 1}
        elif len(shape) == 2:
            args = {"length": shape[1], "in_channels": shape[0]}
        else:
            raise ValueError(f"{name} needs in_shape (length,) or (channels, length), got {shape}")
        factory = CNN1d if name == "cnn1d" else GRU
    else:
        args = {"in_features": math.prod(shape)}
        factory = Linear if name == "linear" else MLP
    clash = set(kwargs) & set(args)
    if clash:
        raise TypeError(f"build_model: {sorted(clash)} are set from in_shape; do not pass them")
    accepted = set(inspect.signature(factory).parameters) - {"in_features", "length", "shape"}
    unknown = set(kwargs) - accepted
    if unknown:
        raise TypeError(
            f"model {name!r} got unknown argument(s) {sorted(unknown)}; "
            f"it accepts {sorted(accepted - {'out_features', 'in_channels'})}"
        )
    return factory(**args, out_features=out_features, **kwargs)
