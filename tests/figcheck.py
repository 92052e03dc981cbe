"""What can be checked of a figure a person reads, from matplotlib's own renderer boxes:
nothing clipped at the figure's edge, no legend over another panel, over a title or over the
data of its own axes, no two notes or titles drawn over each other.

`problems(fig)` lists what is wrong (empty: fine); `checking_savefig()` runs it on every figure
any code saves while it is active, so a test can drive the real commands and functions.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.text import Text
from matplotlib.transforms import Bbox

TOL = 1.5  # px


def _visible(t: Text) -> bool:
    return t.get_visible() and bool(t.get_text().strip())


def _area(a: Bbox, b: Bbox) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(w, 0.0) * max(h, 0.0)


def _name(t: Text) -> str:
    return repr(t.get_text()[:40])


def _legends(fig: Figure) -> list[tuple[Any, Any]]:
    """(legend, the axes it belongs to or None for a figure legend)."""
    out = [(leg, None) for leg in fig.legends]
    out += [(ax.get_legend(), ax) for ax in fig.axes if ax.get_legend() is not None]
    return [(leg, ax) for leg, ax in out if leg.get_visible()]


def _data_points(ax: Any) -> np.ndarray:
    """Display coordinates of the data drawn in `ax` (lines densified every ~3 px, scatter
    points), inside the axes; reference lines (axhline/axvline) and filled areas left out."""
    box = ax.get_window_extent()
    pts = []
    for ln in ax.lines:
        if not isinstance(ln, Line2D) or not ln.get_visible() or ln.get_transform() != ax.transData:
            continue
        xy = ln.get_xydata()
        if not len(xy):
            continue
        d = ax.transData.transform(np.asarray(xy, float))
        d = d[np.isfinite(d).all(1)]
        if len(d) > 1 and ln.get_linestyle() not in ("None", "", " ", "none"):
            segs = []
            for a, b in itertools.pairwise(d):
                n = max(1, min(200, int(np.hypot(*(b - a)) / 3)))
                segs.append(a + (b - a) * np.linspace(0, 1, n, endpoint=False)[:, None])
            segs.append(d[-1:])
            d = np.concatenate(segs)
        pts.append(d)
    for c in ax.collections:
        offs = c.get_offsets() if hasattr(c, "get_offsets") else []
        if len(offs) and type(c).__name__ == "PathCollection":
            pts.append(c.get_offset_transform().transform(np.asarray(offs, float)))
    if not pts:
        return np.zeros((0, 2))
    p = np.concatenate(pts)
    inside = (p[:, 0] >= box.x0) & (p[:, 0] <= box.x1) & (p[:, 1] >= box.y0) & (p[:, 1] <= box.y1)
    return p[inside]


def _drawn_ticklabels(ax: Any) -> list[Text]:
    """The tick labels matplotlib draws: those of ticks inside the view interval."""
    out = []
    for axis in (ax.xaxis, ax.yaxis):
        lo, hi = sorted(axis.get_view_interval())
        span = (hi - lo) or 1.0
        for tick in axis.get_major_ticks():
            if tick.get_visible() and lo - 1e-9 * span <= tick.get_loc() <= hi + 1e-9 * span and _visible(tick.label1):
                out.append(tick.label1)
    return out


def problems(fig: Figure) -> list[str]:
    """Everything wrong with `fig` that renderer boxes can show (see the module docstring)."""
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    page = fig.bbox
    out: list[str] = []
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.axison]
    data_axes = [ax for ax in axes if ax.name != "3d"]

    # 1. every text inside the figure: suptitle, titles, axis labels, ticks, notes, legends
    texts: list[Text] = [t for t in fig.texts if _visible(t)]
    notes: list[Text] = list(texts)
    for ax in axes:
        titles = [ax.title, getattr(ax, "_left_title", None), getattr(ax, "_right_title", None)]
        notes += [t for t in titles if t is not None and _visible(t)]
        notes += [t for t in ax.texts if _visible(t)]
        texts += [t for t in titles if t is not None and _visible(t)]
        texts += [t for t in ax.texts if _visible(t)]
        texts += [t for t in (ax.xaxis.label, ax.yaxis.label) if _visible(t)]
        if ax.name != "3d":
            texts += _drawn_ticklabels(ax)
    for t in texts:
        b = t.get_window_extent(r)
        if b.x0 < page.x0 - TOL or b.x1 > page.x1 + TOL or b.y0 < page.y0 - TOL or b.y1 > page.y1 + TOL:
            out.append(f"text {_name(t)} is cut at the figure's edge ({b.bounds} outside {page.bounds})")
    for leg, _ in _legends(fig):
        b = leg.get_window_extent(r)
        if b.x0 < page.x0 - TOL or b.x1 > page.x1 + TOL or b.y0 < page.y0 - TOL or b.y1 > page.y1 + TOL:
            out.append(f"a legend is cut at the figure's edge ({b.bounds})")

    # 2. legends: not over another panel, not over a title, not over their own axes' data
    title_boxes = [(t, t.get_window_extent(r)) for t in notes]
    for leg, own in _legends(fig):
        b = leg.get_window_extent(r)
        # a twin (twinx) shares its axes' area: its data counts as the axes' own
        mine = [] if own is None else [ax for ax in axes if ax is own or
                                       ax.get_window_extent(r).bounds == own.get_window_extent(r).bounds]
        for ax in axes:
            if ax in mine:
                continue
            if _area(b, ax.get_window_extent(r)) > 4:
                out.append(f"a legend covers another panel's data area ({ax.get_title()!r})")
        for t, tb in title_boxes:
            if _area(b, tb) > 4:
                out.append(f"a legend covers the text {_name(t)}")
        for ax in mine:
            if ax not in data_axes:
                continue
            pts = _data_points(ax)
            hit = ((pts[:, 0] > b.x0) & (pts[:, 0] < b.x1) & (pts[:, 1] > b.y0) & (pts[:, 1] < b.y1)).sum()
            if hit:
                out.append(f"the legend of {own.get_title()!r} covers {int(hit)} data points")

    # 3. titles and notes not drawn over each other
    for i, (t, tb) in enumerate(title_boxes):
        for u, ub in title_boxes[i + 1:]:
            if _area(tb, ub) > 4:
                out.append(f"the texts {_name(t)} and {_name(u)} overlap")
    return out


@contextlib.contextmanager
def checking_savefig() -> Iterator[list[tuple[str, list[str]]]]:
    """Every `Figure.savefig` meanwhile first runs :func:`problems`; yields the list of
    (file name, problems) it fills, one entry per saved figure."""
    seen: list[tuple[str, list[str]]] = []
    original = Figure.savefig

    def savefig(self: Figure, fname: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, fname, *args, **kwargs)  # first: the layout a file gets
        seen.append((str(fname), problems(self)))
        return result

    Figure.savefig = savefig  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        Figure.savefig = original  # type: ignore[method-assign]
