"""`thalweg.watch` in a hand-written loop: the records are the loop's own losses, the update
ratios are the weights' real change, the guard names what went non-finite and lets the loop
skip it, the doctor diagnoses a sick model from the held batch, TensorBoard and MLflow receive
the same numbers."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import thalweg
from thalweg.train.guard import NonFiniteError


def _data(n: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 5, generator=g)
    return x, (x[:, 0] - x[:, 2] > 0).long()


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 2))


def test_import_thalweg_stays_cheap() -> None:
    code = ("import sys, thalweg; bad = [m for m in ('torch', 'thalweg.integrations') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    from thalweg.integrations.plain import watch

    assert thalweg.watch is watch  # resolved on first use


def test_records_are_the_loops_own_numbers(tmp_path: Path) -> None:
    x, y = _data()
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    w = thalweg.watch(model, opt, out_dir=tmp_path / "run", every=4, probe=(x[:32], y[:32]),
                      loss_fn=F.cross_entropy)
    losses, ratio = [], None
    for step in range(1, 13):
        xb, yb = x[(step * 16) % 128:][:16], y[(step * 16) % 128:][:16]
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        before = torch.cat([model[0].weight.detach().reshape(-1), model[0].bias.detach()])
        assert w.step(loss) is True
        opt.step()
        losses.append(float(loss.detach()))
        if step == 8:
            after = torch.cat([model[0].weight.detach().reshape(-1), model[0].bias.detach()])
            ratio = float((after - before).norm() / after.norm())  # layer "0": weight and bias
    w.log(val_loss=0.5, val_accuracy=0.75)
    rep = w.report()
    w.close()
    metrics = [json.loads(s) for s in (rep.out_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in metrics if "train_loss" in r]
    assert [r["step"] for r in train] == [4, 8, 12]
    for r in train:
        assert r["train_loss"] == pytest.approx(sum(losses[r["step"] - 4:r["step"]]) / 4, rel=1e-9)
        assert r["lr"] == 0.2
    mons = {m["step"]: m for m in w.watcher.monitor_records}
    layer = next(L for L in mons[8]["layers"] if L["name"] == "0")
    assert layer["update_ratio"] == pytest.approx(ratio, rel=1e-5)
    assert (rep.out_dir / "findings.json").is_file() and (rep.out_dir / "report.html").is_file()
    assert json.loads((rep.out_dir / "findings.json").read_text())[0]["code"] == rep.findings[0].code

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(rep.out_dir / "tensorboard"), size_guidance={"scalars": 0})
    ea.Reload()
    assert [e.value for e in ea.Scalars("train_loss")] == pytest.approx([r["train_loss"] for r in train])
    assert [e.step for e in ea.Scalars("grad_norm/0")] == [4, 8, 12]
    assert ea.Scalars("val_accuracy")[0].value == pytest.approx(0.75)


def test_guard_names_the_culprit_and_the_loop_skips_it(tmp_path: Path) -> None:
    x, y = _data()
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    w = thalweg.watch(model, opt, every=2, patience=3, tensorboard=False)
    for step in range(1, 7):
        opt.zero_grad()
        loss = F.cross_entropy(model(x[:16]), y[:16])
        loss.backward()
        if step == 3:
            loss = loss * float("nan")
        if step == 5:
            model[2].weight.grad[0, 0] = float("inf")
        before = [p.detach().clone() for p in model.parameters()]
        if w.step(loss):
            opt.step()
        else:
            assert step in (3, 5)
            assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    events = [r for r in w.watcher.records if r.get("event") == "nonfinite"]
    assert [(e["step"], e["what"]) for e in events] == [(3, "loss"), (5, "gradient of layer '2.weight'")]
    assert w.steps == 6
    with pytest.raises(NonFiniteError, match="3 non-finite steps in a row"):
        for _ in range(3):
            opt.zero_grad()
            F.cross_entropy(model(x[:16]), y[:16]).backward()
            w.step(float("nan"))
    rep = w.report(tmp_path / "r")
    assert any(f.code == "NONFINITE" and f.severity == "critical" for f in rep.findings)


def test_step_after_optimizer_step_counts_once(tmp_path: Path) -> None:
    x, y = _data()
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    w = thalweg.watch(model, opt, every=2, tensorboard=False)
    for _ in range(6):
        opt.zero_grad()
        loss = F.cross_entropy(model(x[:16]), y[:16])
        loss.backward()
        opt.step()
        w.step(loss)  # after the step: counted, but no update ratio can be measured
    assert w.steps == 6
    assert [m["step"] for m in w.watcher.monitor_records] == [2, 4, 6]
    assert all(L["update_ratio"] is None for m in w.watcher.monitor_records for L in m["layers"])


def test_doctor_finds_dead_units_from_the_held_batch(tmp_path: Path) -> None:
    x, y = _data()
    model = _model()
    with torch.no_grad():
        model[0].bias.fill_(-50.0)  # every ReLU unit is off for every input
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    w = thalweg.watch(model, opt, every=5, probe=(x, y), loss_fn=F.cross_entropy, tensorboard=False,
                      out_dir=tmp_path / "dead")
    for _ in range(10):
        opt.zero_grad()
        loss = F.cross_entropy(model(x[:32]), y[:32])
        loss.backward()
        w.step(loss)
        opt.step()
    rep = w.report()
    codes = [f.code for f in rep.findings if f.severity != "info"]
    assert "DEAD_UNITS" in codes, codes
    dead = next(f for f in rep.findings if f.code == "DEAD_UNITS")
    assert (rep.out_dir / "figures" / "doctor_activations.png").is_file() and dead.evidence
    w.close()
    with pytest.warns(UserWarning, match="holds an earlier run or report"):
        again = thalweg.watch(_model(), None, out_dir=tmp_path / "dead", tensorboard=False)
    assert again.watcher.out_dir.name == "dead-2"  # the earlier report is kept
    again.close()


@pytest.mark.slow
def test_mlflow_receives_the_same_numbers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = f"file:{tmp_path / 'mlruns'}"
    x, y = _data()
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    w = thalweg.watch(model, opt, every=2, out_dir=tmp_path / "m", tensorboard=False, mlflow=uri)
    for _ in range(4):
        opt.zero_grad()
        loss = F.cross_entropy(model(x[:16]), y[:16])
        loss.backward()
        w.step(loss)
        opt.step()
    run_id = mlflow.active_run().info.run_id
    w.report()
    w.close()
    assert mlflow.active_run() is None
    client = mlflow.tracking.MlflowClient(uri)
    train = [r for r in w.watcher.records if "train_loss" in r]
    got = client.get_metric_history(run_id, "train_loss")
    assert [(m.step, m.value) for m in got] == [(r["step"], pytest.approx(r["train_loss"])) for r in train]
    assert math.isfinite(client.get_metric_history(run_id, "grad_norm.0")[-1].value)
    names = {a.path for a in client.list_artifacts(run_id)}
    assert {"report.html", "findings.json", "figures"} <= names
