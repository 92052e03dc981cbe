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


def _colors(names: Sequence[str]) -> dict[str, Any]:
    plt = _plt()
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {n: cmap(i % cmap.N) for i, n in enumerate(names)}


def plot_profiles(records: Sequence[Mapping[str, Any]], rulesets: Sequence[str], path: Path,
                  r_max: float = scoring.R_MAX) -> Path | None:  # fmt: skip
    """ρ(τ) per submission, one panel per (ruleset, unit): steps and CPU seconds to the target."""
    plt = _plt()
    panels = [(rs, u) for rs in rulesets for u in ("steps", "cpu")
              if scoring.workload_times(records, u, rs)]  # fmt: skip
    if not panels:
        return None
    subs = sorted({r["submission"] for r in records})
    color = _colors(subs)
    taus = [1.0 + (r_max - 1.0) * i / 600 for i in range(601)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), dpi=100, squeeze=False)
    for ax, (rs, unit) in zip(axes[0], panels, strict=True):
        ratios = scoring.performance_ratios(scoring.workload_times(records, unit, rs), r_max)
        for s in sorted(ratios, key=lambda s: -scoring.score(ratios[s], r_max)):
            rho = scoring.performance_profile(ratios[s], taus)
            ax.step(taus, rho, where="post", color=color.get(s), lw=1.8,
                    label=f"{s} ({scoring.score(ratios[s], r_max):.2f})")
        ax.set(xlim=(1, r_max), ylim=(-0.02, 1.02), xlabel=f"τ (time-to-target ratio, {unit})",
               ylabel="ρ(τ): fraction of workloads", title=f"{rs} tuning: performance profile")  # fmt: skip
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, title="score", title_fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


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
    color = _colors(subs)
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
            ax.plot(xm, ym, "o-", color=color[s], ms=3.5, lw=1.4, label=s)
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
    """The metric along training of each submission's chosen configuration, per workload."""
    plt = _plt()
    if not best:
        return None
    wls = list(dict.fromkeys(w for w, _ in best))
    subs = sorted({s for _, s in best})
    color = _colors(subs)
    rows, cols = _grid(len(wls))
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), dpi=100, squeeze=False)
    for ax, wl in zip(axes.flat, wls, strict=False):
        target = metric = None
        for s in subs:
            r = best.get((wl, s))
            if r is None:
                continue
            c = r.get("curve") or {}
            pts = [(x, y) for x, y in zip(c.get("step", []), c.get("metric", []), strict=False) if y is not None]
            metric, target = r["metric"], r.get("target")
            if metric in LOG_METRICS:
                pts = [(x, max(y, 1e-12)) for x, y in pts]
            if pts:
                ax.plot(*zip(*pts, strict=True), color=color[s], lw=1.3, label=s)
        if target is not None:
            ax.axhline(target, color="k", ls="--", lw=1)
        if metric in LOG_METRICS:
            ax.set_yscale("log")
        ax.set(title=wl, xlabel="step", ylabel=metric or "")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(wls):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(8, max(1, len(labels))), fontsize=8)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path
