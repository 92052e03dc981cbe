"""AlgoPerf scoring on hand-computed examples: ratios, ∞ runs, ties, profiles, the score,
and the median-over-studies rule."""

from __future__ import annotations

import math

import pytest

from thalweg.bench import scoring

INF = math.inf

# three submissions × four workloads; hand-computed below
TIMES = {
    "A": {"w1": 10.0, "w2": 20.0, "w3": INF, "w4": 5.0},
    "B": {"w1": 10.0, "w2": 40.0, "w3": 30.0, "w4": 25.0},  # w1 ties A; w4 is 5× the best
    "C": {"w1": 35.0, "w2": INF, "w3": 60.0, "w4": INF},
}


def test_ratios_clip_above_r_max_and_keep_ties():
    r = scoring.performance_ratios(TIMES, r_max=4.0)
    assert r["A"] == {"w1": 1.0, "w2": 1.0, "w3": INF, "w4": 1.0}
    assert r["B"] == {"w1": 1.0, "w2": 2.0, "w3": 1.0, "w4": INF}  # 25 / 5 = 5 > 4 → ∞
    assert r["C"] == {"w1": 3.5, "w2": INF, "w3": 2.0, "w4": INF}


def test_profile_and_score_by_hand():
    r = scoring.performance_ratios(TIMES, r_max=4.0)
    taus = [1.0, 1.99, 2.0, 3.5, 4.0]
    assert scoring.performance_profile(r["A"], taus) == [0.75, 0.75, 0.75, 0.75, 0.75]
    assert scoring.performance_profile(r["B"], taus) == [0.5, 0.5, 0.75, 0.75, 0.75]
    assert scoring.performance_profile(r["C"], taus) == [0.0, 0.0, 0.25, 0.5, 0.5]
    # each workload adds (r_max − r)/(r_max − 1)/n_workloads: A (3+3+0+3)/12, B (3+2+3+0)/12,
    # C (0.5+0+2+0)/12
    assert scoring.score(r["A"]) == pytest.approx(9 / 12)
    assert scoring.score(r["B"]) == pytest.approx(8 / 12)
    assert scoring.score(r["C"]) == pytest.approx(2.5 / 12)
    # the closed form is the integral of the step function ρ(τ) over [1, 4] / 3
    n = 30000
    taus = [1 + 3 * (i + 0.5) / n for i in range(n)]
    for s in "ABC":
        integral = sum(scoring.performance_profile(r[s], taus)) * 3 / n / 3
        assert integral == pytest.approx(scoring.score(r[s]), abs=1e-4)


def test_a_workload_nobody_reached_counts_against_everyone():
    times = {s: {**t, "w5": INF} for s, t in TIMES.items()}
    r = scoring.performance_ratios(times)
    assert all(r[s]["w5"] == INF for s in r)
    assert scoring.score(r["A"]) == pytest.approx(9 / 15)  # same sum, five workloads
    both_zero = scoring.performance_ratios({"A": {"w": 0.0}, "B": {"w": 0.0}, "C": {"w": 3.0}})
    assert both_zero == {"A": {"w": 1.0}, "B": {"w": 1.0}, "C": {"w": INF}}


def _rec(study: int, steps: int | None, sub: str = "A", wl: str = "w1") -> dict:
    return {"ruleset": "external", "phase": "tune", "submission": sub, "workload": wl,
            "study_index": study, "reached": steps is not None,
            "time_to_target": {"steps": steps, "seconds": None if steps is None else steps / 100}}


def test_median_over_studies_of_each_studys_fastest_trial():
    recs = [_rec(0, 50), _rec(0, 30), _rec(0, None),  # study 0: fastest 30
            _rec(1, None), _rec(1, None),             # study 1: never → ∞
            _rec(2, 70), _rec(2, 90)]                 # study 2: fastest 70
    assert scoring.study_time(recs[:3], "steps") == 30
    assert scoring.workload_times(recs, "steps") == {"A": {"w1": 70}}  # median(30, ∞, 70)
    assert scoring.workload_times(recs, "seconds") == {"A": {"w1": 0.7}}
    # two studies, one never reaching: the median of (30, ∞) is ∞
    assert scoring.workload_times(recs[:5], "steps") == {"A": {"w1": INF}}
    # other phases (re-runs, defaults) and other rulesets do not count
    extra = [{**_rec(0, 1), "phase": "rerun"}, {**_rec(0, 1), "ruleset": "self"}]
    assert scoring.workload_times(recs + extra, "steps") == {"A": {"w1": 70}}


def test_objective_orders_reached_by_steps_then_misses_by_shortfall():
    base = {"status": "ok", "mode": "min", "target": 1e-3, "step_budget": 100}
    fast = {**base, "reached": True, "time_to_target": {"steps": 10}, "best": {"metric": 1e-4}}
    slow = {**base, "reached": True, "time_to_target": {"steps": 90}, "best": {"metric": 1e-5}}
    near = {**base, "reached": False, "best": {"metric": 2e-3}}
    far = {**base, "reached": False, "best": {"metric": 1.0}}
    values = [scoring.objective(r) for r in (fast, slow, near, far)]
    assert values == sorted(values) and values[1] <= 1.0 < values[2]
    assert scoring.objective({**base, "status": "crashed"}) is None
    acc = {"status": "ok", "mode": "max", "target": 0.9, "reached": False, "best": {"metric": 0.8}}
    assert scoring.objective(acc) == pytest.approx(1.1)
    assert scoring.best_record([near, slow, fast, far]) is fast
