"""The doctor's hands: gather everything a run has into `RunEvidence`, diagnose it, write the
findings into report.html, write `treated.toml`, and verify a treatment by training the
original and the treated config on the same data and budget.

A run directory gives the metrics, summary, monitors, config and data; the weights at the end
(newest checkpoint), at best.pt, and at the start (the initialization is rebuilt from the
config's seed exactly as the trainer made it). A probe file (`save_probe`) gives only a model
and data: the findings then come from gradients, activations and curvature alone.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from thalweg.curvature.critical import classify_loss
from thalweg.diagnose import (
    LR_CODES,
    Finding,
    RunEvidence,
    Thresholds,
    data_statistics,
    diagnose,
    diagnose_run,
    rank,
    weight_changes,
)
from thalweg.train.api import load_run
from thalweg.train.build import RunParts, build_run
from thalweg.train.components import build_model
from thalweg.train.config import RunConfig, parse_config
from thalweg.train.rundir.checkpoint import CheckpointManager, load_checkpoint
from thalweg.train.rundir.runs import RunPaths, read_metrics

__all__ = ["Examination", "examine", "write_findings"]


@dataclass
class Examination:
    """What `examine` found: the evidence, the ranked findings, and where things are."""

    source: Path
    findings: list[Finding]
    evidence: RunEvidence | None = None
    run_dir: Path | None = None
    config: RunConfig | None = None
    measurements: dict[str, Any] = field(default_factory=dict)  # the end-of-run measurement
    report: Path | None = None
    figures: dict[str, Path] = field(default_factory=dict)



def measure(model: nn.Module, loss_fn: Any, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """One training-mode forward/backward under a `Monitor` (dropout seeded): gradient norms per
    layer, dead and saturated units, non-finite values."""
    from thalweg.monitors import Monitor

    was = model.training
    with Monitor(model) as mon:
        model.train()
        model.zero_grad()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            loss = loss_fn(model(x), y)
        if loss.requires_grad:
            loss.backward()
        out = mon.measure(loss=float(loss.detach()))
    model.zero_grad()
    model.train(was)
    return out


def _initial_parts(cfg: RunConfig, *, optimizer: bool = False) -> RunParts:
    """The run as it started, rebuilt by the trainer's own `build_run` (same seed, same order)."""
    parts = build_run(cfg, device="cpu", optimizer=optimizer, check_budget=False)
    if not optimizer:  # a rebuilt model is measured, not trained: every weight needs a gradient
        for p in parts.model.parameters():
            p.requires_grad_(True)
    return parts


def _lr_suggestion(cfg: RunConfig, x: torch.Tensor, y: torch.Tensor, loss_fn: Any) -> float | None:
    """The LR range test from the run's initialization with its optimizer; the "min/10" rule (one
    tenth of the rate at the smoothed loss's minimum) — the steepest-descent point is often too
    bold with momentum (on the zoo's SGD runs it gives 0.24, which the doctor then calls too high)."""
    from thalweg.landscape.lr_finder import lr_find

    parts = _initial_parts(cfg, optimizer=True)
    model, opt, info = parts.model, parts.optimizer, parts.info
    if info.needs_closure or opt is None:
        return None
    with torch.random.fork_rng():
        res = lr_find(model, opt, loss_fn, (x, y), start_lr=1e-6, end_lr=10.0, num_steps=100,
                      batch_size=min(cfg.train.batch_size, len(x)), seed=cfg.train.seed, rule="min/10")
    return res.suggestion


def _load_state(model: nn.Module, state: dict[str, Any]) -> nn.Module:
    model.load_state_dict(state["model"])
    model.eval()
    return model


def _with_run_keys(m: dict[str, Any], lr: float | None, cfg: RunConfig) -> dict[str, Any]:
    hp = cfg.optimizer.hyperparameters()
    m["lr"], m["optimizer"], m["momentum"] = lr, cfg.optimizer.name, hp.get("momentum")
    return m


def _examine_run(path: Path, *, max_samples: int, mode: str, grad_tol: float, with_curvature: bool,
                 lr_finder: bool, t: Thresholds) -> Examination:
    run_dir = next((c for c in (path, *path.parents) if (c / "config.toml").is_file()), None)
    if run_dir is None:
        raise FileNotFoundError(f"{path} is not a run directory, a checkpoint inside one, or a probe file")
    paths = RunPaths(run_dir)
    cfg = parse_config(tomllib.loads(paths.config.read_text()), check_optimizer=False)
    if cfg.train.num_threads:  # as the run trained: small models are fastest single-threaded
        torch.set_num_threads(cfg.train.num_threads)
    cfg_d = cfg.model_dump(mode="json")
    records = read_metrics(paths.metrics) if paths.metrics.is_file() else []
    summary = json.loads(paths.summary.read_text()) if paths.summary.is_file() else None
    monitors = read_metrics(paths.monitors) if paths.monitors.is_file() else []
    start_parts = _initial_parts(cfg)
    splits = start_parts.splits
    stats = data_statistics(splits.x_train, splits.y_train, splits.x_val, splits.y_val, task=splits.task,
                            num_classes=splits.num_classes, standardized=cfg.data.standardize)
    objective = start_parts.loss_fn
    x, y = splits.x_train[:max_samples], splits.y_train[:max_samples]
    latest = CheckpointManager(paths.checkpoints).load_latest()
    if path.is_file():
        latest = (path, load_checkpoint(path))
    # the best weights through the trainer's loader: a damaged best.pt falls back (with a warning)
    # to the newest good checkpoint or best.prev.pt, never to a traceback
    has_best = paths.best.is_file() or paths.best_prev.is_file()
    best_model = load_run(run_dir).model if has_best else None
    if latest is None and best_model is None:
        raise FileNotFoundError(f"run {run_dir} has neither checkpoints nor best.pt to examine")
    start = start_parts.model
    init_weights = {k: v.detach().clone() for k, v in start.state_dict().items()}
    end_model = _load_state(build_model(cfg, splits), latest[1]) if latest is not None else best_model
    assert end_model is not None
    from thalweg.diagnose.curves import read_curves

    lr_now = read_curves(records).lr_now or cfg.optimizer.hyperparameters().get("lr")
    ev = RunEvidence(config=cfg_d, records=records, summary=summary, data=stats, monitors=monitors,
                     output_layer=_output_layer(end_model))
    ev.end = _with_run_keys(measure(end_model, objective, x, y), lr_now, cfg)
    ev.init = measure(start, objective, x, y)
    if best_model is not None and latest is not None:
        ev.best = measure(best_model, objective, x, y)
    trainable = {n: not any(n == f or n.startswith(f + ".") for f in cfg.init.freeze) for n in init_weights}
    ev.weights = weight_changes(end_model.state_dict(), init_weights, trainable)
    if with_curvature:
        c = classify_loss(end_model, objective, x, y, mode=mode, grad_tol=grad_tol)
        if c is not None:
            ev.end["curvature"] = c
    findings = diagnose_run(ev, t)
    if lr_finder and any(f.code in LR_CODES and f.severity != "info" for f in findings[:3]):
        ev.lr_suggestion = _lr_suggestion(cfg, splits.x_train, splits.y_train, objective)
        findings = diagnose_run(ev, t)
    return Examination(path, findings, ev, run_dir, cfg, ev.end)


def _output_layer(model: nn.Module) -> str | None:
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d)]
    return names[-1] if names else None


def _examine_probe(path: Path, *, max_samples: int, mode: str, grad_tol: float, with_curvature: bool,
                   t: Thresholds) -> Examination | None:
    from thalweg.curvature.probe import load_probe

    try:
        probe = load_probe(path)
    except (ValueError, KeyError, RuntimeError, OSError):
        return None
    x, y = probe.x[:max_samples], probe.y[:max_samples]
    meas = measure(probe.model, probe.loss_fn, x, y)
    meas["lr"], meas["optimizer"], meas["momentum"] = probe.lr, probe.optimizer, probe.extras.get("momentum")
    if with_curvature:
        c = classify_loss(probe.model, probe.loss_fn, x, y, mode=mode, grad_tol=grad_tol, max_hvps=150)
        if c is not None:
            meas["curvature"] = c
    return Examination(path, rank(diagnose(meas, t)), measurements=meas)


def examine(path: str | Path, *, max_samples: int = 512, mode: str = "eval", grad_tol: float = 1e-3,
            with_curvature: bool = True, lr_finder: bool = True, thresholds: Thresholds | None = None) -> Examination:
    """Diagnose a run directory (or a checkpoint in one) or a probe file; nothing is written."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no run directory, checkpoint or probe file at {p}")
    if mode not in ("train", "eval"):
        raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
    t = thresholds or Thresholds(grad_tol=grad_tol)
    threads = torch.get_num_threads()
    try:
        return _examine(p, max_samples=max_samples, mode=mode, grad_tol=grad_tol, with_curvature=with_curvature,
                        lr_finder=lr_finder, t=t)
    finally:
        torch.set_num_threads(threads)


def _examine(p: Path, *, max_samples: int, mode: str, grad_tol: float, with_curvature: bool, lr_finder: bool,
             t: Thresholds) -> Examination:
    if p.is_file():
        ex = _examine_probe(p, max_samples=max_samples, mode=mode, grad_tol=grad_tol,
                            with_curvature=with_curvature, t=t)
        if ex is not None:
            return ex
    return _examine_run(p, max_samples=max_samples, mode=mode, grad_tol=grad_tol, with_curvature=with_curvature,
                        lr_finder=lr_finder, t=t)


def write_findings(ex: Examination, report: Path | None = None, *, figures: bool = True,
                   note: str = "") -> Path:
    """The findings section (with the figure of each finding's evidence) at the top of report.html."""
    from thalweg.diagnose import to_html, write_html_section
    from thalweg.diagnose.plots import FIGURE_OF, figure_for, plot_evidence

    if report is None:
        report = RunPaths(ex.run_dir).report if ex.run_dir is not None else ex.source.with_suffix(".report.html")
    if figures and ex.evidence is not None:  # the figures the findings point at (each costs a render)
        kinds = {f.figure or FIGURE_OF.get(f.code) or "loss" for f in ex.findings if f.severity != "info"} | {"loss"}
        ex.figures = plot_evidence(ex.evidence, report.parent / "figures", kinds=kinds)
    figs = {i: figure_for(f, ex.figures) for i, f in enumerate(ex.findings)} if ex.figures else {}
    from thalweg.page import html

    extra = ""
    c = ex.measurements.get("curvature")
    if c:
        extra = html("<p><small>curvature at the end (training objective): λ_max = {}, λ_min = {} ± {}, "
                     "‖∇L‖ = {}; verdict: {}</small></p>", f"{c['lambda_max']:.4g}", f"{c['lambda_min']:.4g}",
                     f"{c['residual_min']:.2g}", f"{c['grad_norm']:.3g}", c["kind"])
    write_html_section(report, to_html(ex.findings, figures=figs, base=report.parent, extra=extra, note=note))
    ex.report = report
    return report
