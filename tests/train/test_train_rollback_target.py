"""The guard never rolls back onto a broken model, and a run never ends "completed" with one:
a checkpoint whose weights are inf/NaN (or whose validation loss was) is passed over for an
older, finite one; a run that reaches its last step with a non-finite model is stopped with
exit 3, best.pt kept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from thalweg.train import NonFiniteError, fit
from thalweg.train.loop import Trainer


def config(out: Path) -> dict[str, Any]:
    return {"name": "r", "out_dir": str(out), "data": {"name": "digits"},
            "model": {"name": "mlp", "width": 16, "depth": 1}, "optimizer": {"name": "sgd", "lr": 0.05},
            "train": {"epochs": 2, "batch_size": 64, "eval_every": 4, "log_every": 4, "checkpoint_every": 4,
                      "num_threads": 1},
            "diagnostics": {"figures": False, "report": False}}


def break_weights_at(monkeypatch: pytest.MonkeyPatch, at: int) -> None:
    """After step `at` (an evaluation and checkpoint step) the first layer's weights are NaN,
    once: the checkpoint and the validation of that step see the broken model."""
    real, done = Trainer._step, {"yes": False}

    def step(self: Trainer, xb: torch.Tensor, yb: torch.Tensor) -> Any:
        out = real(self, xb, yb)
        if self.state.step == at and not done["yes"]:
            done["yes"] = True
            with torch.no_grad():
                self.params[0].fill_(float("nan"))
        return out

    monkeypatch.setattr(Trainer, "_step", step)


def events(run: Path) -> list[dict[str, Any]]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "event" in r]


def test_a_rollback_passes_over_a_checkpoint_of_a_broken_model(tmp_path: Path, monkeypatch) -> None:
    break_weights_at(monkeypatch, 8)
    res = fit(config(tmp_path), quiet=True)
    rb = [e for e in events(res.run_dir) if e["event"] == "rollback"]
    assert rb and rb[0]["step"] == 4  # not 8, whose weights (and validation) were NaN
    assert res.stopped == "completed" and len(rb) == 1
    last = torch.load(sorted((res.run_dir / "checkpoints").glob("step_*.pt"))[-1], weights_only=True)["state"]
    assert all(bool(torch.isfinite(v).all()) for v in last["model"].values())


def test_a_run_that_ends_with_a_broken_model_is_not_completed(tmp_path: Path, monkeypatch) -> None:
    cfg = config(tmp_path)
    steps = 2 * 20  # 2 epochs of 20 batches
    break_weights_at(monkeypatch, steps)
    with pytest.raises(NonFiniteError, match=rf"the run reached step {steps} with a non-finite model"):
        fit(cfg, quiet=True)
    best = torch.load(tmp_path / "r" / "best.pt", weights_only=True)["state"]
    assert all(bool(torch.isfinite(v).all()) for v in best["model"].values())
    assert events(tmp_path / "r")[-1]["event"] == "stopped"


def test_eps_zero_is_named_not_the_learning_rate(tmp_path: Path) -> None:
    """Adam with eps = 0 divides 0 by 0 where a gradient is zero (digits has pixels that are
    always 0): the trainer and the doctor say eps, not "lower the learning rate"."""
    from thalweg.diagnose import RunEvidence, diagnose_run
    from thalweg.train import read_metrics

    cfg = config(tmp_path)
    cfg["optimizer"] = {"name": "adam", "lr": 1e-3, "eps": 0.0}
    with pytest.raises(NonFiniteError, match=r"set \[optimizer\] eps above 0") as e:
        fit(cfg, quiet=True)
    assert "lower [optimizer] lr" not in str(e.value)
    run = tmp_path / "r"
    found = diagnose_run(RunEvidence(config={"optimizer": cfg["optimizer"]}, records=read_metrics(run / "metrics.jsonl")))
    nf = next(f for f in found if f.code == "NONFINITE")
    assert nf.fix == {"optimizer.eps": 1e-8} and "eps = 0 divides by zero" in nf.title
