"""How much one run of a bench tells, measured: one run with many studies (`thalweg bench run
quick --set studies=24 --seed 100 --name quick-x24`) cut into independent runs of 3 studies
each (AlgoPerf's protocol, repeated) or of `--studies 8` (the quick suite's). Per run:
AlgoPerf's ranks and the bootstrap's 95 % rank intervals (`thalweg.bench.uncertainty`);
across runs: Kendall's τ between every pair, each optimizer's ranks, how often one run's
interval holds another run's rank (the bootstrap's calibration: about 95 % when its intervals
are honest), and in how many runs the intervals separate the best from the worst third. `--merge 2` joins each two studies into one
of twice the trials first (what 3 studies × 10 trials would give). `--draws N` instead draws
N runs of `--studies` at random from all the studies and counts how often each separates.

    .venv/bin/python benchmarks/bench_replicates.py bench/quick-x24 [--studies 3|8]
        [--merge K | --draws N] [--json PATH]
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

Record = Mapping[str, Any]


def _studies(records: Sequence[Record]) -> dict[tuple[str, str, str], dict[int, list[Record]]]:
    """(submission, workload, ruleset) → study index → its tuning and confirmation records."""
    per: dict[tuple[str, str, str], dict[int, list[Record]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r.get("phase") in ("tune", "self", "confirm") and r.get("study_index") is not None:
            per[(r["submission"], r["workload"], r.get("ruleset", "external"))][int(r["study_index"])].append(r)
    return per


def drawn(records: Sequence[Record], studies: int, n: int, seed: int = 0) -> list[list[dict[str, Any]]]:
    """`n` runs of `studies` studies each, every cell's drawn at random (without replacement
    within a run) from all its studies: more runs than :func:`split` gives, not independent of
    one another — for the share of runs whose verdict separates, not for τ between runs.
    ValueError names a cell with fewer than `studies` studies."""
    import random

    rng = random.Random(seed)
    per = _studies(records)
    for (sub, wl, _), by_index in per.items():
        if len(by_index) < studies:
            raise ValueError(f"{sub} on {wl} has {len(by_index)} studies, fewer than {studies}")
    runs = []
    for _ in range(n):
        run: list[dict[str, Any]] = []
        for by_index in per.values():
            for j, i in enumerate(rng.sample(sorted(by_index), studies)):
                run += [{**r, "study_index": j} for r in by_index[i]]
        runs.append(run)
    return runs


def split(records: Sequence[Record], studies: int = 3, merge: int = 1) -> list[list[dict[str, Any]]]:
    """Independent runs of `studies` studies each: per (submission, workload), the k-th run
    takes the k-th `studies` of its studies in index order, renumbered from 0 (tuning and
    confirmation records; the re-runs and sweeps belong to no study). With `merge` > 1 each
    `merge` consecutive studies first become one (their tuning trials pooled; confirmations,
    which belong to one study's choice, dropped)."""
    per = _studies(records)
    if not per:
        return []
    n = min(len(v) for v in per.values()) // merge // studies
    runs: list[list[dict[str, Any]]] = [[] for _ in range(n)]
    for by_index in per.values():
        order = sorted(by_index)
        for k in range(n * studies):
            group = order[k * merge : (k + 1) * merge]
            recs = [r for i in group for r in by_index[i] if merge == 1 or r.get("phase") != "confirm"]
            runs[k // studies] += [{**r, "study_index": k % studies} for r in recs]
    return runs


def compare_runs(summaries: Sequence[Any]) -> dict[str, Any]:
    """The figures of :func:`split`'s runs, each a :class:`thalweg.bench.uncertainty.Summary`."""
    from thalweg.bench.uncertainty import kendall_tau

    subs = sorted(set.intersection(*(set(s.score) for s in summaries)))
    taus = [kendall_tau(a.score, b.score) for a, b in itertools.combinations(summaries, 2)]
    held = [a.rank_ci[s][0] <= b.rank[s] <= a.rank_ci[s][1]
            for a, b in itertools.permutations(summaries, 2) for s in subs]  # fmt: skip
    # pairwise: where one run puts a ahead of b in ≥ 95 % of its replicates, do the others agree?
    holds = [x.holds(0.95) for x in summaries]
    said = [(a, b, o) for i, pairs in enumerate(holds) for a, b, _ in pairs
            for j, o in enumerate(summaries) if j != i and a in subs and b in subs]  # fmt: skip
    agree = sum(1.0 if o.score[a] > o.score[b] else 0.5 if o.score[a] == o.score[b] else 0.0 for a, b, o in said)
    return {"runs": len(summaries), "optimizers": len(subs), "pairs": len(taus),
            "ahead_pairs": sum(map(len, holds)) / len(summaries),
            "ahead_checks": len(said), "ahead_agree": agree / len(said) if said else math.nan,
            "separated_pairwise": sum(x.best_ahead(0.95, subs) for x in summaries),
            "tau_mean": statistics.mean(taus), "tau_min": min(taus), "tau_max": max(taus),
            "held": sum(held), "held_of": len(held), "coverage": sum(held) / len(held),
            "separated": sum(s.separated(subs) for s in summaries),
            "mean_width": statistics.mean(s.rank_ci[x][1] - s.rank_ci[x][0] for s in summaries for x in subs),
            "ranks": {x: [s.rank[x] for s in summaries] for x in subs}}  # fmt: skip


def _draws(records: Sequence[Record], studies: int, n: int, json_path: str | None) -> int:
    """`--draws`: the share of drawn runs whose best is separated from their worst third."""
    from thalweg.bench import uncertainty
    from thalweg.record import Record as Rec

    try:
        runs = drawn(records, studies, n)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summaries = [uncertainty.summarize(r) for r in runs]
    best: dict[str, int] = defaultdict(int)
    for x in summaries:
        best[x.best_and_worst_third()[0]] += 1
    figs = {"draws": n, "studies": studies, "separated": sum(x.separated() for x in summaries) / n,
            "separated_pairwise": sum(x.best_ahead(0.95) for x in summaries) / n,
            "best": ", ".join(f"{k} {v}" for k, v in sorted(best.items(), key=lambda kv: -kv[1]))}  # fmt: skip
    print(f"{n} runs of {studies} studies drawn from all: best separated from the worst third by the rank "
          f"intervals in {figs['separated']:.0%}, pairwise (≥ 95 % of replicates) in {figs['separated_pairwise']:.0%}; "
          f"the best: {figs['best']}")  # fmt: skip
    if json_path:
        rec = Rec()
        for k, v in figs.items():
            rec.figure(k, v)
        rec.write(json_path)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bench", type=Path, help="a bench directory run with many studies")
    ap.add_argument("--studies", type=int, default=3, help="studies per run (AlgoPerf's: 3; quick's: 8)")
    ap.add_argument("--merge", type=int, default=1, help="join each K studies into one of K times the trials")
    ap.add_argument("--draws", type=int, default=0,
                    help="instead: N runs of --studies drawn at random from all studies; how often each separates")
    ap.add_argument("--json", default=None, help="write the table and figures here (thalweg.record)")
    args = ap.parse_args()
    from thalweg.bench import scoring, uncertainty
    from thalweg.bench.results import read_results
    from thalweg.record import Record as Rec

    records = scoring.real(read_results(args.bench / "results.jsonl"))
    if args.draws:
        return _draws(records, args.studies, args.draws, args.json)
    runs = split(records, args.studies, args.merge)
    if len(runs) < 2:
        print(f"error: {args.bench}: fewer than two runs of {args.studies} studies", file=sys.stderr)
        return 2
    summaries = [uncertainty.summarize(r) for r in runs]
    c = compare_runs(summaries)
    rec = Rec()
    rows = []
    for s in sorted(c["ranks"], key=lambda k: (statistics.mean(c["ranks"][k]), k)):
        ranks = c["ranks"][s]
        ivs = " ".join(f"[{x.rank_ci[s][0]:g}, {x.rank_ci[s][1]:g}]" for x in summaries)
        rows.append([s, " ".join(f"{r:g}" for r in ranks), f"{statistics.mean(ranks):.2f}",
                     f"{min(ranks):g}–{max(ranks):g}", ivs])  # fmt: skip
        print(f"{s:<20} ranks {rows[-1][1]:<28} mean {rows[-1][2]}   intervals {ivs}")
    rec.table("runs", ["optimizer", "rank in each run", "mean rank", "range", "95 % rank interval in each run"],
              rows, "lllrl")  # fmt: skip
    for k, v in c.items():
        if k != "ranks":
            rec.figure(k, v)
    print(f"{c['runs']} runs of {args.studies} studies{f' (× {args.merge} trials)' if args.merge > 1 else ''}: "
          f"Kendall τ over {c['pairs']} pairs mean {c['tau_mean']:.2f} [min {c['tau_min']:.2f}, max "
          f"{c['tau_max']:.2f}]; a run's interval holds another run's rank {c['held']}/{c['held_of']} "
          f"({c['coverage']:.1%}); best separated from the worst third in {c['separated']}/{c['runs']} runs; "
          f"pairwise (≥ 95 % of replicates): {c['ahead_pairs']:.1f} pairs per run, the other runs agree "
          f"{c['ahead_agree']:.1%} of {c['ahead_checks']}, the best ahead of the worst third in "
          f"{c['separated_pairwise']}/{c['runs']} runs")  # fmt: skip
    if args.json:
        rec.write(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
