"""A bench run end to end: trials that diverge, crash, time out or kill their worker are
recorded and the bench goes on; results.jsonl is strict JSON; the report is written."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from thalweg.bench.api import run_bench
from thalweg.bench.results import read_results
from thalweg.bench.suites import BenchConfig, BenchConfigError
from thalweg.optim import registry


def _strict(path):
    def bad(c):
        raise ValueError(f"bare {c} in {path}")

    return [json.loads(line, parse_constant=bad) for line in path.read_text().splitlines()]


def _choice(value):
    return [{"name": "lr", "kind": "choice", "choices": [value]}]


class _Crashy(torch.optim.SGD):
    """An optimizer that passes every check and fails at its first step, as a buggy one does."""

    def step(self, closure=None):
        raise RuntimeError("crashy: the update kernel failed")


def _register_crashy(monkeypatch):
    registry.names()  # load the providers first
    info = registry.OptimizerInfo(name="crashy", factory=_Crashy,
                                  hyperparameters=(registry.Hyperparameter("lr", 0.1, low=0.0),))
    monkeypatch.setitem(registry._REGISTRY, "crashy", info)


def test_a_submission_with_a_bad_fixed_value_is_refused_before_any_trial(tmp_path):
    cfg = BenchConfig(name="bad", workloads=["rosenbrock"], trials=1, studies=1, seeds=1,
                      optimizers=["broken"],
                      submissions={"broken": {"optimizer": "sgd", "fixed": {"momentum": 2.0}}})
    with pytest.raises(BenchConfigError, match="momentum"):
        run_bench(cfg, out_dir=tmp_path, workers=0, quiet=True)
    assert not list(tmp_path.rglob("results.jsonl"))


def test_failing_trials_are_recorded_and_the_bench_finishes(tmp_path, monkeypatch):
    _register_crashy(monkeypatch)
    cfg = BenchConfig(
        name="faults", workloads=["rosenbrock", "linreg"], trials=1, studies=1, seeds=1,
        sensitivity_points=2, sensitivity_seeds=1, optimizers=["sgd", "blowup", "broken"],
        submissions={
            "blowup": {"optimizer": "sgd", "space": _choice(1e3)},  # diverges at once
            "broken": {"optimizer": "crashy", "space": _choice(1e-3)},
        },
        targets={"rosenbrock": 1e-2, "linreg": 1e-3},
        budgets={"rosenbrock": {"steps": 100}, "linreg": {"steps": 200, "max_seconds": 1e-4}},
    )
    res = run_bench(cfg, out_dir=tmp_path, workers=0, quiet=True)
    recs = _strict(res.dir / "results.jsonl")
    assert recs == read_results(res.dir / "results.jsonl") and len(recs) == len(res.records)
    by = {(r["workload"], r["submission"], r["phase"]): r for r in recs}
    assert by[("rosenbrock", "blowup", "tune")]["status"] == "diverged"
    assert by[("rosenbrock", "blowup", "tune")]["reached"] is False
    broken = by[("rosenbrock", "broken", "tune")]
    assert broken["status"] == "crashed" and "update kernel failed" in broken["error"]
    assert all(r["status"] == "timeout" for r in recs if r["workload"] == "linreg"
               and r["submission"] == "sgd")
    ok = [r for r in recs if r["workload"] == "rosenbrock" and r["submission"] == "sgd"]
    assert {r["phase"] for r in ok} == {"tune", "defaults", "confirm", "rerun", "sensitivity"}
    assert all(r["status"] in ("ok", "diverged") for r in ok)
    # per workload: sgd 1 tune + 1 defaults + 2 confirmations + 1 rerun + 2 sensitivity; blowup
    # (lr is a choice, nothing to sweep) 1 + 1 + 2 + 1; broken (every trial crashes: no
    # configuration to confirm or re-run) 1 + 1
    assert len(recs) == 2 * (7 + 5 + 2)
    for r in recs:
        assert {"config", "seed", "curve", "time_to_target", "final", "best", "host", "versions"} <= r.keys()
    # scores exist for everyone; a submission that never runs scores 0
    assert res.scores["steps"]["broken"] == 0.0 and res.scores["steps"]["blowup"] == 0.0
    page = res.report.read_text()
    assert "performance profile" in page and page.count("data:image/png;base64,") >= 3
    assert "Learning-rate sensitivity" in page and "Default vs tuned" in page
    scores = json.loads((res.dir / "scores.json").read_text())
    assert set(scores["external"]["steps"]["score"]) == {"sgd", "blowup", "broken"}
    assert all(math.isfinite(v) for v in scores["external"]["seconds"]["score"].values())


@pytest.mark.slow
def test_a_worker_that_dies_is_recorded_and_replaced(tmp_path):
    helpers = Path(__file__).with_name("bench_helpers.py")
    cfg = BenchConfig(name="dies", workloads=["linreg"], code=[f"{helpers}:dies"],
                      optimizers=["sgd"], trials=1, studies=1, seeds=0, confirm_seeds=0, sensitivity_points=0,
                      targets={"linreg": 1e-3}, budgets={"linreg": {"steps": 50}})  # fmt: skip
    res = run_bench(cfg, out_dir=tmp_path, workers=1, quiet=True, report=False)
    dead = [r for r in res.records if r["workload"] == "dies"]
    assert len(dead) == 2 and all(r["status"] == "crashed" for r in dead)
    assert all("worker process died (exit code 3)" in r["error"] for r in dead)  # a new worker each time
    alive = [r for r in res.records if r["workload"] == "linreg"]
    assert len(alive) == 2 and all(r["status"] in ("ok", "diverged") for r in alive)
