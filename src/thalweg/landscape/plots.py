"""Figures of optimizer paths on test surfaces: contour + loss panels, learning-rate panels,
3-D surfaces and animated GIFs. Every figure marks the start and the known critical points."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from thalweg.landscape.functions import TestFunction, as_function
from thalweg.landscape.legible import (
    _color,
    _diverged_label,
    _labels,
    _place_notes,
    _style,
    finish_layout,
    place_legend,
)
from thalweg.landscape.trajectories import Trajectory

__all__ = [
    "animate_trajectories",
    "figure_lr_panel",
    "figure_panels",
    "figure_surface",
    "figure_trajectories",
    "finish_layout",
    "place_legend",
    "plot_losses",
    "plot_paths",
    "save",
]

_MARK = {
    "minimum": dict(marker="*", s=220, c="gold", edgecolors="black", linewidths=0.8),
    "maximum": dict(marker="^", s=90, c="white", edgecolors="black", linewidths=0.8),
    "saddle": dict(marker="X", s=110, c="white", edgecolors="black", linewidths=0.8),
    "degenerate": dict(marker="D", s=70, c="white", edgecolors="black", linewidths=0.8),
}
def _window(fn: TestFunction, trajs: Sequence[Trajectory], grow: float = 2.0
            ) -> list[tuple[float, float]]:
    """The domain, widened to show every point of the paths that did not diverge (≤ grow×)."""
    win = []
    for d, (lo, hi) in enumerate(fn.domain):
        w = hi - lo
        a, b = lo, hi
        for t in trajs:
            pts = t.points[:, d]
            if not t.diverged and len(pts):
                a, b = min(a, float(pts.min())), max(b, float(pts.max()))
        a, b = max(a, lo - grow * w), min(b, hi + grow * w)
        pad = 0.03 * (b - a)
        win.append((a - pad, b + pad) if (a, b) != (lo, hi) else (lo, hi))
    return win


def _inside(p: np.ndarray, win: Sequence[tuple[float, float]]) -> bool:
    return all(lo <= c <= hi for c, (lo, hi) in zip(p, win, strict=True))


def _mark_critical(ax: Axes, fn: TestFunction, win: Sequence[tuple[float, float]]) -> None:
    seen: set[str] = set()
    for cp in fn.critical_points:
        if not _inside(np.array(cp.point), win):
            continue
        label = None if cp.kind in seen else cp.kind
        seen.add(cp.kind)
        if fn.dim == 1:
            y = float(fn(torch.tensor(cp.point, dtype=torch.float64)))
            mark = ax.scatter([cp.point[0]], [y], zorder=5, label=label, **_MARK[cp.kind])
        else:
            mark = ax.scatter([cp.point[0]], [cp.point[1]], zorder=5, label=label, **_MARK[cp.kind])
        mark._thalweg_mark = True  # type: ignore[attr-defined]  # legends keep clear of it


def plot_paths(fn: str | TestFunction, trajs: Sequence[Trajectory], ax: Axes | None = None, *,
               resolution: int = 200, window: Sequence[tuple[float, float]] | None = None,
               legend: bool = True, upto: int | None = None) -> Axes:
    """Draw the surface (contours in 2-D, the curve in 1-D) with each path, start and minima."""
    f = as_function(fn)
    ax = ax if ax is not None else plt.gca()
    win = list(window) if window is not None else _window(f, trajs)
    axes, z = f.grid(resolution, win)
    z = z.numpy()
    if f.dim == 1:
        ax.plot(axes[0].numpy(), z, color="0.25", lw=1.5, label=f.latex)
        ax.set_xlabel("x")
        ax.set_ylabel("f(x)")
    else:
        if f.log_levels:
            zmin = float(z.min())
            shifted = z - zmin + 1e-3
            levels = np.geomspace(shifted.min(), shifted.max(), 25)
            ax.contourf(axes[0], axes[1], shifted, levels=levels, cmap="viridis",
                        norm=matplotlib.colors.LogNorm(), alpha=0.6)
            ax.contour(axes[0], axes[1], shifted, levels=levels, colors="k", linewidths=0.3,
                       alpha=0.4)
        else:
            ax.contourf(axes[0], axes[1], z, levels=25, cmap="viridis", alpha=0.6)
            ax.contour(axes[0], axes[1], z, levels=25, colors="k", linewidths=0.3, alpha=0.4)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.set_aspect("equal" if _aspect_ok(win) else "auto")
    labels = _labels(trajs, f)
    notes: list[tuple[str, tuple[float, float]]] = []
    # the shorter a path, the higher it is drawn: a short one (Newton's one step into the
    # saddle) would vanish under a long one that starts the same way
    lengths = [float(np.nansum(np.linalg.norm(np.diff(t.points, axis=0), axis=1))) if len(t.points) > 1 else 0.0
               for t in trajs]
    order = {i: r for r, i in enumerate(sorted(range(len(trajs)), key=lambda i: -lengths[i]))}
    for i, t in enumerate(trajs):
        pts = t.points if upto is None else t.points[: upto + 1]
        st = _style(i)
        c = st["color"]
        if f.dim == 1:
            xs, ys = pts[:, 0], t.losses[: len(pts)]
        else:
            xs, ys = pts[:, 0], pts[:, 1]
        ax.plot(xs, ys, color=c, ls=st["ls"], marker=st["marker"], ms=st["ms"], lw=1.0 if t.diverged else 1.5,
                zorder=4 + 0.01 * order[i], label=labels[i], markevery=max(1, len(xs) // 40),
                alpha=0.65 if t.diverged else 1.0, markeredgecolor="white", markeredgewidth=0.4)
        if t.diverged and (upto is None or upto >= t.steps):
            last_in = max((k for k in range(len(pts)) if _inside(
                np.array([xs[k]]) if f.dim == 1 else pts[k], win[:1] if f.dim == 1 else win)),
                default=0)
            ax.scatter([xs[last_in]], [ys[last_in]], marker=">" if t.escaped else "X", s=120, c=[c],
                       edgecolors="black", zorder=6)
            notes.append(("leaves the window" if t.escaped else "diverges", (xs[last_in], ys[last_in])))
    _place_notes(ax, notes)
    starts = {tuple(t.points[0]): t for t in trajs}  # every distinct start, labelled once
    for j, (p0, t) in enumerate(starts.items()):
        y0 = t.losses[0] if f.dim == 1 else p0[1]
        mark = ax.scatter([p0[0]], [y0], marker="o", s=90, facecolors="white", edgecolors="black",
                          linewidths=1.6, zorder=7, label="start" if j == 0 else None)
        mark._thalweg_mark = True  # type: ignore[attr-defined]
    _mark_critical(ax, f, win)
    ax.set_xlim(*win[0])
    if f.dim == 2:
        ax.set_ylim(*win[1])
    else:
        ymin, ymax = float(z.min()), float(z.max())
        pad = 0.05 * (ymax - ymin)
        ax.set_ylim(ymin - pad, ymax + pad)
    if legend:
        place_legend(ax)
    return ax


def _aspect_ok(win: Sequence[tuple[float, float]]) -> bool:
    w, h = win[0][1] - win[0][0], win[1][1] - win[1][0]
    return 0.33 < w / h < 3


def plot_losses(fn: str | TestFunction, trajs: Sequence[Trajectory], ax: Axes | None = None
                ) -> Axes:
    """Loss against step for each path: f − f* on a log axis when f is bounded below."""
    f = as_function(fn)
    ax = ax if ax is not None else plt.gca()
    gap = f.global_minimum is not None
    labels = _labels(trajs, f)
    for i, t in enumerate(trajs):
        y = t.losses - f.global_minimum if gap else t.losses
        if gap:
            y = np.maximum(y, 1e-16)
        steps = np.arange(len(y))
        st = _style(i)
        ax.plot(steps, y, color=st["color"], ls=st["ls"], lw=1.5, label=labels[i], zorder=2 + 0.01 * i)
        if t.diverged:
            ax.scatter([steps[-1]], [y[-1]], marker=">" if t.escaped else "X", s=80, c=[_color(i)],
                       edgecolors="black", zorder=5)
    ax.set_xlabel("step")
    if gap:
        ax.set_yscale("log")
        ax.set_ylabel("f(x) − f*  (log)")
    else:
        ax.set_yscale("symlog", linthresh=1.0)
        ax.set_ylabel("f(x)")
    ax.grid(alpha=0.3)
    return ax


def figure_trajectories(fn: str | TestFunction, trajs: Sequence[Trajectory],
                        title: str | None = None, *, resolution: int = 200) -> Figure:
    """Side by side: the paths on the surface, and loss against step."""
    f = as_function(fn)
    handles_n = len(trajs) + 1 + len({cp.kind for cp in f.critical_points})
    rows = -(-handles_n // 3)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.6 + 0.22 * rows), gridspec_kw={"width_ratios": [1.15, 1]})
    plot_paths(f, trajs, a, resolution=resolution, legend=False)
    a.set_title(f"paths on {f.latex}")
    plot_losses(f, trajs, b)
    b.set_title("loss vs step")
    fig.suptitle(title or f"{f.name}: {f.description}", fontsize=10)
    handles, labels = a.get_legend_handles_labels()  # below both panels: it hides nothing
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, (0.05 + 0.22 * rows) / fig.get_figheight(), 1, 1))
    return fig


def _verdicts(trajs: Sequence[Trajectory], fn: TestFunction) -> list[str]:
    ok = [t for t in trajs if not t.diverged]
    best = min(ok, key=lambda t: t.losses[-1]) if ok else None
    out = []
    for t in trajs:
        if t.escaped:
            out.append(f"left the plotted window at step {t.diverged_at}")
        elif t.diverged:
            out.append(f"too large: diverged at step {t.diverged_at}")
        elif t is best:
            out.append("good")
        else:
            lr, blr = t.hparams.get("lr"), best.hparams.get("lr") if best else None
            out.append("too small: slow" if lr is not None and blr is not None and lr < blr
                       else "too large: oscillates")
    return out


def figure_lr_panel(rows: Sequence[tuple[str | TestFunction, Sequence[Trajectory]]],
                    title: str | None = None, *, verdicts: Sequence[Sequence[str]] | None = None
                    ) -> Figure:
    """One row per surface, one panel per learning rate: too small, good, too large."""
    if not rows:
        raise ValueError("rows is empty; give (function, trajectories) pairs")
    ncol = max(len(t) for _, t in rows)
    fig, axs = plt.subplots(len(rows), ncol, figsize=(3.9 * ncol, 3.3 * len(rows)), squeeze=False)
    for r, (fn, trajs) in enumerate(rows):
        f = as_function(fn)
        vs = verdicts[r] if verdicts is not None else _verdicts(trajs, f)
        for c in range(ncol):
            ax = axs[r][c]
            if c >= len(trajs):
                ax.axis("off")
                continue
            t = trajs[c]
            # each panel its own window: one shared with a diverging path squashes the others
            # into the bottom of the bowl, where "too small" and "good" look the same
            plot_paths(f, [t], ax, window=_panel_window(f, t), legend=False)
            ax.set_title(f"{f.latex}, η={t.hparams.get('lr', '?')}: {vs[c]}\n{_after(f, t)}", fontsize=9)
        place_legend(axs[r][0])
    fig.suptitle(title or "the learning rate decides: too small, good, too large", fontsize=11)
    return finish_layout(fig)


def _panel_window(f: TestFunction, t: Trajectory) -> list[tuple[float, float]]:
    """One learning-rate panel's window: the domain, widened to where a 1-D path goes (up to
    1.5 domain widths out, so a divergence shows its first swings)."""
    win = _window(f, [t])
    if f.dim == 1:
        (lo, hi), = f.domain
        seen = t.points[:, 0]
        win[0] = (max(min(win[0][0], float(seen.min())), lo - 1.5 * (hi - lo)),
                  min(max(win[0][1], float(seen.max())), hi + 1.5 * (hi - lo)))
    return win


def _after(f: TestFunction, t: Trajectory) -> str:
    """What a panel's path reached: "after 40 steps: f − f* = 2.1e-04"."""
    last = float(t.losses[-1])
    if f.global_minimum is not None and np.isfinite(last):
        return f"after {t.steps} steps: f − f* = {last - f.global_minimum:.2g}"
    return f"after {t.steps} steps: f = {last:.3g}"


def figure_panels(panels: Sequence[tuple[str | TestFunction, Sequence[Trajectory], str]],
                  title: str, *, ncols: int = 3) -> Figure:
    """A grid of small path plots, one ``(function, trajectories, panel title)`` per panel."""
    if not panels:
        raise ValueError("panels is empty; give (function, trajectories, title) triples")
    nrows = -(-len(panels) // ncols)
    fig, axs = plt.subplots(nrows, ncols, figsize=(3.9 * ncols, 3.4 * nrows), squeeze=False)
    for k, ax in enumerate(axs.flat):
        if k >= len(panels):
            ax.axis("off")
            continue
        fn, trajs, sub = panels[k]
        plot_paths(fn, trajs, ax, legend=False)
        ax.set_title(sub, fontsize=9)
        place_legend(ax, fontsize=6.5)
    fig.suptitle(title, fontsize=11)
    return finish_layout(fig)


def figure_surface(fn: str | TestFunction, trajs: Sequence[Trajectory] = (), *,
                   resolution: int = 60, title: str | None = None) -> Figure:
    """A 3-D surface plot of a 2-D function with its critical points (and paths, if given)."""
    f = as_function(fn)
    if f.dim != 2:
        raise ValueError(f"figure_surface needs a 2-D function, {f.name!r} is {f.dim}-D")
    axes, z = f.grid(resolution)
    xx, yy = np.meshgrid(axes[0].numpy(), axes[1].numpy())
    fig = plt.figure(figsize=(6.2, 5))
    ax = fig.add_subplot(projection="3d")
    ax.plot_surface(xx, yy, z.numpy(), cmap="viridis", alpha=0.75, linewidth=0, antialiased=True)
    ax.contour(xx, yy, z.numpy(), levels=15, offset=float(z.min()), cmap="viridis", alpha=0.6)
    seen: set[str] = set()
    for cp in f.critical_points:
        val = float(f(torch.tensor(cp.point, dtype=torch.float64)))
        m = dict(_MARK[cp.kind])
        m["s"] = m["s"] * 0.7
        ax.scatter([cp.point[0]], [cp.point[1]], [val], depthshade=False, zorder=10,
                   label=None if cp.kind in seen else cp.kind, **m)
        seen.add(cp.kind)
    for i, t in enumerate(trajs):  # only the part of each path above the plotted domain
        keep = np.array([_inside(p, f.domain) for p in t.points])
        n = int(np.argmin(keep)) if not keep.all() else len(keep)
        ax.plot(t.points[:n, 0], t.points[:n, 1], t.losses[:n], "-o", color=_color(i), ms=2.5,
                label=_diverged_label(t), zorder=11)
    ax.set_xlim(*f.domain[0])
    ax.set_ylim(*f.domain[1])
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_zlabel("f(x, y)")
    ax.set_title(title or f"{f.latex}", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def animate_trajectories(fn: str | TestFunction, trajs: Sequence[Trajectory], path: str | Path,
                         *, fps: int = 8, max_frames: int = 40, dpi: int = 70,
                         loss_panel: bool = True) -> Path:
    """Write an animated GIF of the paths growing step by step (PillowWriter, no ffmpeg)."""
    from matplotlib.animation import FuncAnimation, PillowWriter

    f = as_function(fn)
    path = Path(path)
    n = max((t.steps for t in trajs), default=0)
    frames = sorted(set(np.linspace(0, n, min(max_frames, n + 1)).round().astype(int).tolist()))
    if loss_panel:
        fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.8))
    else:
        fig, a = plt.subplots(figsize=(5, 4.4))
        b = None
    win = _window(f, trajs)

    def draw(k: int) -> None:
        a.clear()
        plot_paths(f, trajs, a, window=win, upto=k, resolution=120)
        if b is not None:
            b.clear()
            cut = [Trajectory(t.label, t.points[: k + 1], t.losses[: k + 1],
                              t.diverged and k >= t.steps, t.diverged_at, t.hparams)
                   for t in trajs]
            plot_losses(f, cut, b)
            b.set_xlim(0, max(n, 1))
        a.set_title(f"{f.latex} — step {k}", fontsize=9)
        fig.tight_layout()

    anim = FuncAnimation(fig, draw, frames=frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    anim.save(str(path), writer=PillowWriter(fps=fps), dpi=dpi)
    plt.close(fig)
    return path


def save(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Save a figure (creating the folder) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
