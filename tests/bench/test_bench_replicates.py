"""benchmarks/bench_replicates.py, the measure of how far a suite's ranking moves between
independent runs: a many-study run cut into runs of a few studies, and the figures taken
across them (τ between runs, how often one run's interval holds another's rank); and
benchmarks/bench_stability.py, which compares two runs."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import bench_replicates as R

from thalweg.bench import uncertainty


def _rec(sub: str, k: int, steps: int | None, phase: str = "tune", wl: str = "w") -> dict:
    return {"ruleset": "external", "phase": phase, "submission": sub, "workload": wl, "study_index": k,
            "reached": steps is not None, "time_to_target": {"steps": steps, "seconds": None}}  # fmt: skip


def _bench(times: dict[str, list[list[int | None]]]) -> list[dict]:
    """submission → per study its tuning trials' steps (None: missed), plus a confirmation of
    the first trial and a sensitivity record that belongs to no study."""
    recs = []
    for sub, studies in times.items():
        for k, trials in enumerate(studies):
            recs += [_rec(sub, k, t) for t in trials] + [_rec(sub, k, trials[0], "confirm")]
        recs.append({**_rec(sub, 0, 1, "sensitivity"), "study_index": None})
    return recs


def test_split_gives_each_run_its_own_studies_renumbered():
    a = [[100 + k, None] for k in range(7)]  # 7 studies: two runs of 3, the seventh left over
    b = [[200 + k, 300] for k in range(7)]
    runs = R.split(_bench({"A": a, "B": b}), studies=3)
    assert len(runs) == 2
    for i, run in enumerate(runs):
        assert {r["study_index"] for r in run} == {0, 1, 2}
        assert all(r["phase"] in ("tune", "confirm") for r in run)  # no sensitivity record
        cell = uncertainty.cells(run)["A"]["w"]
        assert cell.study_times == [100 + 3 * i + j for j in range(3)]  # studies 3i … 3i+2
        assert cell.reach == [(1, 2, 1, 1)] * 3


def test_drawn_runs_take_distinct_studies_of_each_cell():
    a = [[100 + k] for k in range(6)]
    runs = R.drawn(_bench({"A": a, "B": [[200 + k] for k in range(6)]}), studies=4, n=20, seed=3)
    assert len(runs) == 20
    seen = set()
    for run in runs:
        for sub in ("A", "B"):
            times = uncertainty.cells(run)[sub]["w"].study_times
            assert len(times) == len(set(times)) == 4  # four different studies, renumbered 0…3
            assert set(times) <= {(100 if sub == "A" else 200) + k for k in range(6)}
            seen.add(tuple(sorted(times)))
    assert len(seen) > 2  # drawn, not the same four each time
    with pytest.raises(ValueError, match="A on w has 6 studies, fewer than 7"):
        R.drawn(_bench({"A": a}), studies=7, n=1)


def test_merge_pools_the_trials_of_consecutive_studies_and_drops_their_confirmations():
    a = [[None, None], [150, None], [None, 120], [None, None], [90, 95], [None, None]]
    runs = R.split(_bench({"A": a}), studies=3, merge=2)
    assert len(runs) == 1
    cell = uncertainty.cells(runs[0])["A"]["w"]
    assert cell.study_times == [150, 120, 90]  # the fastest of each pair's four trials
    assert all(r["phase"] == "tune" for r in runs[0]) and len(runs[0]) == 12


def test_compare_runs_counts_what_holds_across_runs():
    # run 1: A fastest everywhere; run 2: B fastest everywhere — the ranking reverses
    first = {"A": [[100]] * 3, "B": [[300]] * 3, "C": [[None]] * 3}
    second = {"A": [[300]] * 3, "B": [[100]] * 3, "C": [[None]] * 3}
    recs = _bench({s: first[s] + second[s] for s in first})
    summaries = [uncertainty.summarize(r, replicates=50) for r in R.split(recs, 3)]
    c = R.compare_runs(summaries)
    assert c["runs"] == 2 and c["pairs"] == 1 and c["optimizers"] == 3
    assert c["ranks"] == {"A": [1.0, 2.0], "B": [2.0, 1.0], "C": [3.0, 3.0]}
    assert math.isclose(c["tau_mean"], uncertainty.kendall_tau(summaries[0].score, summaries[1].score))
    assert c["tau_mean"] < 1
    # identical studies give zero-width intervals: only C's rank is held by the other run's interval
    assert c["held"] == 2 and c["held_of"] == 6
    assert c["separated"] == 2  # the best of each run is above C, the worst third, in both


def test_stability_compares_two_runs_by_intervals_and_pairwise():
    """benchmarks/bench_stability.py (two independent runs of a suite): τ, each rank in the
    other run's interval, and separation both ways — by rank intervals and pairwise (A, first,
    ahead of C, the worst third, in every replicate)."""
    import bench_stability as S

    a = {"A": [[100], [110], [120]], "B": [[115], [105], [200]], "C": [[None]] * 3}
    b = {"A": [[100], [105], [130]], "B": [[120], [110], [190]], "C": [[None]] * 3}
    x, y = (uncertainty.summarize(R.split(_bench(t), 3)[0], replicates=200) for t in (a, b))
    c = S.compare(x, y)
    assert c["optimizers"] == 3 and c["third"] == 1 and c["kendall_tau"] == 1.0
    assert c["ranks_within_intervals"] == 3 and c["outside"] == []
    assert c["ahead_a"] and c["ahead_b"]  # A ahead of C in ≥ 95 % of each run's replicates
    assert x.verdict().startswith("the first, A, is ahead of each of the worst 1 (C)")
    assert c["separated_a"] == (x.rank_ci["A"][1] < x.rank_ci["C"][0])
    # C reaches nowhere, but so does A in the other run: nobody is ahead of anybody there
    d = {"A": [[None]] * 3, "B": [[None]] * 3, "C": [[None]] * 3}
    z = uncertainty.summarize(R.split(_bench(d), 3)[0], replicates=50)
    assert not S.compare(x, z)["ahead_b"]
    assert " is not ahead of each of the worst 1 " in z.verdict() and z.verdict().endswith("do not part them")


def test_bench_run_prints_the_pairs_that_hold(monkeypatch) -> None:
    """`thalweg bench run` ends with the pairwise verdict: who is ahead of whom in ≥ 95 % of
    the replicates (A always fastest, C never reaching; A and B too close to call)."""
    from types import SimpleNamespace

    from typer.testing import CliRunner

    import thalweg.bench.api as api
    from thalweg.cli import app

    recs = _bench({"A": [[100]] * 3, "B": [[100, 400], [110, None], [105]], "C": [[None]] * 3})
    recs = [{**r, "group": "real"} for r in recs]
    res = SimpleNamespace(dir=Path("b"), records=recs, recovered=0, seconds=1.0, report=Path("b/report.html"))
    monkeypatch.setattr(api, "run_bench", lambda source, **kw: res)
    out = CliRunner().invoke(app, ["bench", "run", "quick"])
    assert out.exit_code == 0, out.output
    assert "ahead in ≥ 95 % of the bootstrap's replicates" in out.output
    assert "A > C" in out.output and "B > C" in out.output and "A > B" not in out.output
    # the headline verdict: A first, C the worst third, ahead in every replicate
    assert "verdict: the first, A, is ahead of each of the worst 1 (C) in ≥ 95 % of the replicates" in out.output
