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


# ---------------------------------------------------------------- uncertainty
def _study(sub: str, wl: str, k: int, tune: list[int | None], confirm: list[int | None]) -> list[dict]:
    recs = [{**_rec(k, s, sub, wl)} for s in tune]
    recs += [{**_rec(k, s, sub, wl), "phase": "confirm"} for s in confirm]
    return recs


def test_verdicts_and_reach_counts_per_study():
    from thalweg.bench import uncertainty

    recs = (_study("A", "w", 0, [100, None], [120, 110]) + _study("A", "w", 1, [90, 200], [95, None])
            + _study("A", "w", 2, [None, None], [None, None])                       # A splits 2/3
            + _study("B", "w", 0, [50], [60]) + _study("B", "w", 1, [40], [45]) + _study("B", "w", 2, [70], [65])
            + _study("C", "w", 0, [None], [None]) + _study("C", "w", 1, [None], [None]) + _study("C", "w", 2, [None], [None])
            + _study("D", "w", 0, [300], [310]) + _study("D", "w", 1, [260], [250]) + _study("D", "w", 2, [280], [None]))  # fmt: skip
    s = uncertainty.summarize(recs, replicates=300)
    cell = s.cells["A"]["w"]
    assert cell.study_times == [100, 90, INF] and cell.time == 100  # AlgoPerf: median over studies
    assert cell.reach == [(1, 2, 2, 2), (2, 2, 1, 2), (0, 2, 0, 2)]
    assert s.verdicts["A"]["w"] == "inconclusive"  # studies split
    assert s.verdicts["B"]["w"] == "reached" and s.ratios["B"]["w"] == 1.0
    assert s.verdicts["C"]["w"] == "never reached"
    assert s.ratios["D"]["w"] == INF and s.verdicts["D"]["w"] == "too slow"  # 280 / 50 > r_max = 4
    assert s.score["B"] == 1.0 and s.score["C"] == 0.0 and s.rank["B"] == 1.0
    for sub in s.score:  # the point estimate lies in its interval; intervals within [0, 1]
        lo, hi = s.score_ci[sub]
        assert 0.0 <= lo <= s.score[sub] <= hi <= 1.0
        rlo, rhi = s.rank_ci[sub]
        assert 1.0 <= rlo <= rhi <= 4.0
    assert s.score_ci["C"] == (0.0, 0.0) and s.rank_ci["B"][0] == 1.0
    again = uncertainty.summarize(recs, replicates=300)
    assert again.score_ci == s.score_ci and again.rank_ci == s.rank_ci  # seeded: reproducible


def test_a_missed_confirmation_costs_a_study_its_chosen_trial_not_the_study():
    """The bootstrap re-makes a study as AlgoPerf makes it — its trials drawn, the chosen
    configuration's time drawn among its seeds, the fastest kept: a confirmation that missed
    hands the study to its next-fastest trial, it does not make the whole study "never
    reached". A, faster than B in every trial of every study, keeps rank 1 in every replicate
    (drawing one seed of the chosen configuration per study put A second in a quarter)."""
    from thalweg.bench import uncertainty

    recs = []
    for k in range(3):
        recs += _study("A", "w", k, [100, 120, 130, 150, 160], [None, 110])
        recs += _study("B", "w", k, [200, 220, 230, 250, 260], [210, 205])
    s = uncertainty.summarize(recs, replicates=400)
    assert s.rank_ci["A"] == (1.0, 1.0) and s.rank_ci["B"] == (2.0, 2.0)
    cell = s.cells["A"]["w"]
    assert cell.trials[0] == [100, 120, 130, 150, 160] and cell.chosen == [0, 0, 0]
    assert cell.outcomes[0] == [100, INF, 110]
    import random

    draws = [cell.draw(random.Random(i)) for i in range(300)]  # never slower than its slowest trial
    assert all(100 <= d <= 160 for d in draws) and any(d > 100 for d in draws)


def test_identical_outcomes_give_zero_width_intervals_and_kendall_tau():
    from scipy.stats import kendalltau

    from thalweg.bench import uncertainty

    recs = []
    for k in range(3):
        recs += _study("A", "w", k, [100], [100, 100]) + _study("B", "w", k, [200], [200, 200])
    s = uncertainty.summarize(recs, replicates=100)
    assert s.score == {"A": 1.0, "B": 2 / 3} and s.score_ci["B"] == (2 / 3, 2 / 3)
    assert s.rank_ci == {"A": (1.0, 1.0), "B": (2.0, 2.0)}
    a, b = {"x": 0.9, "y": 0.5, "z": 0.1, "u": 0.3}, {"x": 0.8, "y": 0.2, "z": 0.3, "u": 0.1}
    assert uncertainty.kendall_tau(a, b) == pytest.approx(kendalltau([0.3, 0.9, 0.5, 0.1], [0.1, 0.8, 0.2, 0.3]).statistic)


def test_cpu_unit_is_steps_times_cpu_per_step_and_toy_is_apart():
    rec = {**_rec(0, 100), "cpu": {"per_step": 0.002}, "group": "toy"}
    assert scoring.workload_times([rec], "cpu") == {"A": {"w1": pytest.approx(0.2)}}
    assert scoring.real([rec, {**rec, "group": "real"}, {**rec, "group": None}]) != []
    assert len(scoring.toy([rec, {**rec, "group": "real"}])) == 1


def test_calibration_target_is_the_best_baselines_median_end_metric():
    """Per baseline: the median over its re-run seeds of the end-of-budget metric (a diverged
    seed counts as the worst value); the target: the best baseline's, never below a toy
    problem's tolerance."""
    from types import SimpleNamespace

    from thalweg.bench.api import calibration_record
    from thalweg.bench.tasks.problems import Workload

    def runs(wl, sub, ends, mode):
        return [{"workload": wl, "submission": sub, "phase": "rerun", "end_metric": e, "params": {"lr": 1},
                 "config": {}, "mode": mode} for e in ends] + [{"workload": wl, "submission": sub, "phase": "tune"}]

    acc = Workload("acc", lambda s: None, metric="val_accuracy", mode="max", step_budget=10, max_seconds=1)
    toy = Workload("toy", lambda s: None, metric="excess_loss", mode="min", step_budget=10, max_seconds=1,
                   tolerance=1e-6)
    plans = [SimpleNamespace(workload=w, submission=SimpleNamespace(name=s)) for w in (acc, toy) for s in ("a", "b")]
    recs = (runs("acc", "a", [0.90, 0.92, 0.91], "max") + runs("acc", "b", [0.95, None, 0.94, 0.93], "max")
            + runs("toy", "a", [1e-9, 2e-9, 3e-9], "min") + runs("toy", "b", [1.0, 2.0, 3.0], "min"))
    out = calibration_record(recs, plans, SimpleNamespace())
    assert out["acc"]["baselines"]["a"]["median"] == pytest.approx(0.91)
    assert out["acc"]["baselines"]["b"]["median"] == pytest.approx(0.935)  # (0.93 + 0.94) / 2, None lowest
    assert out["acc"]["value"] == pytest.approx(0.935) and out["acc"]["baseline"] == "b"
    assert out["toy"]["value"] == 1e-6 and out["toy"]["baseline"] == "a"  # floored at the tolerance
    assert out["acc"]["baselines"]["b"]["seeds"][1] is None and out["acc"]["baselines"]["b"]["finite"] == 3


def test_speedup_interval_brackets_the_point():
    from thalweg.bench import uncertainty

    a = uncertainty.Cell([200, 220, 180], [[200, 210], [220, 230], [180, 190]])
    b = uncertainty.Cell([100, 120, 90], [[100, 105], [120, 110], [90, 95]])
    p, lo, hi = uncertainty.speedup(a, b, replicates=300)
    assert p == pytest.approx(2.0) and lo <= p <= hi and lo > 1.4 and hi < 2.6
    never = uncertainty.Cell([INF, INF, INF], [[INF], [INF], [INF]])
    assert uncertainty.speedup(never, b)[0] == INF and uncertainty.speedup(b, never)[0] == 0.0


def test_an_interval_that_reaches_infinity_says_so_and_geo_speedup():
    """A speedup whose slower side sometimes never reaches has ∞ as its upper end (not NaN:
    ∞ − ∞ in the interpolation); the geometric mean over workloads of the per-workload
    speedups, with its interval."""
    from thalweg.bench import uncertainty

    a = uncertainty.Cell([200, INF, 180], [[200, INF], [INF, INF], [180, 190]], [[200, INF], [INF, INF], [180, 300]],
                         [0, 0, 0])
    b = uncertainty.Cell([100, 120, 90], [[100, 105], [120, 110], [90, 95]])
    p, lo, hi = uncertainty.speedup(a, b, replicates=300)
    assert p == pytest.approx(2.0) and hi == INF and 1.0 < lo <= p
    fast = {"w1": uncertainty.Cell([100, 100, 100], [[100], [100], [100]]),
            "w2": uncertainty.Cell([30, 30, 30], [[30], [30], [30]])}
    slow = {"w1": uncertainty.Cell([400, 400, 400], [[400], [400], [400]]),
            "w2": uncertainty.Cell([30, 30, 30], [[30], [30], [30]]), "w3": fast["w1"]}
    g, glo, ghi = uncertainty.geo_speedup(slow, fast, replicates=50)
    assert g == pytest.approx(2.0) and glo == pytest.approx(2.0) and ghi == pytest.approx(2.0)  # √(4 · 1)
    assert math.isnan(uncertainty.geo_speedup({}, fast)[0])


def test_ahead_is_the_share_of_replicates_in_which_one_scores_above_another():
    """The pairwise verdict: a clear winner is ahead in every replicate, identical outcomes
    tie at one half, and a split winner lies between — from the same replicates as the
    intervals (which it leaves as they were)."""
    from thalweg.bench import uncertainty

    recs = []
    for k in range(3):
        recs += _study("A", "w", k, [100, 120, 130], [110]) + _study("B", "w", k, [200], [200])
        recs += _study("C", "w", k, [200], [200])  # B's twin: every replicate draws 200 for both
        recs += _study("D", "w", k, [90] if k < 2 else [None], [95] if k < 2 else [None])  # fastest, once missed
    s = uncertainty.summarize(recs, replicates=400)
    assert s.ahead["A"]["B"] == 1.0 and s.ahead["B"]["A"] == 0.0
    assert s.ahead["B"]["C"] == s.ahead["C"]["B"] == 0.5
    assert 0.0 < s.ahead["D"]["A"] < 1.0 and s.ahead["D"]["A"] + s.ahead["A"]["D"] == pytest.approx(1.0)
    held = s.holds(0.95)
    assert ("A", "B", 1.0) in held and ("A", "C", 1.0) in held
    assert not any(a == "B" and b == "C" for a, b, _ in held)
    assert all(p >= 0.95 for *_, p in held)
    assert s.ahead_of(0.95)["A"] == [b for a, b, _ in held if a == "A"]
    best, worst = s.best_and_worst_third()
    assert best == min(s.rank, key=s.rank.get) and len(worst) == 2  # four submissions: a third is two
    assert s.best_ahead(0.95) == all(s.ahead[best][w] >= 0.95 for w in worst)
    assert s.separated() == all(s.rank_ci[best][1] < s.rank_ci[w][0] for w in worst)
    assert s.best_and_worst_third(["B", "C"]) == ("B", ["C"]) or s.best_and_worst_third(["B", "C"]) == ("C", ["B"])
    assert s.to_dict()["A"]["ahead"]["B"] == 1.0
    # the pairwise tally draws no random numbers: the intervals are those of a summary without it
    assert uncertainty.summarize(recs, replicates=400).rank_ci == s.rank_ci


def test_a_replicate_remakes_each_study_from_the_cells_trials_wherever_they_fell():
    """Quasi-random search draws every study's trials from one space, so a replicate re-makes a
    study as N draws from all the cell's trials: how the same trials fell among the studies
    does not change the replicates (resampling each study's own trials — a bootstrap of a
    minimum — made a cell with its hits in one study miss far more often than one with them
    spread)."""
    import random

    from thalweg.bench import uncertainty

    def cell(studies: list[list[int | None]]) -> uncertainty.Cell:
        recs = []
        for k, tr in enumerate(studies):
            recs += _study("A", "w", k, tr, [])
        return uncertainty.cells(recs)["A"]["w"]

    spread = cell([[100, None, None], [None, None, None], [120, None, None]])
    bunched = cell([[100, 120, None], [None, None, None], [None, None, None]])
    assert spread.time == 120 and bunched.time == INF  # AlgoPerf's point estimates differ ...
    rng = random.Random(0)
    finite = [sum(math.isfinite(c.draw(rng)) for _ in range(4000)) / 4000 for c in (spread, bunched)]
    assert abs(finite[0] - finite[1]) < 0.03  # ... the re-made studies do not
    assert 0.3 < finite[0] < 0.6  # a re-made study reaches with 1 − (7/9)³ ≈ 0.53; two of three: ≈ 0.54
