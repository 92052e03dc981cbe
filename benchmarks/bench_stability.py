"""Do the bench's verdicts hold? Two independent runs of one suite (different seeds: `thalweg
bench run SUITE --seed 1 --name SUITE-seed1`) compared on the real workloads: Kendall's τ
between their scores, whether each optimizer's rank in one run lies in the other's 95 % rank
interval, and whether each run separates its best from its worst third — by the rank intervals
(the best's wholly above each of theirs) and pairwise (the best ahead of each of them in ≥ 95 %
of the bootstrap's replicates: the lower end of the score difference's one-sided 95 % interval
above zero).

    .venv/bin/python benchmarks/bench_stability.py bench/quick bench/quick-seed1 [--json PATH]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any


def compare(a: Any, b: Any) -> dict[str, Any]:
    """The figures of two :class:`thalweg.bench.uncertainty.Summary` of one suite."""
    from thalweg.bench.uncertainty import kendall_tau

    subs = sorted(set(a.score) & set(b.score))
    inside = {s: a.rank_ci[s][0] <= b.rank[s] <= a.rank_ci[s][1] and b.rank_ci[s][0] <= a.rank[s] <= b.rank_ci[s][1]
              for s in subs}  # fmt: skip
    return {"optimizers": len(subs), "kendall_tau": kendall_tau(a.score, b.score),
            "ranks_within_intervals": sum(inside.values()), "outside": [s for s in subs if not inside[s]],
            "separated_a": a.separated(subs), "separated_b": b.separated(subs),
            "ahead_a": a.best_ahead(0.95, subs), "ahead_b": b.best_ahead(0.95, subs),
            "third": max(1, math.ceil(len(subs) / 3))}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("first", type=Path)
    ap.add_argument("second", type=Path)
    ap.add_argument("--json", default=None, help="write the table and figures here (thalweg.record)")
    args = ap.parse_args()
    from thalweg.bench import scoring, uncertainty
    from thalweg.bench.results import read_results
    from thalweg.record import Record

    runs = [uncertainty.summarize(scoring.real(read_results(d / "results.jsonl"))) for d in (args.first, args.second)]
    a, b = runs
    c = compare(a, b)
    rec = Record()
    rows = []
    for s in sorted(a.score, key=lambda k: (a.rank[k], k)):
        cells = []
        for x in runs:
            if s in x.score:
                (lo, hi), (rlo, rhi) = x.score_ci[s], x.rank_ci[s]
                cells += [f"{x.score[s]:.3f} [{lo:.2f}, {hi:.2f}]", f"{x.rank[s]:g} [{rlo:g}, {rhi:g}]"]
            else:
                cells += ["—", "—"]
        rows.append([s, *cells, "yes" if s not in c["outside"] else "no"])
        print(f"{s:<20} " + "   ".join(cells) + f"   {'within' if s not in c['outside'] else 'OUTSIDE'}")
    rec.table("runs", ["optimizer", "score, run 1", "rank, run 1", "score, run 2", "rank, run 2",
                       "each rank in the other's interval"], rows, "lrrrrc")  # fmt: skip
    for k in ("optimizers", "kendall_tau", "ranks_within_intervals", "separated_a", "separated_b", "ahead_a",
              "ahead_b", "third"):
        rec.figure(k, c[k])
    print(f"Kendall τ = {c['kendall_tau']:.3f}; {c['ranks_within_intervals']}/{c['optimizers']} ranks within the "
          f"other run's interval; best separated from the worst {c['third']}: run 1 {c['separated_a']}, "
          f"run 2 {c['separated_b']}; pairwise (≥ 95 % of replicates): run 1 {c['ahead_a']}, run 2 {c['ahead_b']}")  # fmt: skip
    if args.json:
        rec.write(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
