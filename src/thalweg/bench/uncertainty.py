"""How sure the bench is: per (submission, workload) the reach counts of every study, a verdict
(reached, too slow, inconclusive, never reached), and a bootstrap over studies and seeds that
turns into an interval on each submission's score and rank, and into a pairwise verdict: the
share of replicates in which one submission scores above another (`Summary.ahead`, `holds`).

A study's time is its fastest tuning trial to the target (AlgoPerf); its chosen configuration
is also run on fresh seeds (`confirm`). One bootstrap replicate re-makes every study as the
protocol makes one: its N trials drawn from all M × N tuning trials of the cell (quasi-random
search draws each study's trials from the same space, so a fresh study is N fresh draws; each
chosen configuration's time itself drawn among its seeds — the tuning run and each
confirmation, ∞ where one missed), the fastest taken; the workload time is the median over the
M re-made studies, and ratios, scores and ranks follow. (Resampling each study's own N trials,
as this module did before, is a bootstrap of a minimum — inconsistent: a resample drops the
study's fastest trial a third of the time, so with many studies the replicates sat slower than
the point, e.g. a score of 0.63 with an interval of [0, 0.46] over 24 studies.) The point
estimates are AlgoPerf's own (median over studies of the tuning times).

Calibration, measured (`benchmarks/bench_replicates.py`, docs/bench.md): eight independent runs
of the quick suite, one run's 95 % rank interval held another run's rank 98 % of the time, and
where one run put a submission ahead of another in ≥ 95 % of its replicates the other runs'
scores agreed 98 % of the time.

Everything here is a pure function of trial records (the lines of `results.jsonl`).
"""

from __future__ import annotations

import math
import random
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from thalweg.bench import scoring

__all__ = ["Cell", "Summary", "cells", "geo_speedup", "kendall_tau", "speedup", "summarize", "verdict"]

INF = math.inf


@dataclass
class Cell:
    """One submission on one workload: per study, its time and outcomes, and reach counts."""

    study_times: list[float] = field(default_factory=list)
    #: per study: the chosen configuration's times (the tuning run's, then each confirmation's)
    outcomes: list[list[float]] = field(default_factory=list)
    #: per study: every tuning trial's time, and which of them is the chosen configuration
    trials: list[list[float]] = field(default_factory=list)
    chosen: list[int] = field(default_factory=list)
    #: per study: (tuning trials that reached, tuning trials, confirmations reached, confirmations)
    reach: list[tuple[int, int, int, int]] = field(default_factory=list)

    @property
    def time(self) -> float:
        """AlgoPerf's workload time: the median over studies of each study's fastest trial."""
        return statistics.median(self.study_times) if self.study_times else INF

    @property
    def studies_reached(self) -> int:
        return sum(math.isfinite(t) for t in self.study_times)

    def draw(self, rng: random.Random) -> float:
        """One bootstrap replicate of the workload time (see the module's docstring)."""
        pool: list[float] = []
        for k, t in enumerate(self.study_times):
            trials = list(self.trials[k]) if k < len(self.trials) and self.trials[k] else [t]
            c = self.chosen[k] if k < len(self.chosen) else 0
            if self.outcomes[k] and c < len(trials):
                trials[c] = rng.choice(self.outcomes[k])
            pool += trials
        n = max(1, round(len(pool) / len(self.study_times)))  # trials per study
        return statistics.median(min(rng.choice(pool) for _ in range(n)) for _ in self.study_times)


def cells(records: Iterable[Mapping[str, Any]], ruleset: str = "external",
          unit: str = "steps") -> dict[str, dict[str, Cell]]:  # fmt: skip
    """submission → workload → :class:`Cell` from the tuning (or self-tuning) and confirm trials."""
    tuned: dict[tuple[str, str, Any], list[Mapping[str, Any]]] = defaultdict(list)
    confirmed: dict[tuple[str, str, Any], list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        if r.get("ruleset") != ruleset:
            continue
        key = (r["submission"], r["workload"], r.get("study_index"))
        if r.get("phase") in scoring.TIMED_PHASES:
            tuned[key].append(r)
        elif r.get("phase") == "confirm":
            confirmed[key].append(r)
    out: dict[str, dict[str, Cell]] = defaultdict(dict)
    for (sub, wl, _), recs in sorted(tuned.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or 0)):
        cell = out[sub].setdefault(wl, Cell())
        t = scoring.study_time(recs, unit)
        conf = confirmed.get((sub, wl, recs[0].get("study_index")), [])
        ct = [scoring.study_time([c], unit) for c in conf]
        best = scoring.best_record(recs)
        cell.study_times.append(t)
        cell.outcomes.append([t, *ct])
        cell.trials.append([scoring.study_time([r], unit) for r in recs])
        cell.chosen.append(next((i for i, r in enumerate(recs) if r is best), 0))
        cell.reach.append((sum(bool(r.get("reached")) for r in recs), len(recs),
                           sum(math.isfinite(x) for x in ct), len(ct)))  # fmt: skip
    return dict(out)


def verdict(cell: Cell, ratio: float, r_max: float = scoring.R_MAX) -> str:
    """"reached" (every study reached, within r_max of the fastest), "too slow" (the median
    study reached, slower than r_max × the fastest), "inconclusive" (studies split: some
    reached, some not), "never reached" (no study, no confirmation)."""
    m, k = len(cell.study_times), cell.studies_reached
    confirmed = any(c for *_, c, _ in cell.reach)
    if math.isfinite(cell.time) and not ratio <= r_max:
        return "too slow"
    if k == 0 and not confirmed:
        return "never reached"
    if k < m:
        return "inconclusive"
    return "reached"


def _ranks(scores: Mapping[str, float]) -> dict[str, float]:
    """1 = best; ties share their average rank."""
    order = sorted(scores, key=lambda s: -scores[s])
    out: dict[str, float] = {}
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for s in order[i : j + 1]:
            out[s] = (i + j) / 2 + 1
        i = j + 1
    return out


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    if not xs:
        return math.nan
    pos = q * (len(xs) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    if xs[lo] == xs[hi] or math.isinf(xs[hi]):  # ∞ − ∞ is no number: an infinite end stays infinite
        return xs[hi] if pos > lo else xs[lo]
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass
class Summary:
    """Scores and ranks with 95 % bootstrap intervals, and per-cell verdicts."""

    score: dict[str, float]
    score_ci: dict[str, tuple[float, float]]
    rank: dict[str, float]
    rank_ci: dict[str, tuple[float, float]]
    cells: dict[str, dict[str, Cell]]
    ratios: dict[str, dict[str, float]]
    verdicts: dict[str, dict[str, str]]
    replicates: int
    #: ahead[a][b]: the share of replicates in which a's score is above b's (a tie counts half)
    ahead: dict[str, dict[str, float]] = field(default_factory=dict)

    def holds(self, level: float = 0.95) -> list[tuple[str, str, float]]:
        """The pairs (a, b, share) with a ahead of b in at least `level` of the replicates, a's
        best first: the comparisons a re-run is likely to repeat — a pairwise verdict, which two
        overlapping rank intervals do not rule out (two marginal 95 % intervals can overlap
        where the difference is clear)."""
        pairs = [(a, b, p) for a, row in self.ahead.items() for b, p in row.items() if p >= level]
        return sorted(pairs, key=lambda x: (self.rank[x[0]], self.rank[x[1]], x[0], x[1]))

    def ahead_of(self, level: float = 0.95) -> dict[str, list[str]]:
        """:meth:`holds` grouped: each submission (best first) → those it is ahead of."""
        out: dict[str, list[str]] = {}
        for a, b, _ in self.holds(level):
            out.setdefault(a, []).append(b)
        return out

    def best_and_worst_third(self, among: Iterable[str] | None = None) -> tuple[str, list[str]]:
        """The best-ranked of `among` (default: every submission) and the worst third of them (at
        least one): what "separating the best from the worst third" compares."""
        order = sorted(self.score if among is None else among, key=lambda k: (self.rank[k], k))
        return order[0], order[-max(1, math.ceil(len(order) / 3)) :]

    def separated(self, among: Iterable[str] | None = None) -> bool:
        """Whether the best's 95 % rank interval lies wholly above each of the worst third's
        (its upper end below their lower ends)."""
        best, worst = self.best_and_worst_third(among)
        return all(self.rank_ci[best][1] < self.rank_ci[w][0] for w in worst)

    def best_ahead(self, level: float = 0.95, among: Iterable[str] | None = None) -> bool:
        """The pairwise form of :meth:`separated`: the best ahead of each of the worst third in
        at least `level` of the replicates."""
        best, worst = self.best_and_worst_third(among)
        return all(self.ahead.get(best, {}).get(w, 0.0) >= level for w in worst)

    def verdict(self, level: float = 0.95) -> str:
        """The run's headline verdict in a sentence: is the first ahead of each of the worst third
        (pairwise, in ≥ `level` of the replicates), and do the rank intervals part them too."""
        best, worst = self.best_and_worst_third()
        ahead = self.best_ahead(level)
        return (f"the first, {best}, {'is' if ahead else 'is not'} ahead of each of the worst {len(worst)} "
                f"({', '.join(worst)}) in ≥ {level * 100:g} % of the replicates; the rank intervals "
                f"{'part' if self.separated() else 'do not part'} them")  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (scores.json)."""
        fin = (lambda x: x if math.isfinite(x) else None)  # noqa: E731
        return {s: {"score": self.score[s], "score_ci": list(self.score_ci[s]), "rank": self.rank[s],
                    "rank_ci": list(self.rank_ci[s]),
                    "workloads": {w: {"steps": fin(c.time), "ratio": fin(self.ratios[s][w]),
                                      "verdict": self.verdicts[s][w], "study_times": [fin(t) for t in c.study_times],
                                      "reach": [list(x) for x in c.reach]}
                                  for w, c in self.cells[s].items()},
                    "ahead": dict(self.ahead.get(s, {}))}
                for s in self.score}  # fmt: skip


def summarize(records: Iterable[Mapping[str, Any]], ruleset: str = "external", unit: str = "steps",
              r_max: float = scoring.R_MAX, replicates: int = 1000, seed: int = 0) -> Summary:  # fmt: skip
    """AlgoPerf's scores of `records` with bootstrap intervals (seeded: the same records give
    the same intervals)."""
    cs = cells(records, ruleset, unit)
    subs = sorted(cs)
    wls = sorted({w for per in cs.values() for w in per})
    times = {s: {w: cs[s][w].time for w in cs[s]} for s in subs}
    ratios = scoring.performance_ratios(times, r_max)
    score = {s: scoring.score(ratios[s], r_max) for s in subs}
    rank = _ranks(score)
    rng = random.Random(seed)
    boot_scores: dict[str, list[float]] = {s: [] for s in subs}
    boot_ranks: dict[str, list[float]] = {s: [] for s in subs}
    wins: dict[str, dict[str, float]] = {a: dict.fromkeys((b for b in subs if b != a), 0.0) for a in subs}
    for _ in range(replicates if subs else 0):
        t_b: dict[str, dict[str, float]] = {s: {} for s in subs}
        for s in subs:
            for w in wls:
                c = cs[s].get(w)
                t_b[s][w] = c.draw(rng) if c is not None and c.outcomes else INF
        r_b = scoring.performance_ratios(t_b, r_max)
        sc = {s: scoring.score(r_b[s], r_max) for s in subs}
        for s, rk in _ranks(sc).items():
            boot_scores[s].append(sc[s])
            boot_ranks[s].append(rk)
        for a, row in wins.items():
            for b in row:
                row[b] += 1.0 if sc[a] > sc[b] else 0.5 if sc[a] == sc[b] else 0.0
    ci = {s: (_pct(boot_scores[s], 0.025), _pct(boot_scores[s], 0.975)) for s in subs}
    rci = {s: (_pct(boot_ranks[s], 0.025), _pct(boot_ranks[s], 0.975)) for s in subs}
    verdicts = {s: {w: verdict(c, ratios[s].get(w, INF), r_max) for w, c in cs[s].items()} for s in subs}
    n = replicates if subs else 0
    ahead = {a: {b: (w / n if n else math.nan) for b, w in row.items()} for a, row in wins.items()}
    return Summary(score, ci, rank, rci, cs, ratios, verdicts, replicates, ahead)


def kendall_tau(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Kendall's τ-b between two score tables over their common submissions (scipy's)."""
    from scipy.stats import kendalltau

    common = sorted(set(a) & set(b))
    if len(common) < 2:
        return math.nan
    return float(kendalltau([a[s] for s in common], [b[s] for s in common]).statistic)


def speedup(a: Cell, b: Cell, replicates: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """How many times fewer steps `b` needs than `a` (t_a / t_b): the point estimate from
    AlgoPerf's times and a 95 % bootstrap interval over studies and seeds of both (∞ where
    `b` reached and `a` did not, 0 the other way round, NaN where neither did)."""
    def ratio(ta: float, tb: float) -> float:
        if math.isinf(ta) and math.isinf(tb):
            return math.nan
        return INF if math.isinf(ta) else (0.0 if math.isinf(tb) else ta / tb)

    rng = random.Random(seed)
    boots = [ratio(a.draw(rng), b.draw(rng)) for _ in range(replicates)] if a.outcomes and b.outcomes else []
    boots = [x for x in boots if not math.isnan(x)]
    return ratio(a.time, b.time), _pct(boots, 0.025), _pct(boots, 0.975)


def geo_speedup(a: Mapping[str, Cell], b: Mapping[str, Cell], replicates: int = 1000,
                seed: int = 0) -> tuple[float, float, float]:  # fmt: skip
    """The geometric mean over the workloads both reached of how many times fewer steps `b`
    needs than `a` (workload → Cell each), with a 95 % bootstrap interval (each replicate
    re-draws every cell; NaN where no workload was reached by both)."""

    def geo(pairs: list[tuple[float, float]]) -> float:
        logs = [math.log(x / y) for x, y in pairs if math.isfinite(x) and math.isfinite(y) and x > 0 and y > 0]
        return math.exp(sum(logs) / len(logs)) if logs else math.nan

    common = sorted(set(a) & set(b))
    rng = random.Random(seed)
    boots = [geo([(a[w].draw(rng), b[w].draw(rng)) for w in common]) for _ in range(replicates if common else 0)]
    boots = [x for x in boots if not math.isnan(x)]
    return geo([(a[w].time, b[w].time) for w in common]), _pct(boots, 0.025), _pct(boots, 0.975)
