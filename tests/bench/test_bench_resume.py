"""A bench killed with SIGKILL (a real process) and started again re-runs no finished trial
and loses none; the Ray executor gives the local executor's results table."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from thalweg.bench import scoring
from thalweg.bench.api import run_bench
from thalweg.bench.suites import BenchConfig

BENCH = """name = "r"
workloads = ["linreg"]
optimizers = ["sgd"]
trials = 4
studies = 1
seeds = 0
confirm_seeds = 0
sensitivity_points = 0
stop_at_target = false
[targets]
linreg = 1e-3
[budgets.linreg]
steps = 2500
"""


def _lines(path):
    if not path.is_file():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.mark.slow
def test_sigkill_then_restart_reruns_nothing_and_loses_nothing(tmp_path):
    import optuna

    (tmp_path / "r.toml").write_text(BENCH)
    cmd = [sys.executable, "-m", "thalweg.cli", "bench", "run", str(tmp_path / "r.toml"),
           "--dir", str(tmp_path), "--workers", "0", "-q"]  # fmt: skip
    results = tmp_path / "r" / "results.jsonl"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(_lines(results)) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _lines(results)
    assert 2 <= len(before) < 5, proc.stderr.read().decode()[-2000:]
    subprocess.run(cmd, check=True, timeout=180, capture_output=True)
    after = _lines(results)
    keys = [(r["study"], r["trial"]) for r in after]
    assert len(keys) == len(set(keys)) == 5  # 4 tuning trials + 1 defaults trial, each once
    for rec in before:  # a finished trial is kept as it was: same start time, same process
        assert rec in after
    assert {r["pid"] for r in after} - {r["pid"] for r in before}  # the rest ran anew
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'r' / 'study.db'}")
    for s in storage.get_all_studies():
        trials = optuna.load_study(study_name=s.study_name, storage=storage).get_trials()
        assert all(t.state.is_finished() for t in trials)
        assert len([t for t in trials if "record" in t.user_attrs]) == len(trials)


@pytest.mark.slow
def test_ray_executor_gives_the_local_results_table(tmp_path):
    ray = pytest.importorskip("ray")
    cfg = BenchConfig(name="t", workloads=["linreg"], optimizers=["sgd"], trials=2, studies=1,
                      seeds=1, confirm_seeds=0, sensitivity_points=0, targets={"linreg": 1e-2},
                      budgets={"linreg": {"steps": 300}})  # fmt: skip
    local = run_bench(cfg, out_dir=tmp_path / "local", workers=0, quiet=True, report=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = run_bench(cfg, out_dir=tmp_path / "ray", executor="ray", quiet=True, report=False)
    finally:
        ray.shutdown()
    table = scoring.results_table(local.records)
    assert len(table) == 4 and {row[4] for row in table} <= {"ok", "diverged"}
    assert scoring.results_table(remote.records) == table


class _Killed(BaseException):
    """Stands for SIGKILL at one exact point (BaseException: nothing on the way catches it)."""


@pytest.mark.parametrize(("where", "kill_at"), [("describe", 2), ("describe", 5), ("suggest", 3)],
                         ids=["tuning-trial", "defaults-trial", "mid-ask"])
def test_a_kill_between_asking_and_describing_a_trial_loses_nothing(tmp_path, monkeypatch, where, kill_at):
    """Killed after Optuna stored a trial but before its seed was (or before all its params
    were): the restart runs that very trial (a tuning trial with its params, a fixed-phase one
    as the next item) — every trial in the study ends finished and with its record, none is
    run twice."""
    import optuna

    from thalweg.bench.harness import runner as R

    cfg = BenchConfig.model_validate({**BenchConfig(name="k", workloads=["linreg"], optimizers=["sgd"], trials=4,
                                                    studies=1, seeds=0, confirm_seeds=0,
                                                    sensitivity_points=0).model_dump(),
                                      "targets": {"linreg": 1e-2}, "budgets": {"linreg": {"steps": 200}}})
    owner = R.Runner if where == "describe" else optuna.trial.Trial
    real, calls = getattr(owner, f"_{where}"), {"n": 0}

    def dying(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == kill_at:
            raise _Killed
        return real(self, *a, **kw)

    monkeypatch.setattr(owner, f"_{where}", dying)
    with pytest.raises(_Killed):
        run_bench(cfg, out_dir=tmp_path, workers=0, quiet=True, report=False)
    monkeypatch.setattr(owner, f"_{where}", real)
    res = run_bench(cfg, out_dir=tmp_path, workers=0, quiet=True, report=False)
    keys = [(r["study"], r["trial"]) for r in res.records]
    assert len(keys) == len(set(keys)) == 5  # 4 tuning trials + 1 defaults trial, each once
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'k' / 'study.db'}")
    n_trials = 0
    for s in storage.get_all_studies():
        trials = optuna.load_study(study_name=s.study_name, storage=storage).get_trials()
        n_trials += len(trials)
        assert all(t.state.is_finished() and "record" in t.user_attrs for t in trials), s.study_name
    assert n_trials == 5  # the orphan was adopted, not failed and replaced
