"""The whole run → a ranked differential diagnosis.

`RunEvidence` holds everything a run has (config, metrics records, summary, data statistics,
monitor measurements at the start / end / best weights, monitors.jsonl, the curvature probe,
the weight changes); `diagnose_run` applies every rule, merges what several sources say about
the same condition, attaches a config fix to each finding and ranks them (`findings.rank`).
`thalweg.diagnose.examine` (the CLI layer) gathers the evidence; nothing here imports it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from thalweg.diagnose.curves import curve_findings, read_curves
from thalweg.diagnose.data import DataStats, data_findings
from thalweg.diagnose.findings import SEVERITY_ORDER, Finding, Thresholds, describe_fix, rank
from thalweg.diagnose.measurements import diagnose
from thalweg.diagnose.weights import WeightReport, config_findings, weight_findings

__all__ = ["LR_CODES", "RunEvidence", "diagnose_run"]

#: codes whose fix is a learning rate (the LR-finder's suggestion refines it)
LR_CODES = ("LR_TOO_LOW", "LR_TOO_HIGH", "NONFINITE", "NO_LEARNING", "LR_BEYOND_STABILITY")
_ADAPTIVE = ("adam", "adamw", "rmsprop", "adagrad", "adadelta", "adahessian", "lion", "prodigy")
_QUIET = ("NOT_CRITICAL",)  # "the gradient is not zero" is no diagnosis of a run
_UNSCALED = ("normal", "zeros", "constant")


@dataclass
class RunEvidence:
    """Everything the doctor read about one run (see the module docstring)."""

    config: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    data: DataStats | None = None
    end: dict[str, Any] | None = None  # Monitor.measure() at the final weights, + curvature / lr keys
    init: dict[str, Any] | None = None  # Monitor.measure() at the weights the run started from
    best: dict[str, Any] | None = None  # Monitor.measure() at best.pt
    monitors: list[dict[str, Any]] = field(default_factory=list)
    weights: WeightReport | None = None
    output_layer: str | None = None
    lr_suggestion: float | None = None  # the LR range test's suggestion, when it was run
    world_size: int = 1


def _opt(config: dict[str, Any]) -> tuple[str, float | None, float]:
    o = config.get("optimizer") or {}
    lr = o.get("lr")
    return str(o.get("name", "")).lower(), float(lr) if isinstance(lr, int | float) else None, float(o.get("momentum")
                                                                                                   or 0.0)


def _edge_ratio(ev: RunEvidence, lr: float | None) -> float | None:
    name, _, beta = _opt(ev.config)
    c = (ev.end or {}).get("curvature") or {}
    lmax = c.get("lambda_max")
    if lr is None or not isinstance(lmax, int | float) or not math.isfinite(lmax) or lmax <= 0:
        return None
    if any(name.startswith(a) for a in _ADAPTIVE):
        return None  # the preconditioned sharpness decides for adaptive methods
    return lr * lmax / (2.0 * (1 + beta))


def _merge(found: list[Finding]) -> list[Finding]:
    """One finding per code: the most severe / confident; the others' sources are kept as evidence."""
    by: dict[str, Finding] = {}
    for f in found:
        g = by.get(f.code)
        if g is None:
            by[f.code] = f
            continue
        keep, drop = (f, g) if (SEVERITY_ORDER[f.severity], -f.confidence) < (SEVERITY_ORDER[g.severity],
                                                                              -g.confidence) else (g, f)
        keep.confidence = min(0.97, max(keep.confidence, drop.confidence) + 0.05)
        seen = keep.evidence.get("also_seen", [])
        keep.evidence["also_seen"] = [*seen, str(drop.evidence.get("at", drop.title))]
        if not keep.fix and drop.fix:
            keep.fix = drop.fix
        by[f.code] = keep
    return list(by.values())


def _at(findings: list[Finding], where: str) -> list[Finding]:
    for f in findings:
        f.evidence = {"at": where, **f.evidence}
    return findings


def _measured(ev: RunEvidence, t: Thresholds) -> list[Finding]:
    out: list[Finding] = []
    if ev.end is not None:
        out += _at([f for f in diagnose(ev.end, t) if f.code not in _QUIET], "end of the run")
    if ev.init is not None:
        start = [f for f in diagnose(ev.init, t) if f.code in ("VANISHING_GRADIENTS", "EXPLODING_GRADIENTS",
                                                               "SATURATED_ACTIVATIONS", "DEAD_UNITS", "NONFINITE")]
        for f in start:
            f.confidence, f.severity = 0.6, "warning" if f.severity == "info" else f.severity
        out += _at(start, "initialization")
    if ev.monitors:
        last = dict(ev.monitors[-1])
        totals: dict[str, int] = {}
        for r in ev.monitors:
            for k, v in (r.get("nonfinite") or {}).items():
                totals[k] = totals.get(k, 0) + int(v)
        last["nonfinite"] = totals
        hist = [f for f in diagnose(last, t) if f.code not in (*_QUIET, "AT_MINIMUM", "FLAT_REGION")]
        out += _at(hist, f"monitors.jsonl (step {last.get('step')}, {len(ev.monitors)} records)")
    at_init = {f.code for f in out if f.evidence.get("at") == "initialization"}
    for f in out:  # blow-ups that were not there at the start are what the steps did, not why
        if f.code in ("EXPLODING_GRADIENTS", "UPDATE_TOO_LARGE") and f.code not in at_init \
                and f.evidence.get("at") != "initialization":
            f.confidence = min(f.confidence, 0.45)
            f.evidence["note"] = "not present at initialization: a consequence of the steps"
        if f.code == "SADDLE" and f.evidence.get("at") != "initialization":  # a plateau decides (see _saddle)
            f.severity, f.confidence = "info", 0.3
            f.title = "Negative curvature at a point with a tiny gradient (a degenerate valley, unless on a plateau)"
    if ev.best is not None and ev.end is not None:
        clear = {f.code for f in diagnose(ev.best, t)}
        for f in out:
            if f.evidence.get("at") == "end of the run" and f.code not in clear:
                f.evidence["clear_at_best_pt"] = True
    return out


def _fix_measured(f: Finding, ev: RunEvidence, codes: set[str], lr: float | None) -> None:
    """A config change for the findings that come from measurements (gradients, activations, curvature)."""
    init = ev.config.get("init") or {}
    model = ev.config.get("model") or {}
    unscaled = init.get("rule", "default") in _UNSCALED
    name, _, beta = _opt(ev.config)
    if f.code in ("VANISHING_GRADIENTS", "EXPLODING_GRADIENTS", "SATURATED_ACTIVATIONS") and unscaled:
        f.fix = {"init.rule": "kaiming_normal"}
        f.confidence = min(0.95, f.confidence + 0.25)
        f.evidence["init_rule"] = init.get("rule")
        if init.get("rule") == "normal":
            f.evidence["init_std"] = init.get("std", 0.01)
    elif f.code == "VANISHING_GRADIENTS" and model.get("activation") in ("sigmoid", "tanh"):
        f.fix = {"model.activation": "relu"}
    elif f.code == "EXPLODING_GRADIENTS":
        f.fix = {"regularization.clip_norm": 1.0}
    elif f.code == "SATURATED_ACTIVATIONS":
        f.fix = {"model.norm": "layer"}
    elif f.code == "DEAD_UNITS":
        if float(init.get("bias") or 0.0) < 0:
            f.fix = {"init.bias": 0.0}
            f.evidence["init_bias"] = init.get("bias")
            f.confidence = min(0.95, f.confidence + 0.2)
        elif "LR_TOO_HIGH" in codes and lr:
            f.fix = {"optimizer.lr": lr / 10}
        else:
            f.fix = {"model.activation": "gelu"}
    elif f.code in ("LR_BEYOND_STABILITY", "UPDATE_TOO_LARGE", "NONFINITE") and lr:
        lmax = f.evidence.get("lambda_max")
        edge = f.evidence.get("edge")
        f.fix = {"optimizer.lr": (0.5 * edge / lmax) if isinstance(lmax, float) and edge else lr / 10}
    elif f.code == "UPDATE_TOO_SMALL" and lr:
        f.fix = {"optimizer.lr": lr * 10}
    elif f.code == "SADDLE":
        f.fix = ({"init.rule": "kaiming_normal"} if unscaled else
                 {"optimizer.momentum": 0.9} if name == "sgd" and beta == 0 else {})
    elif f.code == "ILL_CONDITIONED" and not (ev.config.get("data") or {}).get("standardize", True):
        f.fix = {"data.standardize": True}


def _round(fix: dict[str, Any]) -> dict[str, Any]:
    """Learning rates to three significant digits: a value a person would write in a config."""
    return {k: float(f"{v:.3g}") if k == "optimizer.lr" and isinstance(v, float) else v for k, v in fix.items()}


def _refine_lr(f: Finding, suggestion: float | None, lr: float | None) -> None:
    """The LR range test's suggestion replaces the ×10 / ÷10 rule of thumb where it agrees in direction."""
    if suggestion is None or lr is None or ("optimizer.lr" not in f.fix and f.code != "NO_LEARNING"):
        return
    if (f.code in ("LR_TOO_LOW", "NO_LEARNING") and suggestion > 2 * lr) or (f.code in ("LR_TOO_HIGH", "NONFINITE", "LR_BEYOND_STABILITY") and suggestion < lr / 2):
        f.fix = {"optimizer.lr": suggestion}
    else:
        return
    f.evidence["lr_finder_suggestion"] = suggestion


def _healthy(ev: RunEvidence) -> Finding:
    c = read_curves(ev.records)
    evd: dict[str, Any] = {}
    acc, loss = c.best_val(2, lower=False), c.best_val(1)
    if acc is not None:
        evd["best_val_accuracy"] = acc[1]
    if loss is not None:
        evd["best_val_loss"] = loss[1]
    if ev.data is not None:
        evd["chance_loss"] = ev.data.chance_loss
    return Finding("HEALTHY", "Healthy: no warning-level finding", "info", evd,
                   "Nothing to treat; to go further, tune the learning rate and regularization (thalweg bench)",
                   confidence=0.8)


def _saddle(found: list[Finding], ev: RunEvidence) -> list[Finding]:
    """A present plateau with certified negative curvature: the run sits near a saddle point."""
    plateau = next((f for f in found if f.code == "PLATEAU" and f.evidence.get("present")), None)
    c = (ev.end or {}).get("curvature") or {}
    lmin, lmax, r = c.get("lambda_min"), c.get("lambda_max"), c.get("residual_min") or 0.0
    if plateau is None or not isinstance(lmin, float) or not isinstance(lmax, float) or lmax <= 0:
        return []
    if not (lmin + r < 0 and -lmin >= 0.05 * lmax):
        return []
    ratio = _edge_ratio(ev, read_curves(ev.records).lr_now)
    if ratio is not None and ratio < 1e-3:  # steps far too short to leave any point: that is LR_TOO_LOW
        return []
    return [Finding("SADDLE", "Stuck near a saddle point: a plateau with negative curvature", "warning",
                    {"at": "end of the run", "lambda_min": lmin, "residual_min": r, "lambda_max": lmax,
                     "grad_norm": c.get("grad_norm"), "plateau_from_step": plateau.evidence.get("from_step")},
                    "The loss is flat yet a descent direction exists (λ_min < 0): the iterate creeps along the "
                    "saddle's unstable direction; start away from it (a scaled init) or add momentum",
                    confidence=0.75, figure="curvature")]


def diagnose_run(ev: RunEvidence, thresholds: Thresholds | None = None) -> list[Finding]:
    """Every rule over everything the run has, merged per code, each with a fix, ranked."""
    t = thresholds or Thresholds()
    curves = read_curves(ev.records)
    lr = curves.lr_now if curves.lr_now is not None else _opt(ev.config)[1]
    d = ev.data
    task_classes = d.num_classes if d is not None else None
    best_acc = curves.best_val(2, lower=False)
    found: list[Finding] = []
    if d is not None:
        found += data_findings(d, ev.config, best_accuracy=best_acc[1] if best_acc else None, thresholds=t)
    found += config_findings(ev.config, world_size=ev.world_size, thresholds=t)
    if ev.weights is not None:
        found += weight_findings(ev.weights, ev.config, output_layer=ev.output_layer)
    chance = d.chance_loss if d is not None else None
    found += curve_findings(curves, ev.config, chance_loss=chance, chance_accuracy=d.chance_accuracy if d else None,
                            num_classes=task_classes, moved=ev.weights.moved if ev.weights else None,
                            lr_edge_ratio=_edge_ratio(ev, lr), thresholds=t)
    found += _saddle(found, ev)
    measured = _measured(ev, t)
    if any(f.code in ("RECOVERED",) for f in found):  # the blow-up is history: the present is what counts
        measured = [f for f in measured if f.code != "NONFINITE" or f.evidence.get("at") == "end of the run"]
    found = _merge(found + measured)
    codes = {f.code for f in found}
    for f in found:
        if not f.fix:
            _fix_measured(f, ev, codes, lr)
        _refine_lr(f, ev.lr_suggestion, lr)
        f.fix = _round(f.fix)
        if f.fix and "→" not in f.action:
            f.action = f"{f.action} → {describe_fix(f.fix)}"
    if not any(f.severity != "info" for f in found):
        found.append(_healthy(ev))
    return rank(found)
