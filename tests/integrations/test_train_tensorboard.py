"""`thalweg train` writes TensorBoard event files: read back with tensorboard's EventAccumulator,
the scalars are metrics.jsonl's, per-layer gradient norms are monitors.jsonl's, the curvature
probe's λ_max is there, the figures are images, and a rollback leaves one history, not two."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from thalweg.diagnose import surviving
from thalweg.train import fit


def _cfg(tmp: Path, name: str, **train: Any) -> dict[str, Any]:
    return {"name": name, "out_dir": str(tmp), "data": {"name": "digits"},
            "model": {"name": "mlp", "width": 16, "depth": 1},
            "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9}, "schedule": {"name": "constant"},
            "train": {"epochs": 2, "batch_size": 128, "log_every": 5, "num_threads": 1, **train},
            "diagnostics": {"monitors": True, "curvature_every": 5, "report": False}}


def _events(run: Path) -> EventAccumulator:
    ea = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    ea.Reload()
    return ea


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(s) for s in path.read_text().splitlines()]


def test_train_writes_the_metrics_to_tensorboard(tmp_path: Path) -> None:
    res = fit(_cfg(tmp_path, "tb"), quiet=True)
    ea = _events(res.run_dir)
    records = [r for r in _lines(res.run_dir / "metrics.jsonl") if "event" not in r]
    for key in ("train_loss", "val_accuracy", "lr", "grad_norm"):
        want = [(r["step"], r[key]) for r in records if key in r]
        got = [(e.step, e.value) for e in ea.Scalars(key)]
        assert [s for s, _ in got] == [s for s, _ in want], key
        assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6), key
    lam = [(r["step"], r["lambda_max"]) for r in records if "lambda_max" in r]
    assert lam and all(v > 0 for _, v in lam)
    assert [(e.step, pytest.approx(e.value, rel=1e-6)) for e in ea.Scalars("curvature/lambda_max")] == lam
    mons = _lines(res.run_dir / "monitors.jsonl")
    layer = mons[-1]["layers"][0]
    tb = {e.step: e.value for e in ea.Scalars(f"grad_norm/{layer['name']}")}
    assert tb[mons[-1]["step"]] == pytest.approx(layer["grad_norm"], rel=1e-6)
    assert ea.Scalars("test_accuracy")[0].value == pytest.approx(res.test_accuracy, rel=1e-6)
    assert {"figures/losses", "figures/lr"} <= set(ea.Tags()["images"])


def test_a_rollback_leaves_one_history(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "blowup", batch_size=64, nonfinite_patience=3, rollback_lr_factor=0.001)
    cfg["optimizer"]["lr"] = 100.0  # examples/diverge_and_recover.toml: overflows, rolls back to step 0
    cfg["model"] = {"name": "mlp", "width": 64, "depth": 2}
    cfg["diagnostics"] = {"curvature_every": 0, "report": False, "figures": False}
    res = fit(cfg, quiet=True)
    assert res.rollbacks == 1
    records = _lines(res.run_dir / "metrics.jsonl")
    abandoned = [r for r in records[:records.index(next(r for r in records if r.get("event") == "rollback"))]
                 if "train_loss" in r]
    assert abandoned and abandoned[0]["train_loss"] > 1e10  # logged before the blow-up, then undone
    kept = [(r["step"], r["train_loss"]) for r in surviving(records) if "train_loss" in r]
    got = [(e.step, e.value) for e in _events(res.run_dir).Scalars("train_loss")]
    assert [s for s, _ in got] == [s for s, _ in kept]  # the abandoned branch was purged
    assert [v for _, v in got] == pytest.approx([v for _, v in kept], rel=1e-6)


def test_tensorboard_can_be_switched_off(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "quiet", epochs=1)
    cfg["diagnostics"] = {"tensorboard": False, "report": False, "figures": False}
    res = fit(cfg, quiet=True)
    assert not (res.run_dir / "tensorboard").exists()
