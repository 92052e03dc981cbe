"""A bench under faults: two `bench run` on one directory (real processes), a damaged, deleted
or emptied study database, a bad `--storage` URL, kills at every point of asking a trial. A
bench restarted after any of them re-runs nothing finished, loses nothing recorded and asks
exactly the parameters and seeds an uninterrupted bench asks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from thalweg.bench.api import run_bench
from thalweg.bench.results import ResultsFile
from thalweg.bench.suites import BenchConfig
from thalweg.cli import app

TOML = """name = "f"
workloads = ["linreg"]
optimizers = ["sgd"]
trials = {trials}
studies = 1
confirm_seeds = 0
seeds = 0
sensitivity_points = 0
[targets]
linreg = 1e-2
[budgets.linreg]
steps = {steps}
"""


def cfg(trials: int = 4, steps: int = 200) -> BenchConfig:
    return BenchConfig.model_validate({"name": "f", "workloads": ["linreg"], "optimizers": ["sgd"], "trials": trials,
                                       "studies": 1, "confirm_seeds": 0, "seeds": 0, "sensitivity_points": 0,
                                       "targets": {"linreg": 1e-2}, "budgets": {"linreg": {"steps": steps}}})


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def asked(records: list[dict[str, Any]]) -> dict[tuple[str, int], tuple[dict[str, Any], int]]:
    """What each trial was asked to run: (study, number) → (params, seed)."""
    return {(r["study"], r["trial"]): (r["params"], r["seed"]) for r in records}


def cli(tmp: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "thalweg.cli", "bench", "run", str(tmp / "f.toml"), "--dir", str(tmp),
            "--workers", "0", "-q", *extra]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted bench of 4 tuning trials and the defaults trial."""
    out = tmp_path_factory.mktemp("ref")
    run_bench(cfg(), out_dir=out, workers=0, quiet=True, report=False)
    return out / "f"


def copy(finished: Path, tmp: Path) -> Path:
    shutil.copytree(finished, tmp / "f")
    (tmp / "f.toml").write_text(TOML.format(trials=4, steps=200))
    return tmp / "f"


# ----- two processes on one bench --------------------------------------------------------
@pytest.mark.slow
def test_a_second_bench_run_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    """Started at the same moment, one runs and the other is refused at once with one message;
    started mid-way, refused as well; the bench ends with every trial once."""
    (tmp_path / "f.toml").write_text(TOML.format(trials=4, steps=2500))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    a, b = (subprocess.Popen(cli(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2))
    results = tmp_path / "f" / "results.jsonl"
    deadline = time.monotonic() + 120
    while not lines(results) and time.monotonic() < deadline and (a.poll() is None or b.poll() is None):
        time.sleep(0.05)
    late = subprocess.run(cli(tmp_path), env=env, capture_output=True, text=True, timeout=600)
    outs = [(p.wait(timeout=900), *p.communicate()) for p in (a, b)]
    codes = sorted(rc for rc, _, _ in outs)
    assert codes == [0, 2], outs
    for rc, _, err in [*outs, (late.returncode, late.stdout, late.stderr)]:
        if rc == 2:
            assert "is in use by another thalweg process (pid" in err and "Traceback" not in err, err
    assert late.returncode == 2
    recs = lines(results)
    keys = [(r["study"], r["trial"]) for r in recs]
    assert len(keys) == len(set(keys)) == 5  # 4 tuning trials + the defaults trial, each once
    assert not (tmp_path / "f" / ".lock").exists()


# ----- a damaged or missing database ---------------------------------------------------------
def _truncate(db: Path) -> None:
    db.write_bytes(db.read_bytes()[:1000])


def _random(db: Path) -> None:
    db.write_bytes(os.urandom(100_000))


def _directory(db: Path) -> None:
    db.unlink()
    db.mkdir()


def _bad_record(db: Path) -> None:
    with sqlite3.connect(db) as c:
        c.execute("update trial_user_attributes set value_json='{not json' where key='record'")


@pytest.mark.parametrize(("damage", "says"), [
    (_truncate, "database disk image is malformed"), (_random, "file is not a database"),
    (_directory, "is a directory"), (_bad_record, "not valid JSON")],
    ids=["truncated", "random-bytes", "a-directory", "a-bad-record"])
def test_a_damaged_study_db_is_one_clear_message_and_loses_nothing(finished, tmp_path, damage, says):
    root = copy(finished, tmp_path)
    with sqlite3.connect(root / "study.db") as c:  # everything into the main file, then damage it
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for side in ("study.db-wal", "study.db-shm"):
        (root / side).unlink(missing_ok=True)
    before = (root / "results.jsonl").read_text()
    damage(root / "study.db")
    out = CliRunner().invoke(app, ["bench", "run", str(tmp_path / "f.toml"), "--dir", str(tmp_path), "--workers", "0", "-q"])
    assert out.exit_code == 2, out.output
    assert str(root / "study.db") in out.output and says in out.output and "Traceback" not in out.output
    assert "move it away" in out.output
    assert (root / "results.jsonl").read_text() == before


@pytest.mark.parametrize(("url", "says"), [
    ("notaurl", "not a database URL"), ("postgresql://nohost:1/x", "no database driver"),
    ("sqlite:////no/such/dir/x.db", "does not exist")])
def test_a_bad_storage_url_is_one_clear_message(tmp_path, url, says):
    (tmp_path / "f.toml").write_text(TOML.format(trials=2, steps=50))
    out = CliRunner().invoke(app, ["bench", "run", str(tmp_path / "f.toml"), "--dir", str(tmp_path),
                                   "--workers", "0", "-q", "--storage", url])
    assert out.exit_code == 2 and f"--storage {url!r}" in out.output and says in out.output, out.output
    assert out.exception is None or isinstance(out.exception, SystemExit)


@pytest.mark.parametrize("how", ["deleted", "emptied"])
def test_a_lost_study_db_reruns_nothing_that_results_jsonl_holds(finished, tmp_path, how):
    root = copy(finished, tmp_path)
    for name in ("study.db", "study.db-wal", "study.db-shm"):
        (root / name).unlink(missing_ok=True)
    if how == "emptied":
        (root / "study.db").write_bytes(b"")
    before = lines(root / "results.jsonl")
    res = run_bench(cfg(), out_dir=tmp_path, workers=0, quiet=True, report=False)
    assert res.restored == 5 and "written back" in res.notes[0]
    assert lines(root / "results.jsonl") == before  # nothing ran again
    # and the database holds them again: a further run finds everything done
    again = run_bench(cfg(), out_dir=tmp_path, workers=0, quiet=True, report=False)
    assert again.restored == 0 and sorted(map(json.dumps, again.records)) == sorted(map(json.dumps, before))


def test_a_trial_the_lost_database_never_finished_runs_with_its_own_number_and_parameters(finished, tmp_path):
    """results.jsonl lacks tuning trial 1 (it was running when the database was lost): it runs
    again as trial 1 with trial 1's parameters and seed; trials 0, 2 and 3 do not run again."""
    root = copy(finished, tmp_path)
    for name in ("study.db", "study.db-wal", "study.db-shm"):
        (root / name).unlink(missing_ok=True)
    ref = lines(root / "results.jsonl")
    gone = next(r for r in ref if r["phase"] == "tune" and r["trial"] == 1)
    ResultsFile(root / "results.jsonl").rewrite([r for r in ref if r is not gone])
    res = run_bench(cfg(), out_dir=tmp_path, workers=0, quiet=True, report=False)
    assert res.restored == 4
    assert asked(res.records) == asked(ref)
    new = [r for r in lines(root / "results.jsonl") if r not in ref]
    assert [(r["phase"], r["trial"]) for r in new] == [("tune", 1)]


@pytest.mark.slow
def test_killed_right_after_start_up_loses_nothing(finished, tmp_path):
    """With the database deleted, killed (SIGKILL, real processes) at random moments of its
    start-up, then finished: results.jsonl never holds fewer records, and nothing runs again."""
    import random

    root = copy(finished, tmp_path)
    for name in ("study.db", "study.db-wal", "study.db-shm"):
        (root / name).unlink(missing_ok=True)
    before = lines(root / "results.jsonl")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rng = random.Random()
    for _ in range(3):
        proc = subprocess.Popen(cli(tmp_path), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, 4.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        now = lines(root / "results.jsonl")
        assert all(r in now for r in before)
    subprocess.run(cli(tmp_path), env=env, check=True, capture_output=True, timeout=300)
    assert lines(root / "results.jsonl") == before


# ----- killed while asking: the same parameters as an uninterrupted bench ----------------------
class _Killed(BaseException):
    """Stands for SIGKILL at one exact point (BaseException: nothing on the way catches it)."""


@pytest.mark.parametrize(("where", "kill_at"), [
    ("suggest", 2), ("suggest", 5), ("describe", 3), ("finish", 2), ("append", 3)],
    ids=["mid-ask-trial-0", "mid-ask-trial-1", "asked-not-described", "ran-not-stored", "stored-not-appended"])
def test_a_bench_killed_while_asking_asks_what_an_uninterrupted_one_asks(finished, tmp_path, monkeypatch, where, kill_at):
    import optuna

    from thalweg.bench.harness import runner as R

    owner, name = {"suggest": (optuna.trial.Trial, "_suggest"), "describe": (R.Runner, "_describe"),
                   "finish": (R.Runner, "_finish"), "append": (ResultsFile, "append")}[where]
    real, calls = getattr(owner, name), {"n": 0}

    def dying(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == kill_at:
            raise _Killed
        return real(self, *a, **kw)

    monkeypatch.setattr(owner, name, dying)
    with pytest.raises(_Killed):
        run_bench(cfg(), out_dir=tmp_path, workers=0, quiet=True, report=False)
    monkeypatch.setattr(owner, name, real)
    monkeypatch.setattr(R, "_pid_alive", lambda pid: pid != os.getpid())  # the "killed" owner is dead
    res = run_bench(cfg(), out_dir=tmp_path, workers=0, quiet=True, report=False)
    ref = lines(finished / "results.jsonl")
    assert asked(res.records) == asked(ref)
    assert asked(lines(tmp_path / "f" / "results.jsonl")) == asked(ref)
    assert len(lines(tmp_path / "f" / "results.jsonl")) == len(ref)


# ----- caps: what no bench can run is refused before any trial ---------------------------------
@pytest.mark.parametrize(("extra", "says"), [
    ("[budgets.linreg]\nsteps = 1000000000000", "budgets.linreg.steps = 1000000000000: Input should be less than or equal to 1000000000"),
    ("[budgets.linreg]\nmax_seconds = inf", "budgets.linreg.max_seconds = inf: Input should be a finite number"),
    ("[targets]\nlinreg = nan", "targets.linreg = nan: Input should be a finite number"),
    ("[targets]\nlinreg = inf", "targets.linreg = inf: Input should be a finite number"),
    ("r_max = inf", "r_max = inf: Input should be a finite number"),
    ("budget_scale = inf", "budget_scale = inf: Input should be a finite number"),
    ("budget_scale = 1000000.0", "budget_scale = 1000000.0: Input should be less than or equal to 1000"),
    ("trials = 1000000000", "trials: bench 'c' would take at least"),
], ids=["steps-1e12", "inf-seconds", "nan-target", "inf-target", "inf-r_max", "inf-scale", "huge-scale", "1e9-trials"])
def test_a_bench_no_machine_can_run_is_refused_naming_the_field(tmp_path, extra, says):
    head = 'name = "c"\nworkloads = ["linreg"]\noptimizers = ["sgd"]\nstudies = 1\nseeds = 0\nsensitivity_points = 0\n'
    table = extra.startswith("[")
    (tmp_path / "c.toml").write_text(head + ("" if table else extra + "\n")
                                     + ("" if "[targets]" in extra else "[targets]\nlinreg = 1e-2\n")
                                     + (extra + "\n" if table else ""))
    out = CliRunner().invoke(app, ["bench", "run", str(tmp_path / "c.toml"), "--dir", str(tmp_path), "--workers", "0", "-q"])
    assert out.exit_code == 2 and says in out.output, out.output
    assert not (tmp_path / "c").exists()  # nothing ran, nothing was written


@pytest.mark.parametrize(("workload", "dim", "says"), [
    ("mnist1d_mlp", 'name = "model.widht"\nlow = 10\nhigh = 20\nkind = "int"', "model.widht = 10.0: config error: [model] widht = 10: unknown key"),
    ("mnist1d_mlp", 'name = "model.dropout"\nlow = 0.0\nhigh = 1.5', "model.dropout = 1.5: config error: [model] dropout = 1.5"),
    ("linreg", 'name = "model.width"\nlow = 10\nhigh = 20\nkind = "int"', "workload 'linreg' is not a config workload"),
], ids=["unknown-key", "out-of-range", "not-a-config-workload"])
def test_a_config_space_every_trial_would_crash_on_is_refused_up_front(tmp_path, workload, dim, says):
    """Before: every trial crashed and the bench exited 0 with a score of 0."""
    (tmp_path / "c.toml").write_text(
        f'name = "c"\nworkloads = ["{workload}"]\noptimizers = ["sgd"]\ntrials = 2\nstudies = 1\nseeds = 0\n'
        f'sensitivity_points = 0\n[targets]\n{workload} = 0.5\n[[config_space.{workload}]]\n{dim}\nwhere = "config"\n')
    out = CliRunner().invoke(app, ["bench", "run", str(tmp_path / "c.toml"), "--dir", str(tmp_path), "--workers", "0", "-q"])
    assert out.exit_code == 2 and f"config_space.{workload}: " in out.output and says in out.output, out.output
    assert not (tmp_path / "c").exists()
