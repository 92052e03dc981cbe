"""Treatments: a finding's fix applied to a run's config, and the before/after comparison
that says whether the treatment worked (on the same data and the same budget)."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from thalweg.diagnose.findings import Finding

__all__ = ["Verification", "apply_fix", "choose_treatment", "compare", "why_not"]


def apply_fix(config: Mapping[str, Any], fix: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of `config` (a plain dict) with each dotted field of `fix` set."""
    out = copy.deepcopy(dict(config))
    for key, value in fix.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ValueError(f"cannot set {key!r}: {part!r} is not a section")
            node = nxt
        node[leaf] = copy.deepcopy(value)
    return out


def choose_treatment(findings: Sequence[Finding]) -> Finding | None:
    """The top finding when it is worth treating (warning or critical) and has a fix; None if
    the run is healthy or its top finding has no config fix (e.g. LABEL_PROBLEMS)."""
    if not findings or findings[0].severity == "info" or not findings[0].fix:
        return None
    return findings[0]


@dataclass
class Verification:
    """Before/after of a treatment on the same data and budget."""

    code: str
    fix: dict[str, Any]
    metric: str  # e.g. "best val_accuracy", "final val_loss"
    higher_is_better: bool
    before: float | None
    after: float | None
    improved: bool
    before_run: str
    after_run: str
    epochs: int
    before_top: str | None = None  # top finding of each short run
    after_top: str | None = None
    why: str = ""  # when not improved: why, in words (see `why_not`)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        b = "failed" if self.before is None else f"{self.before:.4g}"
        a = "failed" if self.after is None else f"{self.after:.4g}"
        verdict = "improved" if self.improved else "NOT improved"
        tops = f"; top finding {self.before_top or '-'} → {self.after_top or '-'}" if self.before_top else ""
        why = f"\n    why not: {self.why}" if self.why else ""
        return (f"verified {self.code} ({self.epochs} epochs each, the same data and seed): {self.metric} {b} → {a}: "
                f"{verdict}{tops}{why}\n    before: {self.before_run}\n    after:  {self.after_run}")


#: causes no config change can remove: a treatment can only soften them
_DATA_CAUSES = {"TOO_LITTLE_DATA": "the cause is the data: a config change can only regularize around it; more "
                                   "data is the cure",
                "LABEL_PROBLEMS": "the cause is in the labels: no config change fixes them"}


def why_not(v: Verification, finding: Finding) -> str:
    """Why a verified treatment did not improve its metric, from what the two runs show."""
    ok = lambda x: x is not None and math.isfinite(x)  # noqa: E731
    if finding.code in _DATA_CAUSES:
        return _DATA_CAUSES[finding.code]
    if not ok(v.after):
        return ("the treated run blew up too (non-finite): the fix is not enough or the cause is elsewhere"
                + (f" — its own diagnosis names {v.after_top}" if v.after_top else ""))
    if not ok(v.before):
        return "the original run failed, and so did the comparison"
    diff = abs(v.after - v.before)  # type: ignore[operator]
    if diff <= 0.01 * max(abs(v.before), 1e-12) + (0.005 if "accuracy" in v.metric else 0.0):  # type: ignore[arg-type]
        return (f"no measurable change in {v.epochs} epochs: the budget may be too short for the treated run to "
                "pull ahead, or the fix does not touch what limits this run"
                + (f" (the treated run's own diagnosis: {v.after_top})" if v.after_top else ""))
    if v.after_top and v.after_top == v.before_top and v.after_top == v.code:
        return f"the treated run still shows {v.code}: the fix is in the right direction but not strong enough"
    return ("the treated run is worse: the fix does not address what limits this run"
            + (f"; the treated run's own diagnosis names {v.after_top}" if v.after_top else ""))


def compare(before: float | None, after: float | None, *, higher_is_better: bool, min_gain: float = 0.0) -> bool:
    """Did the treatment help? A finished run beats one that failed (None or non-finite)."""
    ok = lambda v: v is not None and math.isfinite(v)  # noqa: E731
    if not ok(after):
        return False
    if not ok(before):
        return True
    gain = (after - before) if higher_is_better else (before - after)  # type: ignore[operator]
    return gain > min_gain * max(abs(before), 1e-12)  # type: ignore[arg-type]
