"""Figures (loss/accuracy, learning rate, gradient norm) and `report.html` for a run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from thalweg.diagnose import surviving
from thalweg.train.config import RunConfig, dump_config
from thalweg.train.rundir.runs import RunPaths, read_metrics

__all__ = ["lr_used", "plot_curvature", "plot_curves", "quick_findings", "render_page", "write_report"]


def _series(records: list[dict[str, Any]], key: str, x: str = "epoch") -> tuple[list[float], list[float]]:
    pts = [(r[x], r[key]) for r in records if r.get(key) is not None and r.get(x) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def lr_used(records: list[dict[str, Any]], schedule: Any, steps: int, spe: float) -> tuple[list[float], list[float]]:
    """The learning rate each step actually ran with: the schedule × the rollback factor in force
    from each rollback on (later rollbacks override), up to the last step taken; x in epochs."""
    import numpy as np

    idx = np.arange(0, steps, max(1, steps // 2000))
    scale = np.ones(len(idx))
    for r in records:
        if r.get("event") == "rollback" and isinstance(r.get("lr_scale"), int | float):
            scale[idx >= r["step"]] = float(r["lr_scale"])
    return [(t + 1) / spe for t in idx.tolist()], [schedule(int(t)) * s for t, s in zip(idx, scale, strict=True)]


def plot_curves(records: list[dict[str, Any]], out_dir: Path, title: str = "",
                best_epoch: float | None = None,
                schedule: tuple[list[float], list[float]] | None = None,
                chance: float | None = None, x: str = "epoch",
                step_losses: tuple[list[float], list[float]] | None = None) -> list[Path]:
    """Write losses.png, accuracy.png (classification), lr.png and grad_norm.png against `x`
    ("epoch" or "step"); mark the point whose weights are in best.pt, the chance-level loss,
    and draw the lr each step used (`schedule`: see `lr_used`) on a log axis if given;
    `step_losses` (x, loss of each step) is drawn faintly under the window means."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    bad = [r["step"] for r in records if r.get("event") in ("nonfinite", "rollback")]
    records = surviving(records)

    def figure(name: str, panels: list[tuple[str, str, bool]], ylabel: str, logy: bool = False,
               best: bool = False, curve: tuple[list[float], list[float]] | None = None,
               level: float | None = None) -> None:
        if not any(_series(records, k, x)[0] for k, _, _ in panels):
            return
        fig, ax = plt.subplots(figsize=(7.2, 4.0), dpi=120)
        if name == "losses" and step_losses is not None and len(step_losses[0]) > 1:
            ax.plot(*step_losses, color="C0", alpha=0.3, lw=0.8, label="train, every step")
        if curve is not None:
            ax.plot(*curve, color="0.45", lw=1.3, label="lr used at every step (schedule × rollback factor)")
        for key, label, marker in panels:
            xs, ys = _series(records, key, x)
            if xs:
                ax.plot(xs, ys, marker="o" if marker or curve else None, markersize=3,
                        lw=0 if curve else 1.5, label=label)
        if best and best_epoch is not None:
            ax.axvline(best_epoch, color="green", ls=":", lw=1.2, label="best.pt")
        if level is not None:
            ax.axhline(level, color="0.3", ls="--", lw=1, label=f"chance level {level:.3g}")
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel(x)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title}: {ylabel}" if title else ylabel, fontsize=10)
        ax.grid(alpha=0.3)
        spe = next((r["step"] / r["epoch"] for r in records if r.get("epoch")), None) if x == "epoch" else 1.0
        for i, s in enumerate(bad[:20] if spe else []):
            ax.axvline(s / spe, color="red", alpha=0.3, lw=0.8,
                       label="non-finite step / rollback" if i == 0 else None)
        if len(ax.get_legend_handles_labels()[0]) > 1:
            ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / f"{name}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)

    figure("losses", [("train_loss", "train (training objective)", False),
                      ("val_loss", "validation (plain loss)", True)], "loss", best=True, level=chance)
    figure("accuracy", [("train_accuracy", "train", False), ("val_accuracy", "validation", True)],
           "accuracy", best=True)
    lrs = [r["lr"] for r in records if isinstance(r.get("lr"), int | float)]
    figure("lr", [("lr", "logged", False)], "learning rate (log)", curve=schedule,
           logy=bool(lrs) and min(lrs) > 0)
    figure("grad_norm", [("grad_norm", "mean ‖g‖ per log window, before clipping", False)],
           "gradient norm", logy=True)
    return written


def plot_curvature(records: list[dict[str, Any]], path: Path, *, momentum: float = 0.0,
                   edge: bool = True) -> Path | None:
    """The probe's top Hessian eigenvalues against step, with the stability edge 2(1+β)/η of
    (heavy-ball) gradient descent when `edge` (an adaptive method's edge is preconditioned)."""
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.0, 4.2), dpi=110)
    steps = [r["step"] for r in records]
    k = max(len(r["eigenvalues"]) for r in records)
    for i in range(k):
        pts = [(r["step"], r["eigenvalues"][i]) for r in records if len(r["eigenvalues"]) > i]
        ax.plot(*zip(*pts, strict=True), "o-", ms=3, lw=1.4, label=f"λ_{i + 1} (held batch)")
    edge_pts = [(r["step"], 2 * (1 + momentum) / r["lr"]) for r in records if r.get("lr") and edge]
    if edge_pts:
        ax.plot(*zip(*edge_pts, strict=True), color="C3", ls="--", lw=1.2, label="stability edge 2(1+β)/η")
    vals = [v for r in records for v in r["eigenvalues"]] + [e for _, e in edge_pts]
    if vals and min(vals) > 0 and max(vals) > 20 * min(vals):
        ax.set_yscale("log")
    if len(steps) == 1:
        ax.set_xlim(steps[0] - 0.5, steps[0] + 0.5)
    ax.set_xlabel("step")
    ax.set_ylabel("Hessian eigenvalue")
    ax.set_title("curvature probe: top eigenvalues during training", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def quick_findings(paths: RunPaths, cfg: RunConfig, summary: dict[str, Any], splits: Any = None,
                   figures: bool = True) -> tuple[list[Any], dict[int, Path | None]]:
    """The doctor's diagnosis from the curves, data and config alone (no extra forward pass);
    `thalweg doctor RUN` adds gradients, activations, weights and curvature."""
    from thalweg.diagnose import RunEvidence, data_statistics, diagnose_run
    from thalweg.diagnose.plots import figure_for, plot_evidence

    stats = None
    if splits is not None:
        stats = data_statistics(splits.x_train, splits.y_train, splits.x_val, splits.y_val, task=splits.task,
                                num_classes=splits.num_classes, standardized=cfg.data.standardize)
    records = read_metrics(paths.metrics) if paths.metrics.is_file() else []
    ev = RunEvidence(config=cfg.model_dump(mode="json"), records=records, summary=summary, data=stats)
    findings = diagnose_run(ev)
    if not figures:
        return findings, {}
    # the loss curves are losses.png (it draws the chance level); other evidence only when a finding needs it
    wanted = {f.figure for f in findings if f.severity != "info" and f.figure} - {"loss"}
    made = {"loss": paths.figures / "losses.png", **plot_evidence(ev, paths.figures, kinds=wanted)}
    return findings, {i: figure_for(f, made) for i, f in enumerate(findings)}


def write_report(paths: RunPaths, cfg: RunConfig, summary: dict[str, Any], *, figures: bool = True,
                 html: bool = True, splits: Any = None) -> Path | None:
    """Draw the figures and a self-contained-enough report.html that links them; the doctor's
    findings (from the curves, data and config) lead it."""
    records = read_metrics(paths.metrics) if paths.metrics.is_file() else []
    spe, total = summary.get("steps_per_epoch"), summary.get("total_steps")
    best_epoch = summary["best_step"] / spe if spe and summary.get("best_step", -1) >= 0 else None
    curve = None
    if spe and total:
        from thalweg.train.components import build_schedule

        taken = min(int(summary.get("step") or total), total)
        curve = lr_used(records, build_schedule(cfg, total, spe), max(taken, 1), spe)
    findings, figs = quick_findings(paths, cfg, summary, splits, figures=figures) if html else ([], {})
    chance = next((f.evidence.get("chance_loss") for f in findings if "chance_loss" in f.evidence), None)
    if chance is None and splits is not None and splits.task == "classification" and splits.num_classes:
        import math

        chance = math.log(splits.num_classes)
    pngs = plot_curves(records, paths.figures, cfg.name, best_epoch, curve, chance) if figures else []
    trace = [{"step": r["step"], "lr": r.get("lr"), "eigenvalues": [r["lambda_max"]]}
             for r in surviving(records) if isinstance(r.get("lambda_max"), float)]
    if figures and trace:  # [diagnostics] curvature_every
        hp = cfg.optimizer.hyperparameters()
        png = plot_curvature(trace, paths.figures / "curvature_trace.png", momentum=float(hp.get("momentum") or 0.0),
                             edge=cfg.optimizer.name == "sgd")
        pngs += [png] if png else []
    density = paths.figures / "hessian_density.png"
    if figures and density.is_file():
        pngs.append(density)
    if not html:
        return None
    from thalweg.diagnose import to_html

    doctor = to_html(findings, figures=figs, base=paths.root, note=QUICK_NOTE)
    doc = render_page(f"thalweg run {cfg.name}", doctor=doctor, summary=summary, figures=pngs,
                      records=records, config=dump_config(cfg))
    paths.report.write_text(_keep_sections(paths.report, doc), encoding="utf-8")
    return paths.report


#: the note of the trainer's own findings section (the quick diagnosis from curves, data, config)
QUICK_NOTE = ("From the learning curves, the data and the config; `thalweg doctor` on this run adds "
              "gradients, activations, weights and curvature.")


def _keep_sections(report: Path, doc: str) -> str:
    """`doc` with the sections other commands wrote into the earlier report.html put back, so a
    resumed (or re-reported) run loses nothing: `thalweg doctor`'s diagnosis in place of the
    trainer's quick findings, `thalweg inspect`'s curvature after it, and any other."""
    from thalweg.diagnose.html import markers, read_sections
    from thalweg.page import escape

    try:
        old = read_sections(report.read_text(encoding="utf-8")) if report.is_file() else {}
    except (OSError, UnicodeDecodeError):
        return doc
    new = read_sections(doc)
    prev = "doctor"
    for name, section in old.items():
        if name in new:
            if str(escape(QUICK_NOTE)) not in section:  # not the trainer's own: the user's command wrote it
                doc = doc.replace(new[name], section)
        else:
            end = markers(prev)[1]
            i = doc.find(end)
            i = i + len(end) if i >= 0 else doc.index("<h2>Final numbers</h2>")
            doc = doc[:i] + "\n" + section + doc[i:]
        prev = name
    return doc


def render_page(title: str, *, doctor: str, summary: dict[str, Any], figures: list[Path],
                records: list[dict[str, Any]], config: str) -> str:
    """report.html: the doctor's findings first (`doctor`: the section `to_html` wrote), the
    final numbers, the figures at full width (`figures/<name>.png` next to the page), the
    non-finite events and the config — every value escaped (`thalweg.page`)."""
    from thalweg.page import Markup, document, figure, html, join, table

    rows = [(k, _fmt(v)) for k, v in summary.items() if k != "event"]
    events = [r for r in records if r.get("event") in ("nonfinite", "rollback", "stopped")]
    ev_html = join(html("<li>{}</li>", json.dumps(e)) for e in events[:50])
    imgs = join(figure(f"figures/{p.name}", p.stem, p.stem) for p in figures)
    return document(title, [
        Markup(doctor),  # written by the doctor's to_html, which escapes what it shows
        html("<h2>Final numbers</h2>{}", table((), rows, row_heads=True)),
        html("<h2>Curves</h2>{}", imgs or Markup("<p>(figures disabled)</p>")),
        html("<h2>Non-finite events</h2>{}", html("<ul>{}</ul>", ev_html) if events else Markup("<p>none</p>")),
        html("<h2>Resolved config</h2><pre>{}</pre>", config)])
