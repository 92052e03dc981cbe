"""Your own model, first class: a `thalweg train` config as a workload (`--workload my.toml`),
calibrated (`bench calibrate my.toml`), refused before any trial when the bench cannot run it,
exported back as a recipe; Python code only where the user names it as code (`--code`) — and
a bench file never executes anything else (issue 24: no `module:function` is ever called)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from thalweg.bench.api import calibrate, run_bench
from thalweg.bench.suites import BenchConfigError
from thalweg.cli import app

MINE = """name = "mine"
[data]
name = "digits"
[model]
name = "linear"
[train]
epochs = 4
batch_size = 256
eval_every = 2
num_threads = 1
"""

BENCH = """name = "own"
workloads = ["mine.toml"]
optimizers = ["sgd"]
trials = 2
studies = 1
confirm_seeds = 1
[targets]
"mine.toml" = 2.2
"""


def _write(folder: Path, name: str, text: str) -> Path:
    p = folder / name
    p.write_text(text, encoding="utf-8")
    return p


def test_a_bench_file_never_runs_a_module_function(tmp_path, monkeypatch):
    """`workloads = ["os:system(command='touch PWNED')"]` is refused, nothing imported or called
    (issue 24.1); the message says where code of one's own goes and that it would run."""
    monkeypatch.chdir(tmp_path)
    for ref in ("os:system(command='touch PWNED')", "subprocess:run(args='touch PWNED')", "os.path:join"):
        bench = _write(tmp_path, "evil.toml", f'workloads = ["{ref}"]\noptimizers = ["sgd"]\n')
        out = CliRunner().invoke(app, ["bench", "run", str(bench), "--dir", str(tmp_path / "b"), "-q", "--workers", "0"])
        assert out.exit_code == 2, out.output
        assert "neither registered nor a .toml config" in out.output and "--code" in out.output
        out = CliRunner().invoke(app, ["bench", "run", "quick", "--workload", ref, "--dir", str(tmp_path / "b"), "-q"])
        assert out.exit_code == 2 and "runs that code" in out.output
        out = CliRunner().invoke(app, ["bench", "calibrate", ref, "--dir", str(tmp_path / "b"), "-q"])
        assert out.exit_code == 2
    assert not (tmp_path / "PWNED").exists()
    assert not list(tmp_path.rglob("results.jsonl"))


def test_a_config_the_bench_cannot_run_is_refused_before_any_trial(tmp_path):
    _write(tmp_path, "mine.toml", MINE + "[regularization]\nmixup_alpha = 0.2\nl2 = 0.001\n")
    bench = _write(tmp_path, "own.toml", BENCH)
    with pytest.raises(BenchConfigError, match=r"mixup_alpha = 0.2, regularization.l2 = 0.001"):
        run_bench(bench, out_dir=tmp_path / "b", workers=0, quiet=True)
    assert not list(tmp_path.rglob("results.jsonl"))


def test_own_config_runs_calibrates_and_exports_a_recipe(tmp_path):
    """A `thalweg train` config is a workload (its name is the key, relative to the bench
    file); without a target the error names the calibrate command; `bench calibrate
    mine.toml` sets one that `bench run -o` then uses; `bench recipe` exports the choice."""
    from thalweg.train.config import load_config

    mine = _write(tmp_path, "mine.toml", MINE)
    bench = _write(tmp_path, "own.toml", BENCH)
    res = run_bench(bench, out_dir=tmp_path / "b", workers=0, quiet=True, report=False)
    assert {r["workload"] for r in res.records} == {"mine.toml"}
    assert {r["phase"] for r in res.records} == {"tune", "defaults", "confirm"}
    assert all(r["status"] in ("ok", "diverged") for r in res.records)
    out = CliRunner().invoke(app, ["bench", "run", "quick", "--workload", str(mine), "--dir", str(tmp_path / "c"),
                                   "-q", "--workers", "0"])  # fmt: skip
    assert out.exit_code == 2 and f"thalweg bench calibrate {mine}" in out.output
    targets = calibrate([str(mine)], out_dir=tmp_path / "c", trials=1, studies=1, seeds=2, baselines=["sgd"],
                        workers=0, quiet=True)  # fmt: skip
    assert targets["mine.toml"]["metric"] == "val_accuracy" and targets["mine.toml"]["calibration_steps"] == 5  # 4 epochs × 5 steps, a quarter
    record = json.loads((tmp_path / "c" / "calibrate" / "calibration.json").read_text())
    assert record["protocol"]["seeds"] == 2 and record["workloads"]["mine.toml"]["baselines"]["sgd"]["seeds"]
    res2 = run_bench("quick", out_dir=tmp_path / "c", workers=0, quiet=True, report=False, workloads=[str(mine)],
                     optimizers=["sgd"], trials=1, studies=1, confirm_seeds=0, sensitivity_points=0)  # fmt: skip
    assert {r["target"] for r in res2.records} == {targets["mine.toml"]["value"]}
    out = CliRunner().invoke(app, ["bench", "recipe", str(res.dir), "mine.toml", "-o", str(tmp_path), "--name", "rec"])
    assert out.exit_code == 0, out.output
    rec = load_config(tmp_path / "rec.toml")
    assert rec.data.name == "digits" and rec.model.name == "linear" and rec.optimizer.name == "sgd"


CODE = '''
from thalweg.bench.tasks.workloads import Workload
from thalweg.bench.tasks.configs import config_workload

def workload(epochs: int = 1):
    cfg = {"name": "coded", "data": {"name": "digits"}, "model": {"name": "linear"},
           "train": {"batch_size": 256, "num_threads": 1}}
    return config_workload("coded", cfg, metric="val_loss", mode="min", step_budget=4 * epochs,
                           max_seconds=60.0, eval_every=2)
'''


@pytest.mark.slow
def test_code_named_as_code_runs_in_workers_without_pythonpath(tmp_path):
    """`--code my_bench.py:workload(epochs=1)` imports the user's file (in the spawned workers
    too), with no PYTHONPATH; the CLI works from another folder."""
    _write(tmp_path, "my_bench.py", CODE)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = src  # thalweg itself, as an installed package would be; not the user's folder
    cmd = [sys.executable, "-m", "thalweg.cli", "bench", "run", "quick", "--code", "my_bench.py:workload(epochs=1)",
           "--name", "coded", "--dir", str(tmp_path / "b"), "--workers", "1", "--trials", "1", "--studies", "1", "-q"]
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "coded").mkdir()
    targets = tmp_path / "b" / "calibrate"
    targets.mkdir()
    (targets / "targets.json").write_text(json.dumps({"coded(epochs=1)": {"value": 5.0}}))
    run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = [json.loads(x) for x in (tmp_path / "b" / "coded" / "results.jsonl").read_text().splitlines()]
    assert lines and all(r["status"] == "ok" for r in lines), [r.get("error") for r in lines]
    assert {r["workload"] for r in lines} == {"coded(epochs=1)"}
