"""Figures of meta-learning: the MAML paper's adaptation curve (query metric vs inner steps,
one line per method, 95 % bands), fitted sinusoids after a few inner steps, the
meta-validation curves of meta-training, and the report page that shows them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["plot_adaptation", "plot_fits", "plot_meta_training", "write_report"]

_STYLE = {"maml": ("C0", "-"), "fomaml": ("C1", "-"), "reptile": ("C2", "-"),
          "pretrained": ("C3", "--"), "oracle": ("0.3", ":"), "scratch": ("0.55", "-.")}
_LABEL = {"maml": "MAML (second order)", "fomaml": "first-order MAML", "reptile": "Reptile",
          "pretrained": "pretrained, fine-tuned", "oracle": "oracle (knows A, φ)",
          "scratch": "untrained init, fine-tuned"}


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, int | float) and not isinstance(v, bool) else str(v)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path, rect: tuple[float, float, float, float] = (0, 0, 1, 1)) -> Path:
    fig.tight_layout(rect=rect)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    _plt().close(fig)
    return path


def _style(name: str, i: int) -> tuple[str, str]:
    return _STYLE.get(name, (f"C{(i + 4) % 10}", "-"))


def plot_adaptation(table: Mapping[str, Mapping[str, Sequence[float]]], path: Path, *,
                    ylabel: str, title: str = "", logy: bool = False) -> Path:
    """Query metric vs number of inner steps for every method (mean ± 95 % CI over tasks)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for i, (name, row) in enumerate(table.items()):
        color, ls = _style(name, i)
        s, m, h = (torch.tensor(row[k], dtype=torch.float64) for k in ("steps", "mean", "ci95"))
        ax.plot(s, m, ls, color=color, marker="o", ms=3, lw=1.6, label=_LABEL.get(name, name))
        ax.fill_between(s, m - h, m + h, color=color, alpha=0.15, lw=0)
    ax.set_xlabel("inner gradient steps at meta-test time")
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_fits(grid_x: torch.Tensor, truth: torch.Tensor, support: tuple[torch.Tensor, torch.Tensor],
              predictions: Mapping[str, torch.Tensor], steps: Sequence[int], path: Path) -> Path:
    """Fitted curves of each method (rows) on a few tasks (columns) after `steps` inner steps.

    `grid_x` (G,), `truth` (T, G), `support` = (x (T, K), y (T, K)), `predictions[method]`
    (T, len(steps), G)."""
    plt = _plt()
    rows, cols = len(predictions), truth.shape[0]
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.5 * rows), dpi=110, squeeze=False,
                             sharex=True)
    shades = plt.get_cmap("viridis")
    for r, (name, pred) in enumerate(predictions.items()):
        for c in range(cols):
            ax = axes[r][c]
            ax.plot(grid_x, truth[c], color="0.2", lw=2.2, alpha=0.35, label="ground truth")
            for j, s in enumerate(steps):
                ax.plot(grid_x, pred[c, j], color=shades(j / max(1, len(steps) - 1) * 0.85), lw=1.3,
                        ls="--" if s == 0 else "-", label=f"after {s} step{'s' if s != 1 else ''}")
            ax.scatter(support[0][c], support[1][c], s=16, color="black", zorder=5,
                       label="support (K points)")
            if c == 0:
                ax.set_ylabel(_LABEL.get(name, name), fontsize=9)
            ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    return _save(fig, path, rect=(0, 0.04, 1, 1))


def plot_meta_training(records: Sequence[Mapping[str, Any]], key: str, path: Path, *,
                       ylabel: str, logy: bool = False) -> Path | None:
    """Meta-validation metric vs meta-iteration, one line per method (from metrics.jsonl)."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    for r in records:
        if key in r:
            xs, ys = series.setdefault(r["method"], ([], []))
            xs.append(r["iteration"])
            ys.append(r[key])
    if not series:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    for i, (name, (xs, ys)) in enumerate(series.items()):
        color, ls = _style(name, i)
        ax.plot(xs, ys, ls, color=color, marker="o", ms=2.5, lw=1.4, label=_LABEL.get(name, name))
    ax.set_xlabel("meta-iteration")
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def write_report(path: Path, title: str, summary: Mapping[str, Any], figures: Sequence[Path],
                 config_text: str) -> Path:
    """report.html: the adaptation table (mean ± 95 % CI per step), the figures, the weights
    each method's row adapts (a table) and the config — every value escaped (`thalweg.page`)."""
    from thalweg.page import document, figure, html, join, table

    adaptation = summary["adaptation"]
    steps = next(iter(adaptation.values()))["steps"]
    rows = [[_LABEL.get(k, k), *(f"{m:.4g} ± {c:.2g}" for m, c in zip(v["mean"], v["ci95"], strict=True))]
            for k, v in adaptation.items()]
    best = [[_LABEL.get(k, k), b.get("iteration", "—"), b.get("metric", ""), _num(b.get("value"))]
            if isinstance(b, Mapping) else [_LABEL.get(k, k), "—", "", b]
            for k, b in (summary.get("best") or {}).items()]
    doc = document(title, [
        html("<h2>{} after k inner steps (mean ± 95 % CI over {} meta-test tasks)</h2>", summary["metric"],
             summary["test_tasks"]),
        table(["method \\ k", *steps], rows, row_heads=True),
        html("<h2>Figures</h2>{}", join(figure(f"figures/{p.name}", p.stem, p.stem) for p in figures)),
        html("<h2>Best meta-validation weights (what the table above adapts)</h2>{}",
             table(["method", "meta-iteration", "meta-validation metric", "value"], best, row_heads=True)),
        html("<h2>Resolved config</h2><pre>{}</pre>", config_text)])
    path.write_text(doc, encoding="utf-8")
    return path
