"""Is any zero of the bench a harness artifact? Each optimizer of a suite on each real workload
with a hand-picked learning-rate grid (half-decade steps around the values its users reach
for; every other hyperparameter, the schedule and the bench's fixed values as the bench sets
them by default), one seed, the workload's budget and target — then, given the bench's own
results (each `--bench` run of it), every (optimizer, workload) the sweep reaches must be
reached by the bench's tuning in at least one study of every run.

    .venv/bin/python benchmarks/bench_sweep.py [--suite standard] [--bench bench/standard ...]
                                               [--workers N] [-o bench] [--json PATH]

The sweep is itself a bench (DIR/sweep-SUITE: study.db, results.jsonl), so it resumes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

#: the hand-picked grids: half-decade steps around each rule's usual learning rates
ADAM_LIKE = (1e-3, 3e-3, 1e-2, 3e-2)
GRIDS: dict[str, tuple[float, ...]] = {
    "sgd": (0.01, 0.03, 0.1, 0.3), "adagrad": (0.01, 0.03, 0.1, 0.3), "rmsprop": (1e-4, 3e-4, 1e-3, 3e-3),
    "adadelta": (0.3, 1.0, 3.0, 10.0), "lion": (1e-4, 3e-4, 1e-3, 3e-3), "muon": (3e-3, 1e-2, 3e-2, 0.1),
    "schedulefree_sgd": (0.3, 1.0, 3.0, 10.0), "prodigy": (0.3, 1.0, 3.0), "lars": (0.3, 1.0, 3.0, 10.0),
}  # fmt: skip


def grid(optimizer: str) -> tuple[float, ...]:
    return GRIDS.get(optimizer, ADAM_LIKE)


def sweep(suite: str, out_dir: Path, workers: int | None) -> list[dict[str, Any]]:
    """Run (or resume) the sweep of `suite`'s optimizers on its real workloads; the records."""
    from thalweg.bench.api import calibrated_targets
    from thalweg.bench.harness.executors import make_executor
    from thalweg.bench.harness.runner import Plan, Runner, sqlite_url
    from thalweg.bench.results import ResultsFile
    from thalweg.bench.suites import load_bench

    cfg = load_bench(suite)
    subs = cfg.resolve_submissions()
    plans = []
    for w in cfg.resolve_workloads(calibrated=calibrated_targets(out_dir)):
        if w.group != "real":
            continue
        for base in subs:
            sub = cfg.for_workload(base, w)
            items = [({"lr": lr}, 0) for lr in grid(sub.info.name)]
            plans.append(Plan(f"sweep/sweep/{w.key}/{sub.name}/0", "sweep", "sweep", w, sub, 0, len(items),
                              items=items))  # fmt: skip
    root = out_dir / f"sweep-{cfg.name}"
    root.mkdir(parents=True, exist_ok=True)
    runner = Runner(plans, sqlite_url(root / "study.db"), ResultsFile(root / "results.jsonl"),
                    make_executor("local", workers), stop_at_target=True)  # fmt: skip
    runner.recover()
    return runner.run()


def compare(swept: list[dict[str, Any]], benches: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per (optimizer, workload): the lrs the sweep reached the target with, and per bench run
    the tuning studies that reached it; `artifact` when the sweep reaches and, in some run, no
    study does."""
    from thalweg.bench import uncertainty

    cells = [uncertainty.cells(b) for b in benches]
    out = []
    for key in sorted({(r["submission"], r["workload"]) for r in swept}):
        mine = sorted((r for r in swept if (r["submission"], r["workload"]) == key),
                      key=lambda r: r["config"]["optimizer"].get("lr", 0))  # fmt: skip
        hits = [(r["config"]["optimizer"]["lr"], r["time_to_target"]["steps"]) for r in mine if r.get("reached")]
        runs = [c.get(key[0], {}).get(key[1]) for c in cells]
        studies = [(c.studies_reached, len(c.study_times)) for c in runs if c is not None]
        out.append({"submission": key[0], "workload": key[1], "grid": [r["config"]["optimizer"]["lr"] for r in mine],
                    "reached": hits, "best": min(hits, key=lambda h: h[1]) if hits else None,
                    "studies": studies, "artifact": bool(hits) and any(n == 0 for n, _ in studies)})  # fmt: skip
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="standard")
    ap.add_argument("--bench", type=Path, action="append", default=[],
                    help="a bench directory of that suite to check (repeatable: every run of it)")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("-o", "--out", type=Path, default=Path("bench"))
    ap.add_argument("--json", default=None, help="write the table and figures here (thalweg.record)")
    a = ap.parse_args()
    from thalweg.bench.results import read_results
    from thalweg.record import Record

    swept = sweep(a.suite, a.out, a.workers)
    rows, rec = compare(swept, [read_results(b / "results.jsonl") for b in a.bench]), Record()
    table = []
    for r in rows:
        best = "—" if r["best"] is None else f"{r['best'][0]:g} ({r['best'][1]} steps)"
        hits = ", ".join(f"{lr:g}" for lr, _ in r["reached"]) or "none"
        st = ", ".join(f"{n}/{m}" for n, m in r["studies"]) or "—"
        verdict = "ARTIFACT?" if r["artifact"] else ("ok" if r["reached"] or not r["studies"] else "not reached by hand either")
        table.append([r["submission"], r["workload"], hits, best, st, verdict])
        print(f"{r['submission']:<20} {r['workload']:<12} reached at lr {hits:<28} best {best:<22} bench studies {st:<5} {verdict}")
    rec.table("sweep", ["optimizer", "workload", "lrs that reach the target", "fastest (lr, steps)",
                        "bench studies that reach (per run)", "verdict"], table, "llllll")  # fmt: skip
    rec.figure("pairs", len(rows))
    rec.figure("reached_by_hand", sum(bool(r["reached"]) for r in rows))
    rec.figure("artifacts", sum(r["artifact"] for r in rows))
    rec.figure("trials", len(swept))
    if a.json:
        rec.write(a.json)
    artifacts = [r for r in rows if r["artifact"]]
    print(f"{len(rows)} pairs, {rec.figures['reached_by_hand']} reached by hand, {len(artifacts)} reached by hand "
          "but in no study of the bench" + (": " + ", ".join(f"{r['submission']}/{r['workload']}" for r in artifacts)
                                             if artifacts else ""))  # fmt: skip
    return 1 if artifacts else 0


if __name__ == "__main__":
    sys.exit(main())
