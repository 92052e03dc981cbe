"""What keeps a picture of optimizer paths readable: a color, dash pattern and marker per path
(coinciding paths stay visible, and the legend says which coincide or end on a saddle), notes
("diverges", "leaves the window") that never cover each other, and legends placed where they
hide no start, critical point or note (`place_legend`, `finish_layout`)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from thalweg.landscape.functions import TestFunction
from thalweg.landscape.trajectories import Trajectory

__all__ = ["finish_layout", "place_legend"]


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
