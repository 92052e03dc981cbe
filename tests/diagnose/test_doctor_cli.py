"""`thalweg doctor RUN [--json] [--treat] [--verify]` on real runs, the report it writes, and the
instruments' labels (`inspect`, `landscape`: which loss is shown)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from thalweg.cli import app
from thalweg.train import fit, load_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _tiny(tmp_path: Path, name: str, **sections: dict) -> dict:
    cfg = {"name": name, "out_dir": str(tmp_path), "data": {"name": "digits"},
           "model": {"name": "mlp", "width": 16, "depth": 2}, "init": {"rule": "kaiming_uniform"},
           "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}, "schedule": {"name": "constant"},
           "train": {"epochs": 3, "batch_size": 64, "num_threads": 1},
           "diagnostics": {"figures": True, "report": True}}
    for k, v in sections.items():
        cfg[k] = {**cfg.get(k, {}), **v}
    return cfg


def _ok(args: list[str]) -> str:
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return res.output


@pytest.mark.slow
def test_doctor_json_treat_verify_and_the_report(tmp_path: Path) -> None:
    run = fit(_tiny(tmp_path, "sym", init={"rule": "constant", "value": 0.05}, diagnostics={"figures": False}),
              quiet=True).run_dir
    out = json.loads(_ok(["doctor", str(run), "--json", "--treat", "--verify"]))
    top = out["findings"][0]
    assert top["code"] == "SYMMETRIC_INIT" and top["severity"] == "critical"
    assert set(top) >= {"code", "severity", "confidence", "evidence", "action", "fix"}
    assert top["fix"] == {"init.rule": "kaiming_normal"} and '[init] rule = "kaiming_normal"' in top["action"]
    conf = [f["confidence"] for f in out["findings"] if f["severity"] != "info"]
    assert all(0 < c <= 1 for c in conf)
    treated = Path(out["treatment"]["path"])
    assert treated == run / "treated.toml"
    cfg = load_config(treated)
    assert cfg.init.rule == "kaiming_normal" and cfg.name == "sym-treated" and cfg.train.epochs == 3
    v = out["verification"]
    assert v["improved"] and v["after"] > v["before"] and v["epochs"] == 3 and v["metric"] == "best val_accuracy"
    assert Path(v["after_run"]).parent == run / "doctor" and v["before_run"] == str(run)  # the run itself: same budget
    assert v["after_top"] != "SYMMETRIC_INIT"
    html = (run / "report.html").read_text()
    i = html.index("thalweg-doctor:start")
    assert html.index("</h1>") < i < html.index("Final numbers") < html.index("Resolved config")
    assert html.count("thalweg-doctor:start") == 1 and "Treatment for SYMMETRIC_INIT" in html
    assert 'src="figures/doctor_weights.png"' in html
    assert (run / "figures" / "doctor_weights.png").read_bytes()[:4] == b"\x89PNG"
    # nothing is overwritten: an edited treated.toml stays, the new one gets a fresh name; verify runs too
    treated.write_text(treated.read_text() + "# my edit\n")
    out2 = json.loads(_ok(["doctor", str(run), "--json", "--verify", "--epochs", "2", "--no-figures"]))
    assert out2["treatment"]["path"] == str(run / "treated-2.toml") and "# my edit" in treated.read_text()
    assert out2["verification"]["before_run"] != out2["verification"]["after_run"] != v["after_run"]
    assert Path(v["after_run"]).is_dir() and Path(out2["verification"]["after_run"]).is_dir()
    text = _ok(["doctor", str(run), "--no-curvature", "--no-figures"])
    assert text.index("SYMMETRIC_INIT") < text.index("report:") and "confidence" in text


@pytest.mark.slow
def test_diverge_and_recover_is_diagnosed_as_recovered(tmp_path: Path) -> None:
    cfg = load_config(EXAMPLES / "diverge_and_recover.toml",
                      {"out_dir": str(tmp_path), "train.epochs": 4, "diagnostics.figures": False})
    res = fit(cfg, quiet=True)
    assert res.rollbacks == 1 and res.best_value > 0.9
    out = json.loads(_ok(["doctor", str(res.run_dir), "--json"]))
    codes = [f["code"] for f in out["findings"]]
    assert codes[0] == "RECOVERED" and all(f["severity"] == "info" for f in out["findings"]), codes
    rec = out["findings"][0]["evidence"]
    assert rec["lr_at_blowup"] == 100.0 and rec["lr_now"] == pytest.approx(0.1)
    assert "LR_BEYOND_STABILITY" not in codes and "NONFINITE" not in codes
    assert out["measurements"]["lr"] == pytest.approx(0.1)  # the lr actually used after the rollback


def test_the_initialization_is_rebuilt_exactly(tmp_path: Path) -> None:
    from thalweg.diagnose.examine import examine

    cfg = _tiny(tmp_path, "init", train={"epochs": 1, "keep_checkpoints": 5},
                diagnostics={"figures": False, "report": False})
    run = fit(cfg, quiet=True).run_dir
    ex = examine(run / "checkpoints" / "step_00000000.pt", with_curvature=False, lr_finder=False)
    assert ex.evidence is not None and ex.evidence.weights is not None
    assert ex.evidence.weights.change and all(v == 0.0 for v in ex.evidence.weights.change.values())
    moved = examine(run, with_curvature=False, lr_finder=False).evidence.weights.change  # type: ignore[union-attr]
    assert min(moved.values()) > 0


def test_a_finished_run_report_leads_with_the_quick_diagnosis(tmp_path: Path) -> None:
    run = fit(_tiny(tmp_path, "quick"), quiet=True).run_dir
    html = (run / "report.html").read_text()
    assert html.index("</h1>") < html.index("thalweg-doctor:start") < html.index("Final numbers")
    assert "HEALTHY" in html and "thalweg doctor" in html and 'src="figures/losses.png"' in html
    bad = CliRunner().invoke(app, ["doctor", str(tmp_path / "missing")], env={"COLUMNS": "300"})
    assert bad.exit_code == 2 and "missing" in bad.output


@pytest.mark.slow
def test_inspect_and_landscape_say_which_loss(tmp_path: Path) -> None:
    from thalweg.curvature.commands import inspect_target
    from thalweg.train import load_run

    run = fit(_tiny(tmp_path, "ls", regularization={"label_smoothing": 0.1}), quiet=True).run_dir
    lr = load_run(run)
    x, y = lr.splits.x_train[:128], lr.splits.y_train[:128]
    with torch.no_grad():
        plain = float(F.cross_entropy(lr.model(x), y))
        smooth = float(lr.loss_fn(lr.model(x), y))
    said: list[str] = []
    r = inspect_target(run, k=2, max_samples=128, density_plot=True, progress=said.append)
    assert r["loss_label"] == "plain cross-entropy" and r["loss"] == pytest.approx(plain, rel=1e-5)
    assert any("top 2 eigenvalues" in s for s in said) and any("λ_min" in s for s in said)
    o = json.loads(_ok(["inspect", str(run), "--k", "2", "--max-samples", "128", "--loss", "objective",
                        "--no-density", "--json"]))
    assert o["loss_label"] == "training objective (label smoothing 0.1)" and o["loss"] == pytest.approx(smooth, rel=1e-5)
    assert smooth > plain
    html = (run / "report.html").read_text()  # the density computed by inspect is in the report
    assert html.index("thalweg-doctor:end") < html.index("thalweg-inspect:start")
    assert 'src="figures/hessian_density.png"' in html
    text = _ok(["landscape", str(run), "--dim", "1", "--resolution", "3", "--samples", "64", "--out",
                str(tmp_path / "land")])
    assert "cross-entropy at the trained weights" in text
    text = _ok(["landscape", str(run), "--dim", "1", "--resolution", "3", "--samples", "64", "--loss", "objective",
                "--out", str(tmp_path / "land")])
    assert "training objective (label smoothing 0.1) at the trained weights" in text
    bad = CliRunner().invoke(app, ["inspect", str(run), "--loss", "smoothed"], env={"COLUMNS": "300"})
    assert bad.exit_code == 2 and "--loss" in bad.output


def test_treated_config_is_a_valid_config_for_every_fix_the_doctor_writes(tmp_path: Path) -> None:
    from thalweg.diagnose import apply_fix
    from thalweg.train import parse_config

    base = tomllib.loads((EXAMPLES / "sick" / "healthy.toml").read_text())
    fixes = [{"optimizer.lr": 0.2}, {"init.rule": "kaiming_normal"}, {"init.bias": 0.0}, {"init.freeze": []},
             {"data.standardize": True}, {"model.norm": "layer"}, {"model.width": 64}, {"model.dropout": 0.3},
             {"model.activation": "gelu"}, {"regularization.clip_norm": 1.0}, {"optimizer.weight_decay": 0.01},
             {"optimizer.momentum": 0.9}]
    for fix in fixes:
        parse_config(apply_fix(base, fix))  # raises ConfigError naming the field if a fix were invalid
