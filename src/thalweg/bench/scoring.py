"""Scoring as AlgoPerf scores: time-to-target per study (its fastest trial), per workload (the
median over studies), performance ratios against the best submission, performance profiles
ρ(τ) and the score ∫₁^{r_max} ρ(τ) dτ / (r_max − 1) with ratios above r_max counted as ∞.

Everything here is a pure function of trial records (the lines of `results.jsonl`).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "R_MAX",
    "best_record",
    "mean_ci",
    "objective",
    "performance_profile",
    "performance_ratios",
    "real",
    "results_table",
    "score",
    "scores",
    "study_time",
    "toy",
    "workload_times",
]

R_MAX = 4.0
INF = math.inf
TIMED_PHASES = ("tune", "self")


def real(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The records of real workloads (the headline score); older records without a group count."""
    return [r for r in records if r.get("group", "real") != "toy"]


def headline(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """What the headline score is over: the real workloads, or the toy problems in a bench
    that has no real one."""
    records = list(records)
    return real(records) or list(records)


def toy(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The records of the toy problems (scored apart)."""
    return [r for r in records if r.get("group") == "toy"]


def _time(rec: Mapping[str, Any], unit: str) -> float:
    if unit == "cpu":  # CPU seconds to the target: steps × the trial's CPU seconds per step
        steps, per = (rec.get("time_to_target") or {}).get("steps"), (rec.get("cpu") or {}).get("per_step")
        return float(steps) * float(per) if rec.get("reached") and steps is not None and per else INF
    t = (rec.get("time_to_target") or {}).get(unit)
    return float(t) if rec.get("reached") and t is not None else INF


def study_time(records: Iterable[Mapping[str, Any]], unit: str = "seconds") -> float:
    """A study's time-to-target: its fastest trial that reached the target (∞ if none did)."""
    return min((_time(r, unit) for r in records), default=INF)


def workload_times(records: Iterable[Mapping[str, Any]], unit: str = "seconds",
                   ruleset: str = "external") -> dict[str, dict[str, float]]:  # fmt: skip
    """submission → workload → the median over studies of each study's fastest time."""
    studies: dict[tuple[str, str, Any], list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        if r.get("ruleset") == ruleset and r.get("phase") in TIMED_PHASES:
            studies[(r["submission"], r["workload"], r.get("study_index"))].append(r)
    per: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for (sub, wl, _), recs in studies.items():
        per[sub][wl].append(study_time(recs, unit))
    return {s: {w: statistics.median(ts) for w, ts in wls.items()} for s, wls in per.items()}


def performance_ratios(times: Mapping[str, Mapping[str, float]],
                       r_max: float = R_MAX) -> dict[str, dict[str, float]]:  # fmt: skip
    """t(s, w) / min over submissions of t(·, w); above `r_max`, or never reached, is ∞.

    A workload no submission reached gives every submission ∞ on it; a submission that has
    no time for a workload at all (not run) also counts as ∞ there."""
    workloads = sorted({w for per in times.values() for w in per})
    out: dict[str, dict[str, float]] = {s: {} for s in times}
    for w in workloads:
        ts = {s: times[s].get(w, INF) for s in times}
        best = min(ts.values())
        for s, t in ts.items():
            if not math.isfinite(best) or not math.isfinite(t):
                r = INF
            elif best == 0:
                r = 1.0 if t == 0 else INF
            else:
                r = t / best
            out[s][w] = r if r <= r_max else INF
    return out


def performance_profile(ratios: Mapping[str, float], taus: Sequence[float]) -> list[float]:
    """ρ(τ): the fraction of workloads on which the submission is within τ of the best."""
    n = len(ratios)
    if n == 0:
        return [0.0 for _ in taus]
    return [sum(r <= tau for r in ratios.values()) / n for tau in taus]


def score(ratios: Mapping[str, float], r_max: float = R_MAX) -> float:
    """The AlgoPerf score ∫₁^{r_max} ρ(τ) dτ / (r_max − 1), exactly: ρ is a step function,
    so each workload contributes (r_max − r) / (r_max − 1) when r ≤ r_max, else 0."""
    if not ratios:
        return 0.0
    total = sum((r_max - r) / (r_max - 1.0) for r in ratios.values() if r <= r_max)
    return total / len(ratios)


def scores(records: Iterable[Mapping[str, Any]], unit: str = "seconds", ruleset: str = "external",
           r_max: float = R_MAX) -> dict[str, float]:  # fmt: skip
    """submission → AlgoPerf score over the workloads in `records`."""
    ratios = performance_ratios(workload_times(records, unit, ruleset), r_max)
    return {s: score(r, r_max) for s, r in ratios.items()}


def objective(rec: Mapping[str, Any], by: str = "time") -> float | None:
    """What the Optuna study minimizes. By time: the fraction of the step budget used to
    reach the target (≤ 1), else 1 + the shortfall of the best metric (log10 ratio for
    losses, the gap for accuracies). By metric (recipes), or without a target: the best
    metric itself; by final (calibration): the end-of-budget metric (both negated when
    maximized). None for a crashed trial (recorded as FAIL)."""
    if rec.get("status") == "crashed":
        return None
    best = (rec.get("best") or {}).get("metric")
    target, mode = rec.get("target"), rec.get("mode", "min")
    if by == "final":  # calibration: the end-of-budget metric (None: diverged or cut short)
        end = rec.get("end_metric")
        return 1e12 if end is None else (float(end) if mode == "min" else -float(end))
    if target is None or by == "metric":
        if best is None:
            return 1e12
        return float(best) if mode == "min" else -float(best)
    if rec.get("reached"):
        return rec["time_to_target"]["steps"] / max(1, rec.get("step_budget") or 1)
    if best is None:
        return 1e6
    if mode == "max":
        return 1.0 + max(0.0, float(target) - float(best))
    if best > 0 and target > 0:
        return 1.0 + max(0.0, math.log10(best / target))
    return 1.0 + max(0.0, float(best) - float(target))


def _rank_key(rec: Mapping[str, Any], by: str) -> tuple[float, float]:
    best = (rec.get("best") or {}).get("metric")
    sign = 1.0 if rec.get("mode", "min") == "min" else -1.0
    metric = sign * best if best is not None else INF
    if by == "final":
        end = rec.get("end_metric")
        return (sign * end if end is not None else INF, metric)
    return (metric, _time(rec, "steps")) if by == "metric" else (_time(rec, "steps"), metric)


def best_record(records: Iterable[Mapping[str, Any]], by: str = "time") -> Mapping[str, Any] | None:
    """The configuration a tuning phase chose: fewest steps to the target (steps, not seconds,
    so the choice is reproducible), ties and misses broken by the best metric; `by="metric"`
    (recipes): the best metric, ties broken by steps; `by="final"` (calibration): the
    end-of-budget metric."""
    ok = [r for r in records if r.get("status") != "crashed"]
    return min(ok, key=lambda r: _rank_key(r, by)) if ok else None


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float] | None:
    """(mean, low, high) of a Student-t confidence interval; None without values."""
    xs = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not xs:
        return None
    m = statistics.fmean(xs)
    if len(xs) < 2:
        return (m, m, m)
    from scipy import stats

    half = stats.t.ppf(0.5 + level / 2, len(xs) - 1) * statistics.stdev(xs) / math.sqrt(len(xs))
    return (m, m - half, m + half)


def results_table(records: Iterable[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
    """One sorted row per trial with everything that is reproducible for a fixed seed (no
    seconds): study, trial, seed, params, status, steps to target, best and final metric."""

    def rnd(x: Any) -> Any:
        return None if x is None else float(f"{x:.6g}")

    rows = []
    for r in records:
        params = tuple(sorted((k, rnd(v) if isinstance(v, float) else v)
                              for k, v in (r.get("params") or {}).items()))  # fmt: skip
        rows.append((r["study"], r["trial"], r["seed"], params, r["status"],
                     r["time_to_target"]["steps"], rnd(r["best"]["metric"]), rnd(r["final_metric"])))  # fmt: skip
    return sorted(rows, key=lambda row: (row[0], row[1]))
