"""One figure per kind of evidence, so each finding in the report shows what it is based on:
the loss curves against the chance level, per-layer gradient norms, activation health, the
curvature against the stability edge 2(1+β)/η, the data's feature scales and class balance,
and how far each weight tensor moved from its start."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from thalweg.diagnose.curves import read_curves
from thalweg.diagnose.findings import Finding
from thalweg.diagnose.run import RunEvidence

__all__ = ["FIGURE_OF", "figure_for", "plot_evidence"]

#: the figure that shows a code's evidence, for findings whose rule did not name one
FIGURE_OF = {
    "VANISHING_GRADIENTS": "gradients", "EXPLODING_GRADIENTS": "gradients", "UPDATE_TOO_LARGE": "gradients",
    "UPDATE_TOO_SMALL": "gradients", "DEAD_UNITS": "activations", "SATURATED_ACTIVATIONS": "activations",
    "LR_BEYOND_STABILITY": "curvature", "LR_NEAR_EDGE": "curvature", "SADDLE": "curvature",
    "ILL_CONDITIONED": "curvature", "AT_MINIMUM": "curvature", "FLAT_REGION": "curvature", "NONFINITE": "loss",
    "HEALTHY": "loss",
}


def figure_for(f: Finding, available: dict[str, Path]) -> Path | None:
    """The image for a finding: its own figure, else the one for its code, else the loss curves."""
    for key in (f.figure, FIGURE_OF.get(f.code), "loss"):
        if key and key in available:
            return available[key]
    return None


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _label(ax: Any, xlabel: str, ylabel: str, title: str, *, grid: bool = True, legend: int | None = None) -> None:
    """Axis labels, a small title, and optionally a grid and a legend of the given font size."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if grid:
        ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=legend)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    _plt().close(fig)
    return path


def _loss(ev: RunEvidence, path: Path) -> Path | None:
    c = read_curves(ev.records)
    if not c.train and not c.val:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    if c.train:
        ax.plot(*zip(*c.train, strict=True), lw=1.2, label="train (training objective)")
    if c.val:
        ax.plot([s for s, *_ in c.val], [v for _, v, _ in c.val], "o-", ms=3, lw=1.2, label="validation (plain loss)")
    if ev.data is not None and math.isfinite(ev.data.chance_loss):
        ax.axhline(ev.data.chance_loss, color="0.3", ls="--", lw=1, label=f"chance level {ev.data.chance_loss:.3g}")
    best = c.best_val(2, lower=False) or c.best_val(1)
    if best is not None:
        ax.axvline(best[0], color="green", ls=":", lw=1.2, label="best.pt")
    for i, e in enumerate([*c.nonfinite[:20], *c.rollbacks]):
        ax.axvline(e["step"], color="red", alpha=0.3, lw=0.8, label="non-finite / rollback" if i == 0 else None)
    vals = [y for _, y in c.train] + [v for _, v, _ in c.val]
    if vals and max(vals) > 20 * max(min(vals), 1e-12):
        ax.set_yscale("log")
    _label(ax, "step", "loss", "loss curves against the chance level", legend=7)
    return _save(fig, path)


def _layers(m: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [L for L in (m or {}).get("layers", []) if isinstance(L.get("grad_norm"), int | float)]


def _signal(m: dict[str, Any] | None) -> tuple[list[str], list[float]]:
    """(names, RMS) from the input through each activation: the forward signal through depth."""
    acts = [a for a in (m or {}).get("activations", []) if isinstance(a.get("rms"), int | float)]
    if not acts:
        return [], []
    names, rms = [a["name"] for a in acts], [float(a["rms"]) for a in acts]
    if isinstance((m or {}).get("input_rms"), int | float):
        names, rms = ["input", *names], [float(m["input_rms"]), *rms]  # type: ignore[index]
    return names, [max(r, 1e-30) for r in rms]


def _gradients(ev: RunEvidence, path: Path) -> Path | None:
    series = [(n, _layers(m), _signal(m)) for n, m in (("initialization", ev.init), ("end", ev.end)) if _layers(m)]
    if not series:
        return None
    plt = _plt()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(9.0, 3.6), dpi=100)
    for name, layers, (snames, rms) in series:
        g = [max(float(L["grad_norm"]), 1e-30) for L in layers]
        ax.plot(range(len(g)), g, "o-", ms=4, label=f"at {name}")
        if rms:
            bx.plot(range(len(rms)), rms, "o-", ms=4, label=f"at {name}")
            bx.set_xticks(range(len(snames)), snames, rotation=45, fontsize=7)
    names = [L["name"] for L in series[-1][1]]
    ax.set_xticks(range(len(names)), names, rotation=45, fontsize=7)
    ax.set_yscale("log")
    _label(ax, "layer (input → output)", "‖gradient‖", "per-layer gradient norms", legend=8)
    if bx.lines:
        bx.set_yscale("log")
        _label(bx, "depth", "activation RMS", "the signal through depth", legend=8)
    else:
        bx.axis("off")
    return _save(fig, path)


def _activations(ev: RunEvidence, path: Path) -> Path | None:
    rows = []
    for when, m in (("init", ev.init), ("end", ev.end)):
        for a in (m or {}).get("activations", []):
            v = a.get("dead_fraction") if a.get("dead_fraction") is not None else a.get("saturation")
            if v is not None:
                rows.append((f"{a['name']} ({a['type']}, {when})", float(v)))
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 0.35 * len(rows) + 1.4), dpi=100)
    ax.barh([r[0] for r in rows], [r[1] for r in rows], color="C1")
    ax.set_xlim(0, 1)
    ax.axvline(0.5, color="0.3", ls="--", lw=1)
    ax.set_xlabel("dead fraction (ReLU) / saturated fraction (tanh, sigmoid)")
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title("activation health", fontsize=10)
    return _save(fig, path)


def _curvature(ev: RunEvidence, path: Path) -> Path | None:
    c = (ev.end or {}).get("curvature") or {}
    lmax, lmin, lr = c.get("lambda_max"), c.get("lambda_min"), (ev.end or {}).get("lr")
    if not isinstance(lmax, int | float):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.2), dpi=100)
    pts = [("λ_max", lmax, c.get("residual_max") or 0.0)]
    if isinstance(lmin, int | float):
        pts.append(("λ_min", lmin, c.get("residual_min") or 0.0))
    ax.errorbar(range(len(pts)), [p[1] for p in pts], yerr=[p[2] for p in pts], fmt="o", ms=6, capsize=4)
    for i, (_, v, _) in enumerate(pts):
        ax.annotate(f"{v:.3g}", (i, v), textcoords="offset points", xytext=(8, 4), fontsize=8)
    ax.set_xticks(range(len(pts)), [p[0] for p in pts])
    ax.set_xlim(-0.5, len(pts) - 0.5)
    small = min((abs(p[1]) for p in pts if p[1]), default=1.0)
    ax.set_yscale("symlog", linthresh=max(small, 1e-8))  # λ's and an edge orders of magnitude apart
    if isinstance(lr, int | float) and lr > 0:
        beta = float((ev.end or {}).get("momentum") or 0.0)
        edge = 2 * (1 + beta) / lr
        ax.axhline(edge, color="C3", ls="--", label=f"stability edge 2(1+β)/η = {edge:.3g}")
        ax.legend(fontsize=8)
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_ylabel("Hessian eigenvalue")
    ax.set_title("curvature at the end of the run against the stability edge", fontsize=10)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _data(ev: RunEvidence, path: Path) -> Path | None:
    d = ev.data
    if d is None:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.2), dpi=100)
    rms = [max(v, 1e-12) for v in d.feature_rms[:256]]
    axes[0].bar(range(len(rms)), rms, color="C0")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("feature")
    axes[0].set_ylabel("RMS as fed to the model")
    axes[0].set_title("feature scales" + (" (standardized)" if d.standardized else ""), fontsize=10)
    if d.class_counts:
        axes[1].bar(range(len(d.class_counts)), d.class_counts, color="C2")
        axes[1].set_xlabel("class")
        axes[1].set_ylabel("training examples")
        axes[1].set_title("class balance", fontsize=10)
    else:
        axes[1].axis("off")
    return _save(fig, path)


def _weights(ev: RunEvidence, path: Path) -> Path | None:
    w = ev.weights
    if w is None or not w.change:
        return None
    plt = _plt()
    names = list(w.change)
    fig, ax = plt.subplots(figsize=(6.4, 0.3 * len(names) + 1.4), dpi=100)
    ax.barh(names, [max(w.change[n], 1e-12) for n in names], color="C4")
    ax.set_xscale("log")
    ax.set_xlabel("‖w_end − w_start‖ / ‖w_start‖   (1e-12 = unchanged)")
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title("how far each parameter moved during the run", fontsize=10)
    return _save(fig, path)


def plot_evidence(ev: RunEvidence, out_dir: Path, prefix: str = "doctor_",
                  kinds: set[str] | None = None) -> dict[str, Path]:
    """Draw every figure the evidence allows (or only `kinds`) into `out_dir`; returns
    {kind: png path}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    made: dict[str, Path] = {}
    for key, fn in (("loss", _loss), ("gradients", _gradients), ("activations", _activations),
                    ("curvature", _curvature), ("data", _data), ("weights", _weights)):
        if kinds is not None and key not in kinds:
            continue
        p = fn(ev, out_dir / f"{prefix}{key}.png")
        if p is not None:
            made[key] = p
    return made
