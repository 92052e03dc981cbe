"""`run_bench` (what `thalweg bench run` calls) and `calibrate` (the AlgoPerf target setting).

A bench lives in `<out_dir>/<name>/`: `study.db` (the Optuna studies, unless `storage` names
another database), `results.jsonl`, `bench.json` (the resolved configuration per ruleset),
`report.html` and `figures/`. Running the same bench again resumes it; one process at a time
(a second one is refused: `thalweg.train.rundir.lock.RunLockedError`).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thalweg.bench import scoring
from thalweg.bench.executors import make_executor
from thalweg.bench.progress import BenchProgress
from thalweg.bench.results import ResultsFile
from thalweg.bench.runner import Runner, sqlite_url
from thalweg.bench.suites import BenchConfig, build_plans, follow_up_for, load_bench
from thalweg.bench.trial import environment

__all__ = ["BenchResult", "calibrate", "run_bench"]


@dataclass
class BenchResult:
    """What a bench run produced."""

    dir: Path
    records: list[dict[str, Any]]
    scores: dict[str, dict[str, float]]
    report: Path | None
    recovered: int
    seconds: float
    restored: int = 0  # finished trials the database lost, written back from results.jsonl
    notes: tuple[str, ...] = ()


def _write_bench_json(path: Path, cfg: BenchConfig, plans: list[Any]) -> None:
    data = json.loads(path.read_text()) if path.is_file() else {}
    wls = {p.workload.key: p.workload.describe() for p in plans}
    subs = {p.submission.name: p.submission.describe() for p in plans}
    data[cfg.ruleset] = {"config": cfg.model_dump(mode="json"), "workloads": wls, "submissions": subs}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True, default=str))
    os.replace(tmp, path)


def run_bench(bench: BenchConfig | str | Path, *, out_dir: str | Path = "bench", workers: int | None = None,
              threads: int = 1, storage: str | None = None, executor: str = "local",
              ray_address: str | None = None, quiet: bool = False, report: bool = True,
              **overrides: Any) -> BenchResult:  # fmt: skip
    """Run (or resume) a bench: a suite name, a TOML path, or a :class:`BenchConfig`;
    `overrides` replace top-level keys of the configuration (e.g. ``ruleset="self"``)."""
    t0 = time.perf_counter()
    cfg = bench if isinstance(bench, BenchConfig) else load_bench(bench, **overrides)
    if isinstance(bench, BenchConfig) and overrides:
        cfg = BenchConfig.model_validate({**cfg.model_dump(), **{k: v for k, v in overrides.items() if v is not None}})
    from thalweg.train.rundir.lock import RunLock, check_dirs

    plans = build_plans(cfg)
    root = Path(out_dir) / cfg.name
    check_dirs(root)
    with RunLock(root, what="bench"):
        return _run_locked(cfg, plans, root, t0, workers=workers, threads=threads, storage=storage,
                           executor=executor, ray_address=ray_address, quiet=quiet, report=report)


def _run_locked(cfg: BenchConfig, plans: list[Any], root: Path, t0: float, *, workers: int | None,
                threads: int, storage: str | None, executor: str, ray_address: str | None, quiet: bool,
                report: bool) -> BenchResult:  # fmt: skip
    """`run_bench` once this process holds the bench directory."""
    results = ResultsFile(root / "results.jsonl")
    pool = make_executor(executor, workers, threads, ray_address)
    subs = list(dict.fromkeys(p.submission.name for p in plans))
    wls = list(dict.fromkeys(p.workload.key for p in plans))
    total = sum(p.n for p in plans)
    view = BenchProgress(total, subs, wls, enabled=not quiet and sys.stderr.isatty(), title=cfg.name)
    try:
        runner = Runner(plans, storage or sqlite_url(root / "study.db"), results, pool, threads=threads,
                        pruner=cfg.pruner, stop_at_target=cfg.stop_at_target, objective=cfg.objective,
                        follow_up=follow_up_for(cfg), on_record=view.add)  # fmt: skip
        recovered = runner.recover()
    except BaseException:
        pool.close()
        raise
    for note in runner.notes:
        print(f"note: {note}", file=sys.stderr)
    _write_bench_json(root / "bench.json", cfg, plans)  # once the database agreed with cfg
    with view:
        for rec in recovered:
            view.add(rec)
        records = runner.run()
        view.set_total(sum(p.n for p in plans))
    out: dict[str, dict[str, float]] = {}
    for unit in ("seconds", "steps"):
        out[unit] = scoring.scores(records, unit, cfg.ruleset, cfg.r_max)
    page = None
    if report:
        from thalweg.bench.report import write_report

        page = write_report(root)
    return BenchResult(root, records, out, page, runner.recovered, time.perf_counter() - t0,
                       runner.restored, tuple(runner.notes))


def calibrate(workloads: list[str], *, trials: int = 10, studies: int = 2, seeds: int = 5,
              out_dir: str | Path = "bench", name: str = "calibrate", **kwargs: Any) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Targets as AlgoPerf sets them: tune the baselines in each workload's step budget, re-run
    each one's best configuration over `seeds`, take the median (over seeds) of the best
    metric, and the best of those over the baselines; never tighter than the tolerance."""
    cfg = BenchConfig(name=name, ruleset="calibrate", workloads=workloads, trials=trials,
                      studies=studies, seeds=max(1, seeds), sensitivity_points=0)  # fmt: skip
    res = run_bench(cfg, out_dir=out_dir, report=False, **kwargs)
    plans = build_plans(cfg)
    by_key = {p.workload.key: p.workload for p in plans}
    env = environment()
    source = (f"thalweg bench calibrate {' '.join(workloads)} --trials {trials} --studies {studies} "
              f"--seeds {seeds}; {time.strftime('%Y-%m-%d')} on {env['host']['name']} "
              f"({env['host']['processor']}), torch {env['versions']['torch']}")  # fmt: skip
    targets: dict[str, dict[str, Any]] = {}
    for key, w in by_key.items():
        medians = {}
        for sub in dict.fromkeys(p.submission.name for p in plans if p.workload.key == key):
            best = [r["best"]["metric"] for r in res.records if r["workload"] == key
                    and r["submission"] == sub and r["phase"] == "rerun" and r["best"]["metric"] is not None]  # fmt: skip
            if best:
                medians[sub] = statistics.median(best)
        if not medians:
            continue
        pick = min if w.mode == "min" else max
        value = pick(medians.values())
        if w.tolerance is not None and w.mode == "min":
            value = max(value, w.tolerance)
        targets[key] = {"value": float(f"{value:.6g}"), "metric": w.metric, "baselines": medians,
                        "source": source}  # fmt: skip
    (res.dir / "targets.json").write_text(json.dumps(targets, indent=1, sort_keys=True))
    return targets
