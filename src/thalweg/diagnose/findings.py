"""A finding — one named condition with its evidence, confidence and the config change to try —
and the differential ranking that puts the most likely cause first.

Ranking: findings that matter (critical, warning) come before notes (info); among those, a
finding that *explains* another (a cause of that symptom, by the table :data:`CAUSES`) comes
before it when it is at least moderately sure (confidence ≥ 0.5); otherwise the more severe and
then the more confident finding leads.
"""

from __future__ import annotations

import heapq
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = [
    "CAUSES",
    "Finding",
    "Severity",
    "Thresholds",
    "describe_fix",
    "format_findings",
    "rank",
    "to_json",
]

Severity = Literal["info", "warning", "critical"]
SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}

#: cause → the symptoms it can produce (a directed acyclic graph; tests check it is acyclic).
CAUSES: dict[str, tuple[str, ...]] = {
    "LABEL_PROBLEMS": ("NO_LEARNING", "UNDERFITTING", "OVERFITTING", "PLATEAU"),
    "UNNORMALIZED_INPUTS": ("NONFINITE", "LR_TOO_HIGH", "LR_BEYOND_STABILITY", "EXPLODING_GRADIENTS",
                            "SATURATED_ACTIVATIONS", "DEAD_UNITS", "VANISHING_GRADIENTS", "ILL_CONDITIONED",
                            "LR_TOO_LOW", "NO_LEARNING", "UNDERFITTING", "PLATEAU", "SADDLE",
                            "UPDATE_TOO_LARGE", "UPDATE_TOO_SMALL"),
    "SYMMETRIC_INIT": ("FROZEN_PARAMETERS", "DEAD_UNITS", "VANISHING_GRADIENTS", "LR_TOO_LOW", "NO_LEARNING",
                       "UNDERFITTING", "PLATEAU", "SADDLE", "UPDATE_TOO_SMALL"),
    "FROZEN_PARAMETERS": ("LR_TOO_LOW", "UNDERFITTING", "NO_LEARNING", "PLATEAU", "UPDATE_TOO_SMALL"),
    "SMALL_BATCH_NORM": ("LR_TOO_HIGH", "OVERFITTING", "UNDERFITTING", "NO_LEARNING", "PLATEAU"),
    "EXPLODING_GRADIENTS": ("NONFINITE", "LR_TOO_HIGH", "LR_BEYOND_STABILITY", "UPDATE_TOO_LARGE", "DEAD_UNITS",
                            "NO_LEARNING", "UNDERFITTING", "OVERFITTING"),
    "NONFINITE": ("NO_LEARNING", "UNDERFITTING", "PLATEAU"),
    "LR_TOO_HIGH": ("LR_BEYOND_STABILITY", "LR_NEAR_EDGE", "UPDATE_TOO_LARGE", "DEAD_UNITS", "NO_LEARNING",
                    "UNDERFITTING", "PLATEAU"),
    "SATURATED_ACTIVATIONS": ("VANISHING_GRADIENTS", "NO_LEARNING", "PLATEAU", "UNDERFITTING", "OVERFITTING",
                              "LR_TOO_LOW"),
    "DEAD_UNITS": ("VANISHING_GRADIENTS", "FROZEN_PARAMETERS", "LR_TOO_LOW", "UPDATE_TOO_SMALL", "NO_LEARNING",
                   "PLATEAU", "UNDERFITTING"),
    "VANISHING_GRADIENTS": ("SADDLE", "FROZEN_PARAMETERS", "LR_TOO_LOW", "UPDATE_TOO_SMALL", "NO_LEARNING",
                            "PLATEAU", "UNDERFITTING"),
    "ILL_CONDITIONED": ("LR_TOO_LOW", "PLATEAU"),
    "LR_TOO_LOW": ("UPDATE_TOO_SMALL", "UNDERFITTING", "NO_LEARNING", "PLATEAU"),
    "SADDLE": ("PLATEAU", "NO_LEARNING"),
    "PLATEAU": ("NO_LEARNING",),
    "UNDERFITTING": (),
    "OVERFITTING": (),
    "NO_LEARNING": (),
}


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        ev = ", ".join(f"{k}={_fmt(v)}" for k, v in self.evidence.items())
        return (f"[{self.severity.upper()}] {self.code} (confidence {self.confidence:.2f}): {self.title}\n"
                f"    evidence: {ev}\n    action: {self.action}")


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
    overfit_rise: float = 0.1  # val loss 10 % above its best at the end
    overfit_gap: float = 0.3  # train accuracy − val accuracy
    spike_factor: float = 2.0  # a train-loss record this many times its running minimum
    diverged_factor: float = 1.5  # ended this many times above its minimum
    plateau_fraction: float = 0.4  # flat for this fraction of the run
    plateau_tolerance: float = 0.02  # "flat": within 2 % of the chance-to-floor range
    slow_late_fraction: float = 0.15  # share of the total decrease still made in the last quarter
    moved_little: float = 0.05  # relative weight change over the whole run
    scale_orders: float = 3.0  # feature scales spanning this many decades
    scale_max: float = 1e3  # or a feature RMS this large
    imbalance: float = 0.9  # majority class share
    min_class_count: int = 5
    small_batch_norm: int = 16
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


def _explainers(findings: Sequence[Finding]) -> dict[int, set[int]]:
    """For each finding (by index) the findings that explain it and are sure enough to lead."""
    out: dict[int, set[int]] = {i: set() for i in range(len(findings))}
    for j, g in enumerate(findings):
        if g.severity == "info" or g.confidence < 0.5:
            continue
        for i, f in enumerate(findings):
            if i != j and f.code in CAUSES.get(g.code, ()):
                out[i].add(j)
    return out


def rank(findings: Iterable[Finding]) -> list[Finding]:
    """The differential: most likely cause first (see the module docstring)."""
    fs = list(findings)
    explained_by = _explainers(fs)
    for i, f in enumerate(fs):  # symptoms name their cause, so a reader can follow the chain
        causes = sorted({fs[j].code for j in explained_by[i]})
        if causes and f.severity != "info":
            f.evidence = {**f.evidence, "explained_by": causes}
    waiting = {i: set(s) for i, s in explained_by.items()}
    key = lambda i: (SEVERITY_ORDER[fs[i].severity] == 2, -fs[i].confidence,  # noqa: E731
                     SEVERITY_ORDER[fs[i].severity], i)
    heap = [(key(i), i) for i, s in waiting.items() if not s]
    heapq.heapify(heap)
    out: list[int] = []
    while heap:
        _, i = heapq.heappop(heap)
        out.append(i)
        for k, s in waiting.items():
            if i in s:
                s.discard(i)
                if not s:
                    heapq.heappush(heap, (key(k), k))
    return [fs[i] for i in out]


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
