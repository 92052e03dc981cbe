"""`run_bench` (what `thalweg bench run` calls) and `calibrate` (the AlgoPerf target setting).

A bench lives in `<out_dir>/<name>/`: `study.db` (the Optuna studies, unless `storage` names
another database), `results.jsonl`, `bench.json` (the resolved configuration per ruleset),
`report.html` and `figures/`. Running the same bench again resumes it; one process at a time
(a second one is refused: `thalweg.train.rundir.lock.RunLockedError`).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thalweg.bench import scoring
from thalweg.bench.harness.executors import make_executor
from thalweg.bench.harness.progress import BenchProgress
from thalweg.bench.harness.runner import Runner, sqlite_url
from thalweg.bench.harness.trial import environment
from thalweg.bench.results import ResultsFile
from thalweg.bench.suites import CALIBRATION, BenchConfig, build_plans, follow_up_for, load_bench

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
    wls = {p.workload.key: _describe(p.workload) for p in plans}
    subs = {p.submission.name: p.submission.describe() for p in plans}
    data[cfg.ruleset] = {"config": cfg.model_dump(mode="json"), "workloads": wls, "submissions": subs}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True, default=str))
    os.replace(tmp, path)


def _describe(w: Any) -> dict[str, Any]:
    """A workload's summary, with its `thalweg train` config (recipes are made from it)."""
    d = w.describe()
    if w.config is not None:
        d["config"] = w.config.model_dump(mode="json")
    return d


def calibrated_targets(out_dir: str | Path) -> dict[str, Any]:
    """Targets set by `thalweg bench calibrate -o out_dir` (for workloads without a stored one)."""
    path = Path(out_dir) / "calibrate" / "targets.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _base(bench: Any) -> Path | None:
    """Where a bench file's relative workload paths start: its own folder."""
    if isinstance(bench, (str, Path)) and str(bench).endswith(".toml") and Path(bench).is_file():
        return Path(bench).resolve().parent
    return None


def run_bench(bench: BenchConfig | str | Path, *, out_dir: str | Path = "bench", workers: int | None = None,
              threads: int = 1, storage: str | None = None, executor: str = "local",
              ray_address: str | None = None, quiet: bool = False, report: bool = True,
              **overrides: Any) -> BenchResult:  # fmt: skip
    """Run (or resume) a bench: a suite name, a TOML path, or a :class:`BenchConfig`;
    `overrides` replace top-level keys of the configuration (e.g. ``ruleset="self"``,
    ``workloads=["my.toml"]``)."""
    t0 = time.perf_counter()
    cfg = bench if isinstance(bench, BenchConfig) else load_bench(bench, **overrides)
    if isinstance(bench, BenchConfig) and overrides:
        cfg = BenchConfig.model_validate({**cfg.model_dump(), **{k: v for k, v in overrides.items() if v is not None}})
    from thalweg.train.rundir.lock import RunLock, check_dirs

    plans = build_plans(cfg, _base(bench), calibrated_targets(out_dir))
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
        out[unit] = scoring.scores(scoring.headline(records), unit, cfg.ruleset, cfg.r_max)
    page = None
    if report:
        from thalweg.bench.report import write_report

        page = write_report(root)
    return BenchResult(root, records, out, page, runner.recovered, time.perf_counter() - t0,
                       runner.restored, tuple(runner.notes))


def calibrate(workloads: list[str], *, code: list[str] | None = None, out_dir: str | Path = "bench",
              name: str = "calibrate", base: Path | None = None, **kwargs: Any) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Targets as AlgoPerf sets them (docs/bench.md, "Targets"): the baselines (AdamW, NAdamW,
    Nesterov) tuned with 3 studies × 20 trials at `calibration_fraction` (¼ = 1 / r_max) of each workload's
    step budget, each one's best configuration re-run over 10 seeds; a baseline's value is the
    median over seeds of its end-of-budget metric (median of the last three evaluations), the
    target the best baseline's; never tighter than a toy problem's tolerance. `kwargs`: fields
    of :class:`BenchConfig` (trials, studies, seeds, baselines, calibration_fraction) and
    :func:`run_bench`'s (workers, quiet, …). Writes DIR/NAME/targets.json (entries merged with
    earlier calibrations there) and DIR/NAME/calibration.json (the record)."""
    fields = {k: kwargs.pop(k) for k in list(kwargs) if k in BenchConfig.model_fields}
    t0, c0 = time.time(), _cpu()
    cfg = BenchConfig(name=name, ruleset="calibrate", workloads=workloads, code=code or [],
                      **{**CALIBRATION, **fields})  # fmt: skip
    plans = build_plans(cfg, base)
    res = run_bench(cfg, out_dir=out_dir, report=False, **kwargs)
    env = environment()
    args = " ".join([*workloads, *(f"--code {c}" for c in code or [])])
    source = (f"thalweg bench calibrate {args} (baselines {', '.join(cfg.baselines)}; {cfg.studies} × "
              f"{cfg.trials} trials at {cfg.calibration_fraction:g} of the budget, {cfg.seeds} seeds); "
              f"{time.strftime('%Y-%m-%d')} on {env['host']['name']} ({env['host']['processor']}), "
              f"torch {env['versions']['torch']}")  # fmt: skip
    record = calibration_record(res.records, plans, cfg)
    for t in record.values():
        t["source"] = source
    path = res.dir / "targets.json"
    merged = {**calibrated_targets(out_dir), **record}
    path.write_text(json.dumps(merged, indent=1, sort_keys=True))
    meta = {"protocol": {k: getattr(cfg, k) for k in ("baselines", "trials", "studies", "seeds",
                                                        "calibration_fraction", "sampler")},
            "command": source, "wall_seconds": time.time() - t0, "cpu_seconds": _cpu() - c0,
            "trial_wall_seconds": sum((r.get("seconds") or {}).get("total") or 0.0 for r in res.records),
            "trial_cpu_seconds": sum((r.get("cpu") or {}).get("train") or 0.0 for r in res.records),
            "trials": len(res.records), "workloads": record}  # fmt: skip
    _merge_record(res.dir / "calibration.json", meta)
    return record


def _merge_record(path: Path, meta: dict[str, Any]) -> None:
    """Write the calibration record, merged with an earlier calibration of other workloads
    under the same protocol (their commands listed, their times added)."""
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = None
    if isinstance(old, dict) and old.get("protocol") == meta["protocol"]:
        commands = [*(old.get("commands") or [old.get("command")]), meta["command"]]
        meta = {**meta, "commands": commands, "command": "\n".join(c for c in commands if c),
                "workloads": {**old.get("workloads", {}), **meta["workloads"]},
                **{k: old.get(k, 0) + meta[k] for k in ("wall_seconds", "cpu_seconds", "trial_wall_seconds",
                                                        "trial_cpu_seconds", "trials")}}  # fmt: skip
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _cpu() -> float:
    """CPU seconds of this process and its finished children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def calibration_record(records: list[dict[str, Any]], plans: list[Any], cfg: BenchConfig) -> dict[str, dict[str, Any]]:
    """Per workload: each baseline's chosen configuration, its end-of-budget metric per seed
    and their median; the target (the best median; a toy problem's tolerance at most)."""
    out: dict[str, dict[str, Any]] = {}
    by_key = {p.workload.key: p.workload for p in plans}
    for key, w in by_key.items():
        baselines: dict[str, Any] = {}
        for sub in dict.fromkeys(p.submission.name for p in plans if p.workload.key == key):
            mine = [r for r in records if r["workload"] == key and r["submission"] == sub]
            runs = [r for r in mine if r["phase"] == "rerun"]
            ends = [r.get("end_metric") for r in runs]
            good = [float(v) for v in ends if v is not None]
            if not runs:
                continue
            # a seed that diverged counts as the worst value, so the median stays honest
            worst = math.inf if w.mode == "min" else -math.inf
            values = sorted((v if v is not None else worst) for v in ends)
            med = statistics.median(values)
            baselines[sub] = {"median": med if math.isfinite(med) else None, "seeds": [
                None if v is None else float(f"{v:.6g}") for v in ends], "finite": len(good),
                "params": runs[0].get("params"), "config": runs[0].get("config"),
                "tuning_trials": sum(1 for r in mine if r["phase"] == "tune")}  # fmt: skip
        medians = {s: b["median"] for s, b in baselines.items() if b["median"] is not None}
        if not medians:
            continue
        best = (min if w.mode == "min" else max)(medians, key=medians.get)
        value = medians[best]
        if w.tolerance is not None and w.mode == "min":
            value = max(value, w.tolerance)
        out[key] = {"value": float(f"{value:.6g}"), "metric": w.metric, "mode": w.mode, "baseline": best,
                    "calibration_steps": w.step_budget, "baselines": baselines}  # fmt: skip
    return out
