"""`thalweg inspect` / `thalweg doctor` on a saved probe and on a trainer run; probe files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from thalweg.cli import app
from thalweg.curvature import HessianOperator, load_probe, load_target, save_probe
from thalweg.models import build_model

SPEC = {"name": "mlp", "in_shape": (6,), "out_features": 3, "width": 8, "depth": 1}


def _probe(tmp_path: Path, lr: float | None = None) -> tuple[Path, torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model(**SPEC)
    x, y = torch.randn(96, 6), torch.randint(0, 3, (96,))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(30):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return save_probe(tmp_path / "probe.pt", model, x, y, spec=SPEC, lr=lr, optimizer="sgd"), model, x, y


def test_probe_roundtrip_and_errors(tmp_path: Path) -> None:
    path, model, x, y = _probe(tmp_path)
    p = load_probe(path)
    assert torch.equal(p.x, x) and torch.equal(p.y, y) and p.loss_name == "cross_entropy"
    for (n1, t1), (n2, t2) in zip(model.state_dict().items(), p.model.state_dict().items(), strict=True):
        assert n1 == n2 and torch.equal(t1, t2)
    with torch.no_grad():
        assert float(p.loss_fn(p.model(x), y)) == pytest.approx(float(F.cross_entropy(model.eval()(x), y)))
    with pytest.raises(ValueError, match="loss"):
        save_probe(tmp_path / "bad.pt", model, x, y, spec=SPEC, loss="hinge")
    with pytest.raises(ValueError, match="spec"):
        save_probe(tmp_path / "bad.pt", model, x, y, spec={"name": "mlp"})
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a thalweg probe"):
        load_probe(tmp_path / "other.pt")


def test_load_target_reads_runs_only_through_an_injected_loader(tmp_path: Path) -> None:
    from types import SimpleNamespace

    path, model, x, y = _probe(tmp_path)
    p = load_target(path, max_samples=10)  # a probe file needs no loader
    assert torch.equal(p.x, x[:10]) and p.run_dir is None
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with pytest.raises(ValueError, match="load_run"):  # the library never imports the trainer
        load_target(run_dir)
    splits = SimpleNamespace(x_train=x, y_train=y)
    config = SimpleNamespace(optimizer={"name": "sgd", "lr": 0.3, "momentum": 0.9})
    seen: list[Path] = []

    def loader(where: Path) -> SimpleNamespace:
        seen.append(where)
        return SimpleNamespace(model=model, splits=splits, loss_fn=F.cross_entropy, config=config, run_dir=where)

    q = load_target(run_dir, max_samples=5, load_run=loader)
    assert seen == [run_dir] and q.run_dir == run_dir and q.lr == 0.3 and q.extras["momentum"] == 0.9
    assert torch.equal(q.x, x[:5]) and q.model is model


def test_inspect_reports_true_eigenvalues_and_a_density_png(tmp_path: Path) -> None:
    path, *_ = _probe(tmp_path)
    res = CliRunner().invoke(app, ["inspect", str(path), "--k", "3", "--json", "--full", "--out", str(tmp_path / "fig")])
    assert res.exit_code == 0, res.output
    r = json.loads(res.output)
    p = load_probe(path)
    ev = torch.linalg.eigvalsh(HessianOperator(p.model, p.loss_fn, (p.x, p.y)).dense().double())
    top = torch.tensor(r["top"]["eigenvalues"], dtype=torch.float64)
    torch.testing.assert_close(top, ev[-3:].flip(0), rtol=1e-3, atol=1e-5)
    assert r["bottom"]["eigenvalues"][0] == pytest.approx(float(ev[0]), abs=1e-3 * float(ev[-1]))
    # the fast default: λ_min's one estimate θ ± r holds an eigenvalue, and its certificate agrees with it
    fast = json.loads(CliRunner().invoke(app, ["inspect", str(path), "--json", "--no-density"]).output)
    theta, r_min = fast["bottom"]["eigenvalues"][0], fast["bottom"]["residuals"][0]
    assert float((ev - theta).abs().min()) <= r_min + 1e-9 and float(ev[0]) <= theta + r_min
    sign = fast["min_sign"]["sign"]
    assert sign == ("negative" if float(ev[0]) < 0 else "positive")
    if sign == "negative":
        assert f"{theta + r_min:.3g}" in fast["min_sign"]["certificate"] and theta + r_min < 0
    assert fast["classification"]["lambda_min"] == theta and fast["loss_label"] == "plain cross-entropy"
    assert r["trace"]["num_hvps"] > 0 and r["classification"]["kind"] in ("not_critical", "saddle", "flat", "minimum")
    assert (tmp_path / "fig" / "hessian_density.png").read_bytes()[:4] == b"\x89PNG"
    text = CliRunner().invoke(app, ["inspect", str(path), "--no-density"])
    assert text.exit_code == 0 and "λ1 =" in text.output and "Verdict:" in text.output
    # one estimate per eigenvalue: λ_min is printed once, with one residual
    assert text.output.count("λ_min =") == 1 and "smallest eigenvalue" not in text.output
    bad = CliRunner().invoke(app, ["inspect", str(tmp_path / "missing.pt")], env={"COLUMNS": "400"})
    assert bad.exit_code == 2 and "missing.pt" in bad.output


def test_doctor_flags_an_unstable_learning_rate_and_writes_html(tmp_path: Path) -> None:
    path, *_ = _probe(tmp_path, lr=50.0)
    res = CliRunner().invoke(app, ["doctor", str(path), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    codes = {f["code"] for f in out["findings"]}
    assert "LR_BEYOND_STABILITY" in codes
    lr_f = next(f for f in out["findings"] if f["code"] == "LR_BEYOND_STABILITY")
    assert lr_f["evidence"]["lr_x_lambda_max"] == pytest.approx(50.0 * out["measurements"]["curvature"]["lambda_max"])
    report = Path(out["report"])
    html = report.read_text()
    assert "LR_BEYOND_STABILITY" in html and html.count("thalweg-doctor:start") == 1
    CliRunner().invoke(app, ["doctor", str(path)])  # again: the section is replaced, not duplicated
    assert report.read_text().count("thalweg-doctor:start") == 1
    calm = _probe(tmp_path / "calm", lr=1e-3)[0]
    out = json.loads(CliRunner().invoke(app, ["doctor", str(calm), "--json"]).output)
    assert "LR_BEYOND_STABILITY" not in {f["code"] for f in out["findings"]}


@pytest.mark.slow
def test_doctor_and_inspect_on_a_trainer_run(tmp_path: Path) -> None:
    from thalweg.train import fit, load_run

    cfg = {"name": "tiny", "out_dir": str(tmp_path), "data": {"name": "digits"},
           "model": {"name": "mlp", "width": 8, "depth": 1}, "optimizer": {"name": "sgd", "lr": 0.2},
           "schedule": {"name": "constant"}, "train": {"epochs": 1, "batch_size": 64},
           "diagnostics": {"figures": False}}
    run = fit(cfg, quiet=True).run_dir
    before = (run / "report.html").read_text()
    # a training-time monitor record with overflow (as the trainer logs Monitor.measure() output)
    from thalweg.curvature import load_target
    from thalweg.monitors import Monitor

    probe = load_target(run, max_samples=64, load_run=load_run)
    with Monitor(probe.model.train()) as mon:
        probe.loss_fn(probe.model(probe.x), probe.y).backward()
        rec = mon.measure(step=123)
    rec["nonfinite"]["grads"] = 5
    (run / "monitors.jsonl").write_text(json.dumps(rec) + "\n")
    res = CliRunner().invoke(app, ["doctor", str(run), "--max-samples", "256"])
    assert res.exit_code == 0, res.output
    after = (run / "report.html").read_text()
    # the findings lead the report (before the numbers and the config); the rest of it is kept
    assert "thalweg-doctor:start" in after and after.index("thalweg-doctor:start") < after.index("Resolved config")
    assert after.index("</h1>") < after.index("thalweg-doctor:start") < after.index("Final numbers")

    def without_doctor(doc: str) -> str:
        a, b = doc.index("<!-- thalweg-doctor:start"), doc.index("thalweg-doctor:end -->") + len("thalweg-doctor:end -->")
        return doc[:a] + doc[b:]

    assert without_doctor(after) == without_doctor(before) and after.count("thalweg-doctor:start") == 1
    assert "NONFINITE" in res.output and "monitors.jsonl (step 123" in res.output
    res = CliRunner().invoke(app, ["inspect", str(run), "--k", "2", "--max-samples", "256", "--json"])
    assert res.exit_code == 0, res.output
    assert (run / "figures" / "hessian_density.png").is_file()
    assert json.loads(res.output)["num_samples"] == 256
