"""Measurements → findings a person can act on: each finding names the problem, shows the numbers
that triggered it, rates its severity and suggests what to change.

`diagnose` reads a `Monitor.measure()` dict plus optional keys: ``lr``, ``optimizer``,
``momentum`` and ``curvature`` (``lambda_max``, ``lambda_min``, ``residual_min``,
``grad_norm``, ``kind``, ``condition_number``, ``zero_tol``), and ``loss_history``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = ["Finding", "Thresholds", "diagnose", "format_findings", "to_html", "to_json", "write_html_section"]

Severity = Literal["info", "warning", "critical"]
_ORDER = {"critical": 0, "warning": 1, "info": 2}
_ADAPTIVE = ("adam", "adamw", "rmsprop", "adagrad", "adadelta", "adahessian")


@dataclass
class Finding:
    """One diagnosis: a stable code, a title, severity, the evidence and the suggested action."""

    code: str
    title: str
    severity: Severity
    evidence: dict[str, Any]
    action: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        ev = ", ".join(f"{k}={_fmt(v)}" for k, v in self.evidence.items())
        return f"[{self.severity.upper()}] {self.code}: {self.title}\n    evidence: {ev}\n    action: {self.action}"


@dataclass
class Thresholds:
    """The numbers behind each rule (rules of thumb, stated so they can be changed)."""

    vanishing_ratio: float = 1e-3  # first/last layer gradient norm below this → vanishing
    exploding_ratio: float = 1e3  # first/last above this → exploding
    exploding_norm: float = 1e3  # any layer gradient norm above this → exploding
    update_ratio_high: float = 1e-1
    update_ratio_low: float = 1e-6
    dead_warning: float = 0.5
    dead_critical: float = 0.9
    saturation: float = 0.5
    grad_tol: float = 1e-3  # gradient norm this small counts as "stopped"
    ill_conditioned: float = 1e3
    stability_edge: float = 2.0
    extras: dict[str, float] = field(default_factory=dict)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, list) and len(v) > 6:
        return "[" + ", ".join(_fmt(x) for x in v[:6]) + ", …]"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else None


def _gradient_rules(m: Mapping[str, Any], t: Thresholds) -> list[Finding]:
    out: list[Finding] = []
    layers = [L for L in m.get("layers", []) if L.get("matrix") and _num(L.get("grad_norm")) is not None]
    norms = [float(L["grad_norm"]) for L in layers]
    if any(math.isfinite(g) and g > t.exploding_norm for g in norms):
        worst = max(range(len(norms)), key=lambda i: norms[i])
        out.append(Finding("EXPLODING_GRADIENTS", "Exploding gradients", "critical",
                           {"layer": layers[worst]["name"], "grad_norm": norms[worst], "threshold": t.exploding_norm},
                           "Clip the gradient norm, lower the learning rate, use a smaller init (Xavier/Kaiming) "
                           "or add normalization (BatchNorm/LayerNorm)."))
    elif len(norms) >= 2 and all(math.isfinite(g) for g in norms) and norms[-1] > 0:
        ratio = norms[0] / norms[-1]
        ev = {"first_layer": layers[0]["name"], "last_layer": layers[-1]["name"], "ratio_first_to_last": ratio,
              "grad_norms": norms}
        if ratio < t.vanishing_ratio:
            out.append(Finding("VANISHING_GRADIENTS", "Vanishing gradients toward the input", "warning",
                               {**ev, "threshold": t.vanishing_ratio},
                               "Early layers barely learn: use ReLU-family activations instead of sigmoid/tanh, "
                               "Kaiming/Xavier initialization, BatchNorm/LayerNorm or residual connections."))
        elif ratio > t.exploding_ratio:
            out.append(Finding("EXPLODING_GRADIENTS", "Gradients grow toward the input", "warning",
                               {**ev, "threshold": t.exploding_ratio},
                               "Products of large layer Jacobians: clip gradients, shrink the init scale, add normalization."))
    ratios = [(L["name"], float(L["update_ratio"])) for L in m.get("layers", []) if _num(L.get("update_ratio")) is not None]
    high = [(n, r) for n, r in ratios if r > t.update_ratio_high]
    if high:
        out.append(Finding("UPDATE_TOO_LARGE", "Updates are large relative to the weights", "warning",
                           {"layers": [n for n, _ in high], "update_ratios": [r for _, r in high],
                            "threshold": t.update_ratio_high},
                           "Each step rewrites >10% of the weights: lower the learning rate or add warm-up "
                           "(a healthy ratio is around 1e-3)."))
    elif ratios and max(r for _, r in ratios) < t.update_ratio_low:
        out.append(Finding("UPDATE_TOO_SMALL", "Updates are tiny relative to the weights", "info",
                           {"max_update_ratio": max(r for _, r in ratios), "threshold": t.update_ratio_low},
                           "Training will crawl: raise the learning rate (try an LR range test) or check the schedule."))
    return out


def _activation_rules(m: Mapping[str, Any], t: Thresholds) -> list[Finding]:
    out: list[Finding] = []
    for a in m.get("activations", []):
        dead, sat = _num(a.get("dead_fraction")), _num(a.get("saturation"))
        if dead is not None and dead >= t.dead_warning:
            out.append(Finding("DEAD_UNITS", f"Dead ReLU units in {a['name']}",
                               "critical" if dead >= t.dead_critical else "warning",
                               {"layer": a["name"], "dead_fraction": dead, "units": a.get("units"),
                                "threshold": t.dead_warning},
                               "Units that never fire get no gradient: lower the learning rate, use Kaiming init "
                               "with zero/positive bias, or LeakyReLU/GELU."))
        if sat is not None and sat >= t.saturation:
            out.append(Finding("SATURATED_ACTIVATIONS", f"Saturated {a['type']} units in {a['name']}", "warning",
                               {"layer": a["name"], "saturated_fraction": sat, "threshold": t.saturation},
                               "Saturated tanh/sigmoid have near-zero derivatives (vanishing gradients): normalize "
                               "inputs, use Xavier init or BatchNorm, or switch to ReLU."))
    return out


def _nonfinite_rules(m: Mapping[str, Any]) -> list[Finding]:
    nf = dict(m.get("nonfinite", {}) or {})
    hist = [x for x in m.get("loss_history", []) or [] if _num(x) is not None]
    bad_hist = sum(1 for x in hist if not math.isfinite(float(x)))
    loss = _num(m.get("loss"))
    if loss is not None and not math.isfinite(loss):
        nf["loss"] = True
    counts = {k: v for k, v in nf.items() if v}
    if bad_hist:
        counts["loss_history"] = bad_hist
    if not counts:
        return []
    return [Finding("NONFINITE", "Overflow: inf/NaN in training", "critical", counts,
                    "Lower the learning rate, clip gradients, and use stable formulas (log-sum-exp: subtract "
                    "max(x) before exp, e.g. softmax([1000, 990, 980]); cross_entropy on logits)." )]


def _curvature_rules(m: Mapping[str, Any], t: Thresholds) -> list[Finding]:
    out: list[Finding] = []
    c = m.get("curvature") or {}
    if hasattr(c, "to_dict"):
        c = c.to_dict()
    lmax, lmin = _num(c.get("lambda_max")), _num(c.get("lambda_min"))
    rmin = _num(c.get("residual_min")) or 0.0
    gnorm = _num(c.get("grad_norm"))
    if gnorm is None:
        gnorm = _num(m.get("grad_norm"))
    zero = _num(c.get("zero_tol")) or 0.0
    kind = c.get("kind")
    lr, opt = _num(m.get("lr")), str(m.get("optimizer") or "sgd").lower()
    beta = _num(m.get("momentum")) or 0.0
    if lr is not None and lmax is not None and lmax > 0:
        edge = t.stability_edge * (1 + beta)
        sharp = lr * lmax
        adaptive = any(opt.startswith(a) for a in _ADAPTIVE)
        ev = {"lr": lr, "lambda_max": lmax, "lr_x_lambda_max": sharp, "edge": edge, "optimizer": opt}
        if sharp > edge:
            out.append(Finding("LR_BEYOND_STABILITY", "Learning rate beyond the stability edge",
                               "warning" if adaptive else "critical", ev,
                               f"Gradient descent diverges along the top eigenvector when η·λ_max > {edge:g}: use "
                               f"η < {edge / lmax:.3g}, add warm-up, or decay the rate"
                               + (" (for adaptive methods the preconditioned sharpness decides)." if adaptive else ".")))
        elif sharp > edge / 2:
            out.append(Finding("LR_NEAR_EDGE", "Learning rate near the stability edge", "info", ev,
                               "Steps overshoot across the steepest direction (oscillation): fine if loss falls; "
                               "otherwise lower η or add momentum."))
    if kind == "saddle" or (lmin is not None and lmin + rmin < -zero and gnorm is not None and gnorm <= t.grad_tol
                            and (lmax or 0) > zero):
        out.append(Finding("SADDLE", "Stuck near a saddle point", "warning",
                           {"lambda_min": lmin, "lambda_max": lmax, "residual_min": rmin, "grad_norm": gnorm},
                           "A descent direction exists (λ_min < 0) but the gradient is tiny: add momentum or "
                           "gradient noise (smaller batches), or use saddle-free Newton (|H|) / a step along the "
                           "λ_min eigenvector."))
    elif kind == "minimum":
        out.append(Finding("AT_MINIMUM", "At a local minimum", "info",
                           {"lambda_min": lmin, "lambda_max": lmax, "grad_norm": gnorm},
                           "Training has converged here; to generalize better, regularize (weight decay, dropout, "
                           "early stopping on validation) rather than optimize harder."))
    elif kind == "flat":
        out.append(Finding("FLAT_REGION", "Flat (degenerate) critical region", "info",
                           {"lambda_min": lmin, "lambda_max": lmax, "grad_norm": gnorm, "zero_tol": zero},
                           "Near-zero curvature: the second-derivative test is inconclusive; if the loss is still "
                           "high this is a plateau — momentum or adaptive methods cross it faster."))
    elif kind == "not_critical" and gnorm is not None:
        out.append(Finding("NOT_CRITICAL", "Not at a critical point", "info", {"grad_norm": gnorm},
                           "The gradient is not zero: training has not stopped at a minimum or saddle and can continue."))
    kappa = _num(c.get("condition_number"))
    if kappa is None and lmin is not None and lmax is not None and lmin - rmin > 0:
        kappa = lmax / lmin
    if kappa is not None and math.isfinite(kappa) and kappa > t.ill_conditioned:
        out.append(Finding("ILL_CONDITIONED", "Ill-conditioned curvature (a ravine)", "warning",
                           {"condition_number": kappa, "lambda_max": lmax, "lambda_min": lmin,
                            "threshold": t.ill_conditioned},
                           "GD oscillates across the steep walls and crawls along the floor: use momentum or an "
                           "adaptive method (Adam/RMSProp), normalize inputs/BatchNorm, or precondition (Newton, K-FAC)."))
    return out


def diagnose(measurements: Mapping[str, Any], thresholds: Thresholds | None = None) -> list[Finding]:
    """Apply every rule to `measurements`; findings come back most severe first."""
    if not isinstance(measurements, Mapping):
        raise TypeError(f"measurements must be a mapping (e.g. Monitor.measure() output), got {type(measurements).__name__}")
    t = thresholds or Thresholds()
    found = (_nonfinite_rules(measurements) + _gradient_rules(measurements, t)
             + _activation_rules(measurements, t) + _curvature_rules(measurements, t))
    return sorted(found, key=lambda f: _ORDER[f.severity])


def format_findings(findings: Sequence[Finding]) -> str:
    """Plain text, one block per finding (or a single line saying nothing was found)."""
    if not findings:
        return "No findings: gradients, activations and curvature look healthy."
    return "\n".join(str(f) for f in findings)


def to_json(findings: Sequence[Finding]) -> str:
    """The findings as a JSON list (non-finite numbers written as strings)."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return str(v)
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        return v
    return json.dumps([clean(f.to_dict()) for f in findings], indent=2)


_START, _END = "<!-- thalweg-doctor:start -->", "<!-- thalweg-doctor:end -->"


def to_html(findings: Sequence[Finding], *, title: str = "Diagnosis (thalweg doctor)", extra: str = "") -> str:
    """An HTML section listing the findings (for a run's report.html)."""
    import html

    colors = {"critical": "#b00020", "warning": "#b26a00", "info": "#2f6f3e"}
    items = "".join(
        f'<li><b style="color:{colors[f.severity]}">{f.severity.upper()}</b> <code>{html.escape(f.code)}</code> '
        f"{html.escape(f.title)}<br><small>evidence: "
        f"{html.escape(', '.join(f'{k}={_fmt(v)}' for k, v in f.evidence.items()))}</small><br>"
        f"→ {html.escape(f.action)}</li>" for f in findings)
    body = f"<ul>{items}</ul>" if findings else "<p>No findings: gradients, activations and curvature look healthy.</p>"
    return f'{_START}\n<section id="thalweg-doctor"><h2>{html.escape(title)}</h2>{body}{extra}</section>\n{_END}'


def write_html_section(path: Any, section: str) -> Any:
    """Put `section` into the HTML file at `path`: replace an earlier doctor section, else insert it
    before ``</body>``; create a minimal page when the file does not exist."""
    from pathlib import Path

    p = Path(path)
    if p.is_file():
        doc = p.read_text(encoding="utf-8")
        if _START in doc and _END in doc:
            a, b = doc.index(_START), doc.index(_END) + len(_END)
            doc = doc[:a] + section + doc[b:]
        elif "</body>" in doc:
            i = doc.rindex("</body>")
            doc = doc[:i] + section + "\n" + doc[i:]
        else:
            doc = doc + "\n" + section + "\n"
    else:
        p.parent.mkdir(parents=True, exist_ok=True)
        doc = ('<!doctype html>\n<html><head><meta charset="utf-8"><title>thalweg doctor</title></head>'
               f"<body style=\"font-family:sans-serif;max-width:960px;margin:2em auto\">\n{section}\n</body></html>\n")
    p.write_text(doc, encoding="utf-8")
    return p
