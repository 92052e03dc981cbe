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
_COLORS = plt.get_cmap("tab10").colors
# paths that coincide (Shampoo on a vector is Adam; Newton = saddle-free Newton on a convex bowl)
# must both stay visible: each path gets its own dash pattern and marker, later ones smaller
_DASHES = ("-", (0, (5, 2)), (0, (1.5, 1.5)), (0, (6, 2, 1.5, 2)))
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<")


def _color(i: int) -> tuple[float, ...]:
    return _COLORS[i % len(_COLORS)]


def _style(i: int) -> dict[str, object]:
    """Line style of path `i`: color, dash pattern and marker all differ between neighbours."""
    return {"color": _color(i), "ls": _DASHES[i % len(_DASHES)], "marker": _MARKERS[i % len(_MARKERS)],
            "ms": max(2.5, 4.5 - 0.4 * i)}


def _same_as(trajs: Sequence[Trajectory]) -> dict[int, int]:
    """Path i → an earlier path it coincides with (same points to 1e-6 of the path's extent)."""
    out: dict[int, int] = {}
    for i, t in enumerate(trajs):
        for j in range(i):
            u = trajs[j]
            if j in out or u.points.shape != t.points.shape or not len(t.points):
                continue
            scale = float(np.abs(t.points).max()) or 1.0
            if np.allclose(t.points, u.points, rtol=0, atol=1e-6 * scale, equal_nan=True):
                out[i] = j
                break
    return out


def _labels(trajs: Sequence[Trajectory], fn: TestFunction | None = None) -> list[str]:
    """Each path's legend label, saying so when it coincides with an earlier one, or when it
    ends on a saddle or a maximum (a short path there hides under the markers)."""
    same = _same_as(trajs)
    out = []
    for i, t in enumerate(trajs):
        label = _diverged_label(t) + (f" (same path as {trajs[same[i]].label})" if i in same else "")
        if fn is not None and not t.diverged and len(t.points):
            scale = max(hi - lo for lo, hi in fn.domain)
            for cp in fn.critical_points:
                if cp.kind in ("saddle", "maximum") and \
                        np.linalg.norm(np.asarray(t.points[-1], float) - np.asarray(cp.point, float)) < 1e-3 * scale:
                    label += f" — ends at the {cp.kind}"
                    break
        out.append(label)
    return out


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


_LEGEND_SPOTS = ("upper right", "upper left", "lower left", "lower right", "upper center", "lower center",
                 "center left", "center right")


def _marked_points(ax: Axes) -> np.ndarray:
    """Display coordinates of what a legend must not hide: the start and critical-point markers
    and the "diverges" / "leaves the window" notes."""
    pts = [c.get_offset_transform().transform(c.get_offsets()) for c in ax.collections
           if getattr(c, "_thalweg_mark", False) and len(c.get_offsets())]
    pts += [np.asarray([t.get_window_extent().get_points().mean(0)]) for t in ax.texts
            if getattr(t, "_thalweg_mark", False)]
    return np.concatenate(pts) if pts else np.zeros((0, 2))


def _line_points(ax: Axes) -> np.ndarray:
    """Display coordinates of every drawn path and curve vertex (what a legend should hide least)."""
    pts = [ln.get_transform().transform(ln.get_xydata()) for ln in ax.lines if len(ln.get_xydata())]
    return np.concatenate(pts) if pts else np.zeros((0, 2))


def place_legend(ax: Axes, **kw: object) -> None:
    """A legend that covers no start, critical point or note, and as little of the paths as
    possible: the best corner or edge of the axes, else below the axes. Chosen again for the
    final axes sizes by `finish_layout`."""
    old = ax.get_legend()
    if old is not None:
        old.remove()
    handles, _ = ax.get_legend_handles_labels()
    if not handles:
        return
    renderer = ax.figure.canvas.get_renderer()
    marks, lines = _marked_points(ax), _line_points(ax)
    kw = {"fontsize": 7, "framealpha": 0.85, **kw}
    best: tuple[int, str] | None = None
    for loc in _LEGEND_SPOTS:
        leg = ax.legend(loc=loc, **kw)
        box = leg.get_window_extent(renderer).padded(8)  # a marker's radius
        leg.remove()
        inside_axes = box.x0 >= ax.bbox.x0 - 1 and box.x1 <= ax.bbox.x1 + 1
        if not inside_axes or any(box.contains(x, y) for x, y in marks):
            continue
        hidden = int(sum(box.contains(x, y) for x, y in lines))
        if best is None or hidden < best[0]:
            best = (hidden, loc)
    if best is not None:
        leg = ax.legend(loc=best[1], **kw)
    else:
        leg = ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, **kw)
    leg._thalweg_place = kw  # type: ignore[attr-defined]


def finish_layout(fig: Figure) -> Figure:
    """tight_layout, then every placed legend chosen again for the final axes sizes."""
    fig.tight_layout()
    moved = False
    for ax in fig.axes:
        leg = ax.get_legend()
        if leg is not None and hasattr(leg, "_thalweg_place"):
            place_legend(ax, **leg._thalweg_place)
            moved = True
    if moved:
        fig.tight_layout()
    return fig


def _diverged_label(t: Trajectory) -> str:
    if t.escaped:
        return f"{t.label} — left the plotted window at step {t.diverged_at}"
    return f"{t.label} — diverged at step {t.diverged_at}" if t.diverged else t.label


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


def _place_notes(ax: Axes, notes: Sequence[tuple[str, tuple[float, float]]]) -> None:
    """Label each point with its note ("diverges", "leaves the window"); where two paths end
    close together their notes are stacked, never drawn over each other."""
    renderer = ax.figure.canvas.get_renderer()
    placed: list[object] = []
    offsets = [(6, 6), (6, -16), (-6, 6), (-6, -16), (6, 20), (6, -30), (-6, 20), (-6, -30)]
    for text, xy in notes:
        for k, (dx, dy) in enumerate(offsets):
            note = ax.annotate(text, xy, textcoords="offset points", xytext=(dx, dy), fontsize=8, color="black",
                               ha="left" if dx > 0 else "right",
                               bbox=dict(boxstyle="round,pad=0.2", fc="white", alpha=0.8))
            box = note.get_window_extent(renderer)
            if k == len(offsets) - 1 or not any(box.overlaps(b) for b in placed):
                break
            note.remove()
        note._thalweg_mark = True  # type: ignore[attr-defined]
        placed.append(box)


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
