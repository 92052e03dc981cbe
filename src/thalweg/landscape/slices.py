"""1-D and 2-D slices of a network's loss landscape around its trained weights, along random
directions scaled by filter normalization (Li et al., 2018), so that pictures of different
networks are comparable. The model's weights are restored exactly afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "LandscapeSlice",
    "Norm",
    "evaluate",
    "figure_compare",
    "figure_slice",
    "has_batchnorm",
    "normalize_direction",
    "random_direction",
    "slice_1d",
    "slice_2d",
]

Norm = Literal["filter", "layer", "none"]
_NORMS = ("filter", "layer", "none")
_NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
LossFn = Callable[[Tensor, Tensor], Tensor]


def has_batchnorm(model: nn.Module) -> bool:
    """Whether any module keeps batch statistics (its loss then depends on train/eval mode)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _norm_param_ids(model: nn.Module) -> set[int]:
    return {id(p) for m in model.modules() if isinstance(m, _NORM_LAYERS)
            for p in m.parameters(recurse=False)}


def _skipped(model: nn.Module) -> list[bool]:
    """Per parameter: is it a bias or a normalization parameter (left out when ignoring)?"""
    norm_ids = _norm_param_ids(model)
    return [name.endswith("bias") or id(p) in norm_ids or p.dim() <= 1
            for name, p in model.named_parameters()]


def normalize_direction(d: Tensor, w: Tensor, norm: Norm) -> Tensor:
    """Scale direction ``d`` like weights ``w``: per filter (rows of dim 0), per tensor, or not.

    With ``"filter"``, ``‖d[i]‖ = ‖w[i]‖`` for every filter ``i`` of a ≥2-D weight; 1-D
    tensors count as one filter.
    """
    if norm not in _NORMS:
        raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}")
    if d.shape != w.shape:
        raise ValueError(f"direction shape {tuple(d.shape)} != weight shape {tuple(w.shape)}")
    if norm == "none":
        return d
    eps = torch.finfo(d.dtype).tiny
    if norm == "layer" or d.dim() <= 1:
        return d * (w.norm() / (d.norm() + eps))
    dn = d.reshape(d.shape[0], -1).norm(dim=1)
    wn = w.reshape(w.shape[0], -1).norm(dim=1)
    scale = (wn / (dn + eps)).reshape(-1, *([1] * (d.dim() - 1)))
    return d * scale


def random_direction(model: nn.Module, *, norm: Norm = "filter", ignore_bias_and_norm: bool = True,
                     generator: torch.Generator | None = None) -> list[Tensor]:
    """A Gaussian direction in parameter space, one tensor per parameter, normalized by ``norm``;
    biases and normalization parameters are set to zero when ``ignore_bias_and_norm``."""
    if norm not in _NORMS:
        raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}")
    out = []
    for p, skip in zip(model.parameters(), _skipped(model), strict=True):
        if skip and ignore_bias_and_norm:
            out.append(torch.zeros_like(p))
            continue
        d = torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
        out.append(normalize_direction(d, p.detach(), norm))
    return out


@dataclass
class LandscapeSlice:
    """Loss (and accuracy) on a 1-D line or 2-D plane through the trained weights (at 0)."""

    coords: list[np.ndarray]
    loss: np.ndarray
    accuracy: np.ndarray | None
    norm: str
    ignore_bias_and_norm: bool
    mode: str
    batchnorm: bool
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return len(self.coords)

    @property
    def center_loss(self) -> float:
        idx = tuple(int(np.argmin(np.abs(c))) for c in reversed(self.coords))
        return float(self.loss[idx])

    def describe(self) -> str:
        """One line for figure captions: normalization, what was left out, evaluation mode."""
        bn = f"{self.mode} mode (BatchNorm uses {'running' if self.mode == 'eval' else 'batch'} stats)" \
            if self.batchnorm else f"{self.mode} mode"
        left = "biases & norm params not perturbed" if self.ignore_bias_and_norm else "all params"
        return f"{self.norm}-normalized directions · {left} · {bn}"

    def save(self, path: str | Path) -> Path:
        """Write the data behind the picture as NPZ (coords, loss, accuracy, settings)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {f"coord{i}": c for i, c in enumerate(self.coords)}
        arrays["loss"] = self.loss
        if self.accuracy is not None:
            arrays["accuracy"] = self.accuracy
        arrays.update(norm=self.norm, ignore_bias_and_norm=self.ignore_bias_and_norm,
                      mode=self.mode, batchnorm=self.batchnorm)
        np.savez(path, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> LandscapeSlice:
        with np.load(path) as z:
            coords = [z[f"coord{i}"] for i in range(2) if f"coord{i}" in z]
            return cls(coords, z["loss"], z.get("accuracy", None),
                       str(z["norm"]), bool(z["ignore_bias_and_norm"]), str(z["mode"]),
                       bool(z["batchnorm"]))


@torch.no_grad()
def evaluate(model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor, batch_size: int = 4096
             ) -> tuple[float, float | None]:
    """Mean loss (and accuracy for class labels) of ``model`` on ``(x, y)``, in batches."""
    total, correct, n = 0.0, 0, 0
    classify = not torch.is_floating_point(y)
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        out = model(xb)
        total += float(loss_fn(out, yb)) * len(xb)
        if classify:
            correct += int((out.argmax(dim=-1) == yb).sum())
        n += len(xb)
    return total / n, (correct / n if classify else None)


def _check(model: nn.Module, x: Tensor, y: Tensor, span: float, resolution: int, mode: str) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"data must be non-empty with len(x) == len(y), got {len(x)} and {len(y)}")
    if not (span > 0):
        raise ValueError(f"span must be > 0, got {span!r}")
    if not isinstance(resolution, int) or resolution < 3:
        raise ValueError(f"resolution must be an int >= 3, got {resolution!r}")
    if mode not in ("eval", "train"):
        raise ValueError(f"mode must be 'eval' or 'train', got {mode!r}")


def _grid_eval(model: nn.Module, loss_fn: LossFn, data: tuple[Tensor, Tensor],
               dirs: Sequence[list[Tensor]], coords: list[np.ndarray], mode: str
               ) -> tuple[np.ndarray, np.ndarray | None]:
    params = list(model.parameters())
    w0 = [p.detach().clone() for p in params]
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    was_training = model.training
    model.train(mode == "train")
    shape = tuple(len(c) for c in reversed(coords))  # [n_beta, n_alpha] for contour plots
    loss = np.empty(shape)
    acc: np.ndarray | None = None
    try:
        for idx in np.ndindex(*shape):
            ab = [coords[k][idx[len(shape) - 1 - k]] for k in range(len(coords))]
            with torch.no_grad():
                for j, p in enumerate(params):
                    p.copy_(w0[j])
                    for a, d in zip(ab, dirs, strict=True):
                        p.add_(d[j], alpha=float(a))
            value, accuracy = evaluate(model, loss_fn, *data)
            loss[idx] = value
            if accuracy is not None:
                acc = np.empty(shape) if acc is None else acc
                acc[idx] = accuracy
    finally:
        model.load_state_dict(buffers)  # weights and BN statistics exactly as before
        model.train(was_training)
    return loss, acc


def _slice(model: nn.Module, loss_fn: LossFn, data: tuple[Tensor, Tensor], ndim: int,
           directions: Sequence[list[Tensor]] | None, span: float, resolution: int, norm: Norm,
           ignore_bias_and_norm: bool, mode: str, seed: int) -> LandscapeSlice:
    x, y = data
    _check(model, x, y, span, resolution, mode)
    if directions is None:
        gen = torch.Generator().manual_seed(seed)
        directions = [random_direction(model, norm=norm, ignore_bias_and_norm=ignore_bias_and_norm,
                                       generator=gen) for _ in range(ndim)]
    elif len(directions) != ndim:
        raise ValueError(f"need {ndim} direction(s), got {len(directions)}")
    coords = [np.linspace(-span, span, resolution) for _ in range(ndim)]
    loss, acc = _grid_eval(model, loss_fn, (x, y), directions, coords, mode)
    return LandscapeSlice(coords, loss, acc, norm, ignore_bias_and_norm, mode,
                          has_batchnorm(model), meta={"seed": seed, "samples": len(x)})


def slice_1d(model: nn.Module, loss_fn: LossFn, data: tuple[Tensor, Tensor], *,
             direction: list[Tensor] | None = None, span: float = 1.0, resolution: int = 41,
             norm: Norm = "filter", ignore_bias_and_norm: bool = True, mode: str = "eval",
             seed: int = 0) -> LandscapeSlice:
    """Loss along ``θ* + α·d`` for α in [−span, span] (one random normalized direction)."""
    return _slice(model, loss_fn, data, 1, None if direction is None else [direction], span,
                  resolution, norm, ignore_bias_and_norm, mode, seed)


def slice_2d(model: nn.Module, loss_fn: LossFn, data: tuple[Tensor, Tensor], *,
             directions: tuple[list[Tensor], list[Tensor]] | None = None, span: float = 1.0,
             resolution: int = 21, norm: Norm = "filter", ignore_bias_and_norm: bool = True,
             mode: str = "eval", seed: int = 0) -> LandscapeSlice:
    """Loss on the plane ``θ* + α·d₁ + β·d₂`` over [−span, span]² (two random directions)."""
    return _slice(model, loss_fn, data, 2, directions, span, resolution, norm,
                  ignore_bias_and_norm, mode, seed)


def figure_slice(s: LandscapeSlice, title: str | None = None, *, log: bool = False) -> Any:
    """A 1-D slice as loss (and accuracy) curves; a 2-D slice as contour + 3-D surface.
    The trained point is marked and the normalization / evaluation mode are said below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = np.log10(np.maximum(s.loss, 1e-12)) if log else s.loss
    zlabel = "log₁₀ loss" if log else "loss"
    if s.dim == 1:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        ax.plot(s.coords[0], z, color="C0", lw=2, label="loss")
        ax.scatter([0], [z[int(np.argmin(np.abs(s.coords[0])))]], marker="*", s=220, c="gold",
                   edgecolors="black", zorder=5, label="trained weights")
        ax.set_xlabel("α (step along the normalized direction)")
        ax.set_ylabel(zlabel)
        if s.accuracy is not None:
            ax2 = ax.twinx()
            ax2.plot(s.coords[0], s.accuracy, color="C1", lw=1.5, ls="--", label="accuracy")
            ax2.set_ylabel("accuracy", color="C1")
            ax2.set_ylim(0, 1.02)
            h1, l1 = ax.get_legend_handles_labels()
            h2, l2 = ax2.get_legend_handles_labels()
        else:
            (h1, l1), h2, l2 = ax.get_legend_handles_labels(), [], []
        # under the axis label, not over the curves (the accuracy curve runs along the top)
        ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3,
                  frameon=False)
        ax.grid(alpha=0.3)
    else:
        fig = plt.figure(figsize=(11, 4.6))
        a = fig.add_subplot(1, 2, 1)
        cs = a.contourf(s.coords[0], s.coords[1], z, levels=20, cmap="viridis")
        a.contour(s.coords[0], s.coords[1], z, levels=20, colors="k", linewidths=0.3, alpha=0.5)
        fig.colorbar(cs, ax=a, label=zlabel)
        a.scatter([0], [0], marker="*", s=240, c="gold", edgecolors="black", zorder=5,
                  label="trained weights")
        a.set_xlabel("α (direction 1)")
        a.set_ylabel("β (direction 2)")
        a.set_aspect("equal")
        a.legend(fontsize=8, loc="upper right")
        b = fig.add_subplot(1, 2, 2, projection="3d")
        xx, yy = np.meshgrid(s.coords[0], s.coords[1])
        b.plot_surface(xx, yy, z, cmap="viridis", linewidth=0, antialiased=False, alpha=0.85)
        iy, ix = int(np.argmin(np.abs(s.coords[1]))), int(np.argmin(np.abs(s.coords[0])))
        b.scatter([0], [0], [z[iy, ix]], marker="*", s=160, c="gold", edgecolors="black",
                  depthshade=False)
        b.set_xlabel("α")
        b.set_ylabel("β")
        b.set_zlabel(zlabel)
    fig.suptitle(title or "loss landscape around the trained weights", fontsize=11)
    fig.text(0.5, 0.01, s.describe(), ha="center", fontsize=8, color="0.3")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def figure_compare(slices: Sequence[LandscapeSlice], labels: Sequence[str], *, log: bool = False,
                   title: str | None = None) -> Any:
    """1-D slices of several models on one axis: with filter normalization, wider is flatter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len(slices) != len(labels) or not slices:
        raise ValueError(f"need one label per slice, got {len(slices)} slices, {len(labels)} labels")
    if any(s.dim != 1 for s in slices):
        raise ValueError("figure_compare takes 1-D slices")
    fig, ax = plt.subplots(figsize=(6.8, 4.3))
    for i, (s, lab) in enumerate(zip(slices, labels, strict=True)):
        z = np.log10(np.maximum(s.loss, 1e-12)) if log else s.loss
        ax.plot(s.coords[0], z, lw=2, color=f"C{i}", label=lab)
        ax.scatter([0], [z[int(np.argmin(np.abs(s.coords[0])))]], marker="*", s=160,
                   color=f"C{i}", edgecolors="black", zorder=5)
    ax.set_xlabel("α (step along a filter-normalized direction)")
    ax.set_ylabel("log₁₀ loss" if log else "loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="★ trained weights", title_fontsize=8)
    ax.set_title(title or "loss around each model's weights", fontsize=11)
    fig.text(0.5, 0.01, slices[0].describe(), ha="center", fontsize=8, color="0.3")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig
