"""The bench's figures: performance profiles, learning-rate sensitivity, best curves."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from thalweg.bench import scoring

__all__ = ["plot_curves", "plot_profiles", "plot_sensitivity"]

LOG_METRICS = ("excess_loss", "loss", "val_loss")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _styles(names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """A distinct (color, dash) per name: tab10's ten strong colors, then the same colors
    dashed, then dotted — 19 lines stay tellable apart (tab20's pastel pairs are not)."""
    cmap = _plt().get_cmap("tab10")
    dashes = ("-", (0, (5, 2)), (0, (1.5, 1.5)))
    return {n: {"color": cmap(i % 10), "ls": dashes[(i // 10) % 3]} for i, n in enumerate(names)}


def plot_profiles(records: Sequence[Mapping[str, Any]], rulesets: Sequence[str], path: Path,
                  r_max: float = scoring.R_MAX) -> Path | None:  # fmt: skip
    """ρ(τ) per submission, one panel per (ruleset, unit): steps and CPU seconds to the target.
    One legend beside the panels (it covers no curve and no title) lists each submission with
    its score in every panel; submissions that never come within r_max× of the fastest (score
    0 everywhere, a flat line at ρ = 0) are named under it instead of drawn on top of each other."""
    plt = _plt()
    panels = [(rs, u) for rs in rulesets for u in ("steps", "cpu")
              if scoring.workload_times(records, u, rs)]  # fmt: skip
    if not panels:
        return None
    taus = [1.0 + (r_max - 1.0) * i / 600 for i in range(601)]
    ratios = {p: scoring.performance_ratios(scoring.workload_times(records, p[1], p[0]), r_max) for p in panels}
    score = {p: {s: scoring.score(r, r_max) for s, r in ratios[p].items()} for p in panels}
    subs = sorted({s for p in panels for s in ratios[p]}, key=lambda s: (-sum(score[p].get(s, 0) for p in panels), s))
    drawn = [s for s in subs if any(score[p].get(s, 0) > 0 for p in panels)]
    never = [s for s in subs if s not in drawn]
    style = _styles(drawn)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.3 * len(panels) + 2.9, 3.9), dpi=100, squeeze=False,
                             layout="constrained")
    for ax, p in zip(axes[0], panels, strict=True):
        for s in drawn:
            if s in ratios[p]:
                ax.step(taus, scoring.performance_profile(ratios[p][s], taus), where="post", lw=1.8,
                        **style[s], label=s)
        ax.set(xlim=(1, r_max), ylim=(-0.02, 1.02), xlabel=f"τ (time-to-target ratio, {p[1]})",
               ylabel="ρ(τ): fraction of workloads", title=f"{p[0]} tuning, {p[1]}")  # fmt: skip
        ax.grid(alpha=0.3)
    handles = {h.get_label(): h for ax in axes[0] for h in ax.get_legend_handles_labels()[0]}
    labels = [f"{s}  " + " / ".join(f"{score[p].get(s, 0):.2f}" for p in panels) for s in drawn]
    title = "score (" + " / ".join(f"{rs} {u}" for rs, u in panels) + ")"
    if never:
        title += f"\nscore 0 (never within {r_max:g}× of the fastest):\n" + _wrap(never, 34)
    fig.legend([handles[s] for s in drawn], labels, loc="outside right center", fontsize=7.5, title=title,
               title_fontsize=7.5, frameon=False)
    fig.suptitle("performance profiles: the fraction of workloads reached within τ × the fastest", fontsize=10)
    fig.savefig(path)
    plt.close(fig)
    return path


def _wrap(names: Sequence[str], width: int) -> str:
    lines, cur = [], ""
    for n in names:
        if cur and len(cur) + len(n) + 2 > width:
            lines.append(cur + ",")
            cur = n
        else:
            cur = f"{cur}, {n}" if cur else n
    return "\n".join([*lines, cur])


def _grid(n: int) -> tuple[int, int]:
    cols = min(3, max(1, n))
    return math.ceil(n / cols), cols


def plot_sensitivity(records: Sequence[Mapping[str, Any]], path: Path) -> Path | None:
    """Final metric vs learning rate per submission (mean over seeds; × = diverged), per workload."""
    plt = _plt()
    sens = [r for r in records if r.get("phase") == "sensitivity"]
    if not sens:
        return None
    wls = list(dict.fromkeys(r["workload"] for r in sens))
    subs = sorted({r["submission"] for r in sens})
    style = _styles(subs)
    color = {s: st["color"] for s, st in style.items()}
    rows, cols = _grid(len(wls))
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), dpi=100, squeeze=False)
    for ax, wl in zip(axes.flat, wls, strict=False):
        mine = [r for r in sens if r["workload"] == wl]
        metric, target = mine[0]["metric"], mine[0].get("target")
        logy = metric in LOG_METRICS
        floor = (target or 1e-12) / 100 if logy else None
        for s in subs:
            pts: dict[float, list[float | None]] = defaultdict(list)
            for r in mine:
                lr = (r.get("config") or {}).get("optimizer", {}).get("lr")
                if r["submission"] == s and lr is not None:
                    v = r.get("final_metric") if r["status"] != "diverged" else None
                    pts[float(lr)].append(v)
            if not pts:
                continue
            xs = sorted(pts)
            good = [(x, [v for v in pts[x] if v is not None]) for x in xs]
            xm = [x for x, vs in good if vs]
            ym = [sum(vs) / len(vs) for _, vs in good if vs]
            if logy:
                ym = [max(y, floor) for y in ym]
            ax.plot(xm, ym, marker="o", ms=3.5, lw=1.4, label=s, **style[s])
            lo = [min(vs) for _, vs in good if vs]
            hi = [max(vs) for _, vs in good if vs]
            if logy:
                lo, hi = [max(v, floor) for v in lo], [max(v, floor) for v in hi]
            ax.fill_between(xm, lo, hi, color=color[s], alpha=0.15, lw=0)
            bad = [x for x in xs if any(v is None for v in pts[x])]
            if bad:
                ax.plot(bad, [1.0] * len(bad), "x", color=color[s], ms=6, mew=1.5,
                        transform=ax.get_xaxis_transform(), clip_on=False)
        if target is not None:
            ax.axhline(target, color="k", ls="--", lw=1, label="target")
        ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        ax.set(title=wl, xlabel="learning rate", ylabel=f"final {metric}")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(wls):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(8, len(labels)), fontsize=8)
    fig.suptitle("learning-rate sensitivity (other hyperparameters at the tuned best; "
                 "band: min–max over seeds; × diverged)", fontsize=9)  # fmt: skip
    fig.tight_layout(rect=(0, 0.07, 1, 0.96))
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_curves(best: Mapping[tuple[str, str], Mapping[str, Any]], path: Path) -> Path | None:
    """The metric along training of each submission's chosen configuration, per workload.

    A loss axis is limited to the curves' own range up to 10× the highest starting value, so
    one run that blew up (to 1e35) does not flatten every other curve: where a curve leaves
    the axis an × marks it at the top edge, and its legend entry says "diverged"."""
    plt = _plt()
    if not best:
        return None
    wls = list(dict.fromkeys(w for w, _ in best))
    subs = sorted({s for _, s in best})
    style = _styles(subs)
    rows, cols = _grid(len(wls))
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows + 0.5), dpi=100, squeeze=False)
    off: set[str] = set()
    for ax, wl in zip(axes.flat, wls, strict=False):
        target = metric = None
        curves = {}
        for s in subs:
            r = best.get((wl, s))
            if r is None:
                continue
            c = r.get("curve") or {}
            pts = [(x, y) for x, y in zip(c.get("step", []), c.get("metric", []), strict=False)
                   if y is not None and math.isfinite(y)]
            metric, target = r["metric"], r.get("target")
            if metric in LOG_METRICS:
                pts = [(x, max(y, 1e-12)) for x, y in pts]
            if pts:
                curves[s] = pts
        top = _robust_top(curves, target) if metric in LOG_METRICS else None
        for s, pts in curves.items():
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, lw=1.3, label=s, **style[s])
            if top is not None and max(ys) > top:
                off.add(s)
                x_out = next(x for x, y in pts if y > top)
                ax.plot([x_out], [1.0], "x", color=style[s]["color"], ms=7, mew=2,
                        transform=ax.get_xaxis_transform(), clip_on=False)
        if target is not None:
            ax.axhline(target, color="k", ls="--", lw=1)
        if metric in LOG_METRICS:
            ax.set_yscale("log")
            if top is not None:
                low = min(min(y for _, y in pts) for pts in curves.values())
                if target is not None:
                    low = min(low, target)
                ax.set_ylim(low / 2, top)
        ax.set(title=wl, xlabel="step", ylabel=metric or "")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(wls):]:
        ax.axis("off")
    handles = {h.get_label(): h for ax in axes.flat for h in ax.get_legend_handles_labels()[0]}
    names = [s for s in subs if s in handles]
    labels = [f"{s} (diverged: ×)" if s in off else s for s in names]
    legend_rows = math.ceil(len(names) / min(6, max(1, len(names))))
    fig.legend([handles[s] for s in names], labels, loc="lower center", ncol=min(6, max(1, len(names))),
               fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, (0.15 + 0.2 * legend_rows) / fig.get_figheight(), 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path


def _robust_top(curves: Mapping[str, Sequence[tuple[float, float]]], target: float | None) -> float | None:
    """The top of a loss axis: 10× the highest starting value (a curve above it has blown up)."""
    starts = [pts[0][1] for pts in curves.values() if pts]
    if not starts:
        return None
    return 10 * max([*starts, target or 0.0])
