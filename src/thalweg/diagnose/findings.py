"""A finding — one named condition with its evidence, confidence and the config change to try —
and the differential ranking that puts the most likely cause first.

Causes before symptoms: findings that matter (critical, warning) come before notes (info); a
finding that an evidenced cause can produce (the graph :data:`CAUSES`) is listed *under* that
cause as its symptom, not ranked on its own; the causes (:data:`ROOT_CAUSES`) lead, then the
symptoms no evidenced cause explains — each of those names the causes it could not tell apart
(`differential`) and the measurement that would (`tell_apart`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = [
    "CAUSES",
    "ROOT_CAUSES",
    "Finding",
    "Severity",
    "Thresholds",
    "describe_fix",
    "flatten",
    "format_findings",
    "rank",
    "reach",
    "to_json",
]

Severity = Literal["info", "warning", "critical"]
SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}

#: the causes a treatment changes (a config field, the data): ranked before the symptoms they explain
ROOT_CAUSES: tuple[str, ...] = (
    "UNNORMALIZED_INPUTS", "LABEL_PROBLEMS", "TOO_LITTLE_DATA", "SYMMETRIC_INIT", "BAD_INIT",
    "SATURATING_ACTIVATION", "FROZEN_PARAMETERS", "SMALL_BATCH_NORM", "MODEL_TOO_SMALL", "OVER_REGULARIZED",
    "MODEL_TOO_LARGE", "LR_TOO_HIGH", "LR_TOO_LOW",
)
_TRAINING = ("NO_LEARNING", "UNDERFITTING", "PLATEAU")
#: cause → what it can produce (a directed acyclic graph; tests check it is acyclic). A root cause
#: can produce another cause's signs (unnormalized inputs make any learning rate look too high).
CAUSES: dict[str, tuple[str, ...]] = {
    "UNNORMALIZED_INPUTS": ("LR_TOO_HIGH", "LR_TOO_LOW", "SATURATING_ACTIVATION", "NONFINITE", "LR_BEYOND_STABILITY", "EXPLODING_GRADIENTS",
                            "SATURATED_ACTIVATIONS", "DEAD_UNITS", "VANISHING_GRADIENTS", "ILL_CONDITIONED",
                            "SADDLE", "UPDATE_TOO_LARGE", "UPDATE_TOO_SMALL", *_TRAINING),
    "LABEL_PROBLEMS": ("OVERFITTING", *_TRAINING),
    "TOO_LITTLE_DATA": ("OVERFITTING", "LR_TOO_LOW", *_TRAINING),
    "SYMMETRIC_INIT": ("FROZEN_PARAMETERS", "MODEL_TOO_SMALL", "DEAD_UNITS", "VANISHING_GRADIENTS", "LR_TOO_LOW",
                       "SADDLE", "UPDATE_TOO_SMALL", *_TRAINING),
    "BAD_INIT": ("LR_TOO_HIGH", "LR_TOO_LOW", "SATURATING_ACTIVATION", "VANISHING_GRADIENTS", "EXPLODING_GRADIENTS",
                 "SATURATED_ACTIVATIONS", "DEAD_UNITS", "NONFINITE", "SADDLE", "UPDATE_TOO_LARGE",
                 "UPDATE_TOO_SMALL", "LR_BEYOND_STABILITY", "OVERFITTING", *_TRAINING),
    "SATURATING_ACTIVATION": ("VANISHING_GRADIENTS", "SATURATED_ACTIVATIONS", "LR_TOO_LOW", "SADDLE",
                              "UPDATE_TOO_SMALL", *_TRAINING),
    "FROZEN_PARAMETERS": ("LR_TOO_LOW", "MODEL_TOO_SMALL", "UPDATE_TOO_SMALL", *_TRAINING),
    "SMALL_BATCH_NORM": ("LR_TOO_HIGH", "OVERFITTING", "NONFINITE", *_TRAINING),
    "MODEL_TOO_SMALL": ("LR_TOO_LOW", "SADDLE", *_TRAINING),
    "OVER_REGULARIZED": ("LR_TOO_LOW", *_TRAINING),
    "MODEL_TOO_LARGE": ("OVERFITTING",),
    "LR_TOO_HIGH": ("NONFINITE", "DEAD_UNITS", "EXPLODING_GRADIENTS", "SATURATED_ACTIVATIONS", "UPDATE_TOO_LARGE",
                    "LR_BEYOND_STABILITY", "LR_NEAR_EDGE", "OVERFITTING", *_TRAINING),
    "LR_TOO_LOW": ("UPDATE_TOO_SMALL", "SADDLE", *_TRAINING),
    # symptoms that produce other symptoms (their order when no cause explains them)
    "NONFINITE": _TRAINING,
    "EXPLODING_GRADIENTS": ("NONFINITE", "LR_BEYOND_STABILITY", "UPDATE_TOO_LARGE", "DEAD_UNITS", *_TRAINING),
    "DEAD_UNITS": ("VANISHING_GRADIENTS", "UPDATE_TOO_SMALL", *_TRAINING),
    "SATURATED_ACTIVATIONS": ("VANISHING_GRADIENTS", *_TRAINING),
    "VANISHING_GRADIENTS": ("SADDLE", "UPDATE_TOO_SMALL", *_TRAINING),
    "ILL_CONDITIONED": ("PLATEAU",),
    "SADDLE": ("PLATEAU", "NO_LEARNING"),
    "PLATEAU": ("NO_LEARNING",),
    "UNDERFITTING": (),
    "OVERFITTING": (),
    "NO_LEARNING": (),
}


def reach() -> dict[str, set[str]]:
    """Every code → the codes it can lead to, directly or through others (the closure of CAUSES)."""
    out: dict[str, set[str]] = {}

    def visit(code: str) -> set[str]:
        if code not in out:
            out[code] = set()
            for s in CAUSES.get(code, ()):
                out[code] |= {s} | visit(s)
        return out[code]

    for c in CAUSES:
        visit(c)
    return out


@dataclass
class Finding:
    """One diagnosis: code, title, severity, the evidence, the action in words, how sure the
    doctor is (0–1), the config change to try (`fix`: dotted field → value, e.g.
    ``{"optimizer.lr": 0.05}``) and which figure shows the evidence."""

    code: str
    title: str
    severity: Severity
    evidence: dict[str, Any]
    action: str
    confidence: float = 1.0
    fix: dict[str, Any] = field(default_factory=dict)
    figure: str | None = None
    metric: str = "best"  # what a verified treatment must improve: "best" or "final_val_loss"
    symptoms: list[Finding] = field(default_factory=list)  # what this cause produced, shown under it
    differential: list[str] = field(default_factory=list)  # causes of this symptom not told apart
    tell_apart: str = ""  # the measurement that would tell them apart

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        ev = ", ".join(f"{k}={_fmt(v)}" for k, v in self.evidence.items() if k != "explained_by")
        out = (f"[{self.severity.upper()}] {self.code} (confidence {self.confidence:.2f}): {self.title}\n"
               f"    evidence: {ev}\n    action: {self.action}")
        for s in self.symptoms:
            sev = ", ".join(f"{k}={_fmt(v)}" for k, v in s.evidence.items() if k != "explained_by")
            out += f"\n    ↳ symptom {s.code}: {s.title} ({sev})"
        if self.differential:
            out += (f"\n    could be: {', '.join(self.differential)} — not told apart"
                    + (f"; {self.tell_apart}" if self.tell_apart else ""))
        return out


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
    signal_vanish: float = 0.05  # last activation RMS below this × the input's → vanishing signal
    signal_explode: float = 20.0  # above this × the input's → exploding signal
    # run-level rules (curves, data, config)
    no_learning_skill: float = 0.05  # best val loss within 5 % of the chance level
    no_learning_accuracy: float = 0.1  # and accuracy within 10 % of the way from chance to perfect
    overfit_rise: float = 0.3  # val loss 30 % above its best at the end (with an accuracy gap)
    overfit_rise_alone: float = 0.5  # or 50 % above it whatever the accuracy does
    overfit_gap: float = 0.3  # train accuracy − val accuracy
    spike_factor: float = 2.0  # a train-loss record this many times its running minimum
    diverged_factor: float = 1.5  # ended this many times above its minimum
    plateau_fraction: float = 0.4  # flat for this fraction of the run
    plateau_tolerance: float = 0.02  # "flat": within 2 % of the chance-to-floor range
    slow_late_fraction: float = 0.15  # share of the total decrease still made in the last quarter
    moved_little: float = 0.1  # relative weight change over the whole run
    scale_orders: float = 2.0  # feature scales spanning this many decades
    scale_max: float = 100.0  # or a feature RMS this large
    imbalance: float = 0.9  # majority class share
    min_class_count: int = 5
    small_batch_norm: int = 16
    # causes (diagnose/causes.py)
    init_gain_low: float = 0.15  # a layer's RMS·√fan_in below this × the activation's Kaiming gain
    init_gain_high: float = 2.5  # or above this × it: the init is the cause
    little_data_per_class: float = 40.0  # training examples per class below this: too little data
    many_parameters: float = 40.0  # parameters per training example from which an overfitting model is too large
    overfit_rise_large: float = 0.2  # such a model's val loss this far above its best at the end is overfitting
    label_signal_weak: float = 0.15  # nearest-neighbour label agreement above chance below this: labels ≠ inputs
    outvoted: float = 0.15  # share of training labels the best weights and the neighbourhood both reject
    outvoted_lean: float = 0.1  # and the weights side with the neighbourhood this much more than the labels
    lr_above_range: float = 1.0  # peak lr ≥ this × the range test's loss minimum: too high
    lr_below_range: float = 300.0  # peak lr ≤ the range test's loss minimum / this: too low
    weights_grew: float = 10.0  # a weight matrix ended this many times its initial norm away: steps too large
    extras: dict[str, float] = field(default_factory=dict)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, list) and len(v) > 6:
        return "[" + ", ".join(_fmt(x) for x in v[:6]) + ", …]"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items()) + "}"
    return str(v)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return str(v)


def describe_fix(fix: Mapping[str, Any]) -> str:
    """`{"optimizer.lr": 0.05}` as the line a person would write: ``[optimizer] lr = 0.05``."""
    parts = []
    for key, value in fix.items():
        section, _, name = key.rpartition(".")
        parts.append(f"[{section}] {name} = {_toml_value(value)}" if section else f"{name} = {_toml_value(value)}")
    return "; ".join(parts)


def _key(f: Finding, i: int) -> tuple[bool, bool, float, int, int]:
    """Notes last; among the rest, causes the doctor is sure of (≥ 0.5) before the symptoms no
    such cause explains, then the surer first."""
    sure_cause = f.code in ROOT_CAUSES and f.confidence >= 0.5
    return (f.severity == "info", not sure_cause, -f.confidence, SEVERITY_ORDER[f.severity], i)


def rank(findings: Iterable[Finding]) -> list[Finding]:
    """The differential, most likely cause first: a finding that an evidenced finding (warning or
    critical, confidence ≥ 0.5) can produce (CAUSES, transitively) is not ranked on its own but
    listed under the first-ranked such cause (`symptoms`), and names its causes (`explained_by`).
    Notes (info) that no evidenced finding explains stay at the end, on their own."""
    fs = list(findings)
    closure = reach()
    leads = [j for j, g in enumerate(fs) if g.severity != "info" and g.confidence >= 0.5]
    above = {i: [j for j in leads if j != i and fs[i].code in closure.get(fs[j].code, set())]
             for i in range(len(fs))}
    roots = sorted((i for i in range(len(fs)) if not above.get(i)), key=lambda i: _key(fs[i], i))
    for i, js in above.items():
        if not js:
            continue
        f = fs[i]
        f.evidence = {**f.evidence, "explained_by": sorted({fs[j].code for j in js})}
        parent = next(r for r in roots if f.code in closure.get(fs[r].code, set()) and r in leads)
        fs[parent].symptoms.append(f)
    for r in roots:
        fs[r].symptoms.sort(key=lambda f: (SEVERITY_ORDER[f.severity], -f.confidence))
    return [fs[i] for i in roots]


def flatten(findings: Iterable[Finding]) -> list[Finding]:
    """Every finding, the symptoms under each cause included (cause first)."""
    out: list[Finding] = []
    for f in findings:
        out += [f, *flatten(f.symptoms)]
    return out


def format_findings(findings: Sequence[Finding], *, healthy: str | None = None) -> str:
    """Plain text, one block per finding (or a single line saying nothing was found)."""
    if not findings:
        return healthy or "No findings: gradients, activations and curvature look healthy."
    lines = [str(f) for f in findings]
    if all(f.severity == "info" for f in findings):
        lines.insert(0, healthy or "Healthy: no warning-level finding (notes below).")
    return "\n".join(lines)


def clean(v: Any) -> Any:
    """JSON-safe copy: non-finite floats become strings."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, dict):
        return {k: clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [clean(x) for x in v]
    return v


def to_json(findings: Sequence[Finding]) -> str:
    """The findings as a JSON list (non-finite numbers written as strings)."""
    return json.dumps([clean(f.to_dict()) for f in findings], indent=2)
