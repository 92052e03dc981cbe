"""The `thalweg bench` commands and recipes: the chosen configuration is a `thalweg train`
config with the tuned optimizer and schedule."""

from __future__ import annotations

import json
import math
from pathlib import Path

from typer.testing import CliRunner

from thalweg.bench.api import run_bench
from thalweg.bench.recipes import recipe_toml
from thalweg.bench.suites import BenchConfig
from thalweg.cli import app

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_workloads_json_lists_targets_and_budgets():
    out = CliRunner().invoke(app, ["bench", "workloads", "--json"])
    assert out.exit_code == 0, out.output
    rows = {w["key"]: w for w in json.loads(out.output)}
    assert rows["mnist1d_cnn"]["target"] is not None and rows["rosenbrock"]["step_budget"] > 0
    assert rows["char_lm"]["group"] == "real" and rows["rosenbrock"]["group"] == "toy"
    assert "calibrate" in rows["rosenbrock"]["target_source"]


def test_bad_bench_file_is_one_clear_message(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('workloads = ["linreg"]\noptimizers = ["adamm"]\n')
    out = CliRunner().invoke(app, ["bench", "run", str(bad), "--dir", str(tmp_path), "-q"])
    assert out.exit_code == 2 and "unknown optimizer 'adamm'" in out.output
    out = CliRunner().invoke(app, ["bench", "report", str(tmp_path / "nothing")])
    assert out.exit_code == 2 and "no results" in out.output


def test_recipe_is_the_chosen_configuration_as_a_train_config(tmp_path):
    from thalweg.train import parse_config
    from thalweg.train.config import load_config

    cfg = BenchConfig(name="rec", workloads=["digits_logreg"], optimizers=["adamw"], trials=2,
                      studies=1, seeds=0, confirm_seeds=0, sensitivity_points=0, objective="metric",
                      budgets={"digits_logreg": {"steps": 30, "eval_every": 10}},
                      config_space={"digits_logreg": [{"name": "regularization.label_smoothing",
                                                       "low": 0.0, "high": 0.2, "where": "config"}]})  # fmt: skip
    res = run_bench(cfg, out_dir=tmp_path, workers=0, quiet=True, report=False)
    best = max((r for r in res.records if r["phase"] == "tune"), key=lambda r: r["best"]["metric"] * -1)
    path = tmp_path / "recipe.toml"
    out = CliRunner().invoke(app, ["bench", "recipe", str(res.dir), "digits_logreg", "-o", str(tmp_path),
                                   "--name", "recipe"])
    assert out.exit_code == 0, out.output
    run = load_config(path)
    assert run.optimizer.name == "adamw"
    assert run.optimizer.hyperparameters()["lr"] == float(f"{best['config']['optimizer']['lr']:.4g}")
    smoothing = best["config"]["overrides"]["regularization.label_smoothing"]
    assert run.regularization.label_smoothing == float(f"{smoothing:.4g}")
    assert run.train.epochs == math.ceil(30 / best["steps_per_epoch"])
    assert parse_config(run.model_dump(mode="json")) == run
    assert recipe_toml(res.dir, "digits_logreg").startswith("# A recipe for the bench workload digits_logreg")
    again = CliRunner().invoke(app, ["bench", "recipe", str(res.dir), "digits_logreg", "-o", str(tmp_path),
                                     "--name", "recipe"])
    assert again.exit_code == 0 and f"recipe: {tmp_path / 'recipe-2.toml'}" in again.output  # never replaced
    assert load_config(path) == run


def test_shipped_mnist1d_recipes_use_the_paper_protocol():
    from thalweg.train.config import load_config

    for name in ("mnist1d_mlp.toml", "mnist1d_cnn.toml"):
        cfg = load_config(EXAMPLES / name)
        assert cfg.data.name == "mnist1d" and cfg.data.seed == 42
        assert cfg.data.options == {"num_samples": 5000}
