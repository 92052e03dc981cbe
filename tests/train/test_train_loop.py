"""The training loop in-process: run directory, best weights, schedule, early stopping,
the non-finite guard (skip, roll back, stop) and `load_run`."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from thalweg.train import (
    ConfigError,
    NonFiniteError,
    build_run,
    fit,
    load_run,
    parse_config,
    read_metrics,
)
from thalweg.train.components import build_schedule
from thalweg.train.guard import first_nonfinite_grad


def tiny(tmp_path: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    """A run on sklearn digits that takes about a second."""
    cfg: dict[str, Any] = {
        "name": "t", "out_dir": str(tmp_path / "runs"),
        "data": {"name": "digits"},
        "model": {"name": "mlp", "width": 32, "depth": 1},
        "optimizer": {"name": "adamw", "lr": 0.01},
        "schedule": {"name": "warmup_cosine", "warmup_fraction": 0.1},
        "regularization": {"label_smoothing": 0.1, "clip_norm": 5.0},
        "train": {"epochs": 3, "batch_size": 64, "num_threads": 1, "log_every": 7},
        "diagnostics": {"figures": False, "report": False},
    }
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    return cfg


def test_run_directory_has_every_artefact(tmp_path: Path) -> None:
    cfg = tiny(tmp_path, diagnostics={"figures": True, "report": True})
    res = fit(cfg, quiet=True)
    run = res.run_dir
    assert res.stopped == "completed" and res.steps == 3 * 20
    assert res.test_accuracy is not None and res.test_accuracy > 0.85
    assert parse_config(tomllib.loads((run / "config.toml").read_text())) == parse_config(cfg)
    recs = read_metrics(run)
    train = [r for r in recs if "event" not in r]
    assert [r["step"] for r in train if "val_loss" in r] == [20, 40, 60]
    assert {"step", "epoch", "train_loss", "train_accuracy", "lr", "grad_norm", "seconds"} <= set(train[0])
    assert recs[-1]["event"] == "final" and recs[-1]["test_accuracy"] == res.test_accuracy
    assert json.loads((run / "summary.json").read_text())["test_accuracy"] == res.test_accuracy
    best = torch.load(run / "best.pt", weights_only=True)["state"]
    val = [r["val_accuracy"] for r in train if "val_accuracy" in r]
    assert best["value"] == max(val) == res.best_value
    assert sorted(p.name for p in (run / "figures").iterdir()) == [
        "accuracy.png", "grad_norm.png", "losses.png", "lr.png"]
    for png in (run / "figures").iterdir():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (run / "report.html").read_text()
    assert f"{res.test_accuracy:.4g}" in html and 'src="figures/losses.png"' in html


def test_lr_logged_is_the_schedule(tmp_path: Path) -> None:
    cfg = parse_config(tiny(tmp_path))
    res = fit(cfg, quiet=True)
    sched = build_schedule(cfg, res.steps, 20)
    for r in read_metrics(res.run_dir):
        if "lr" in r and "event" not in r:  # lr used by the step that produced record `step`
            assert r["lr"] == pytest.approx(sched(r["step"] - 1), rel=1e-12)
    assert sched(0) == 0.0 and sched(6) == pytest.approx(0.01)


def test_load_run_rebuilds_best_and_checkpoint_models(tmp_path: Path) -> None:
    res = fit(tiny(tmp_path), quiet=True)
    loaded = load_run(res.run_dir)
    assert loaded.checkpoint.name == "best.pt" and not loaded.model.training
    with torch.no_grad():
        acc = (loaded.model(loaded.splits.x_test).argmax(1) == loaded.splits.y_test).double().mean()
    assert acc.item() == pytest.approx(res.test_accuracy, abs=1e-9)
    last = sorted((res.run_dir / "checkpoints").iterdir())[-1]
    from_ckpt = load_run(last)
    assert from_ckpt.run_dir == res.run_dir and from_ckpt.checkpoint == last
    for a, b in zip(from_ckpt.model.parameters(), res.model.parameters(), strict=True):
        assert torch.equal(a, b)
    out = from_ckpt.model(from_ckpt.splits.x_train[:8])
    loss = from_ckpt.loss_fn(out, from_ckpt.splits.y_train[:8])
    assert loss.ndim == 0 and torch.isfinite(loss)
    with pytest.raises(FileNotFoundError, match="not inside a thalweg run"):
        load_run(tmp_path)


def test_early_stopping_stops_after_patience(tmp_path: Path) -> None:
    cfg = tiny(tmp_path, regularization={"early_stopping": {"patience": 2, "min_delta": 1.0}},
               train={"epochs": 10})
    res = fit(cfg, quiet=True)
    assert res.stopped == "early_stopping" and res.steps == 3 * 20  # evals 2 and 3 "did not improve"


def _digits_npz(tmp_path: Path, huge_rows: int, value: float = 3e38) -> Path:
    """Digits as an .npz in which `huge_rows` training rows hold `value` (finite, overflows)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = d.data.astype(np.float64), d.target
    marker = tmp_path / "marker.npz"
    np.savez(marker, x=np.arange(len(x), dtype=np.float64)[:, None] + np.zeros((1, 2)), y=y)
    from thalweg.data import load_dataset

    rows = load_dataset("npz", path=str(marker)).x_train[:huge_rows, 0].long().tolist()
    x[rows] = value
    path = tmp_path / "huge.npz"
    np.savez(path, x=x, y=y)
    return path


def test_nonfinite_batches_are_skipped_and_logged(tmp_path: Path) -> None:
    npz = _digits_npz(tmp_path, huge_rows=1)
    cfg = tiny(tmp_path, data={"name": "npz", "options": {"path": str(npz)}, "standardize": False})
    res = fit(cfg, quiet=True)
    events = [r for r in read_metrics(res.run_dir) if r.get("event") == "nonfinite"]
    assert res.skipped_steps == 3 == len(events)  # the bad row is in one batch per epoch
    assert all(e["what"] == "loss" and e["streak"] == 1 for e in events)
    assert res.stopped == "completed" and res.rollbacks == 0
    assert all(torch.isfinite(p).all() for p in res.model.parameters())
    assert res.test_accuracy > 0.8


def test_an_overflowing_gradient_is_named_by_layer(tmp_path: Path) -> None:
    npz = _digits_npz(tmp_path, huge_rows=1, value=1e30)  # loss stays finite, ‖g‖² overflows
    cfg = tiny(tmp_path, data={"name": "npz", "options": {"path": str(npz)}, "standardize": False},
               train={"epochs": 1})
    res = fit(cfg, quiet=True)
    events = [r for r in read_metrics(res.run_dir) if r.get("event") == "nonfinite"]
    assert res.skipped_steps == 1 and len(events) == 1
    assert np.isfinite(events[0]["loss"])
    what = events[0]["what"]  # e.g. "gradient norm (overflow; largest entry 2.17e+28 in layer 'net.3.weight')"
    assert what.startswith("gradient norm (overflow; largest entry ")
    assert float(what.split("entry ")[1].split(" ")[0]) > 1e19  # squared, it overflows float32
    assert what.endswith(".weight')") and "in layer 'net." in what


def test_divergence_rolls_back_with_lower_lr_and_recovers(tmp_path: Path) -> None:
    cfg = tiny(tmp_path, optimizer={"name": "sgd", "lr": 1e30}, schedule={"name": "constant"},
               train={"nonfinite_patience": 2, "rollback_lr_factor": 1e-31, "epochs": 2},
               regularization={"clip_norm": None})
    res = fit(cfg, quiet=True)
    recs = read_metrics(res.run_dir)
    rb = [r for r in recs if r.get("event") == "rollback"]
    assert res.rollbacks == 1 and len(rb) == 1 and rb[0]["step"] == 0
    assert rb[0]["lr_scale"] == pytest.approx(1e-31)
    assert res.stopped == "completed" and res.test_accuracy > 0.8
    assert [r["lr"] for r in recs if "event" not in r][-1] == pytest.approx(0.1)


def test_divergence_that_persists_stops_with_a_message(tmp_path: Path) -> None:
    cfg = tiny(tmp_path, optimizer={"name": "sgd", "lr": 1e30}, schedule={"name": "constant"},
               train={"nonfinite_patience": 2, "max_rollbacks": 1},
               regularization={"clip_norm": None})
    with pytest.raises(NonFiniteError, match=r"2 non-finite steps in a row \(last: loss\) after 1 rollback") as e:
        fit(cfg, quiet=True)
    assert e.value.what == "loss"
    recs = read_metrics(Path(cfg["out_dir"]) / "t")
    assert [r["event"] for r in recs if "event" in r] == [
        "nonfinite", "nonfinite", "rollback", "nonfinite", "nonfinite", "stopped"]


def test_first_nonfinite_grad_names_the_layer() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    model(torch.randn(5, 3)).sum().backward()
    names, params = zip(*model.named_parameters(), strict=True)
    assert first_nonfinite_grad(list(names), list(params)).startswith("gradient norm (overflow")
    params[2].grad[1, 0] = float("inf")
    assert first_nonfinite_grad(list(names), list(params)) == "gradient of layer '2.weight'"


def test_cli_trains_and_reports_test_accuracy(tmp_path: Path) -> None:
    import tomli_w

    from thalweg.cli import app

    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps(tiny(tmp_path, train={"epochs": 1})))
    out = CliRunner().invoke(app, ["train", str(path)])  # not a TTY: no progress bar
    assert out.exit_code == 0, out.output
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("run: ") and "epoch" not in out.output
    assert lines[1].startswith("test accuracy: ") and 0.5 < float(lines[1].split(": ")[1]) <= 1.0


def test_resume_command_on_a_finished_run_only_reports(tmp_path: Path) -> None:
    from thalweg.cli import app

    res = fit(tiny(tmp_path, train={"epochs": 1}), quiet=True)
    before = (res.run_dir / "checkpoints" / "step_00000020.pt").read_bytes()
    out = CliRunner().invoke(app, ["resume", str(res.run_dir), "--quiet"])
    assert out.exit_code == 0, out.output
    assert out.stdout.strip().splitlines()[-1] == f"test accuracy: {res.test_accuracy:.4f}"
    assert (res.run_dir / "checkpoints" / "step_00000020.pt").read_bytes() == before  # no training
    out = CliRunner().invoke(app, ["resume", str(tmp_path / "nope")])
    assert out.exit_code == 2 and "no config.toml" in out.output


def test_regression_runs_keep_the_lowest_val_loss(tmp_path: Path) -> None:
    cfg = tiny(tmp_path, data={"name": "linreg_toy"}, model={"name": "linear", "width": None,
               "depth": None}, optimizer={"name": "sgd", "lr": 0.01}, schedule={"name": "constant"},
               regularization={"label_smoothing": 0.0}, train={"epochs": 30, "batch_size": 2})
    res = fit(cfg, quiet=True)
    assert res.best_metric == "val_loss" and res.test_accuracy is None and res.test_loss is not None
    vals = [r["val_loss"] for r in read_metrics(res.run_dir) if "val_loss" in r and "event" not in r]
    assert res.best_value == min(vals) and vals[-1] < vals[0] / 2


def test_monitors_and_penalties_are_recorded(tmp_path: Path) -> None:
    plain = fit(tiny(tmp_path, train={"epochs": 1}, init={"rule": "xavier_uniform"}), quiet=True)
    cfg = tiny(tmp_path, diagnostics={"monitors": True}, train={"epochs": 1},
               regularization={"l2": 0.5}, init={"rule": "xavier_uniform"})
    cfg["name"] = "m"
    res = fit(cfg, quiet=True)
    mons = read_metrics(res.run_dir / "monitors.jsonl")
    assert [m["step"] for m in mons] == [7, 14]  # every log_every steps
    layers = {entry["name"]: entry for entry in mons[0]["layers"]}
    assert len(layers) == 2  # the MLP's two Linear layers
    assert all(e["grad_norm"] > 0 and e["update_ratio"] > 0 for e in layers.values())

    def weight_norm(model: torch.nn.Module) -> float:
        return sum(float(p.detach().norm() ** 2) for p in model.parameters() if p.dim() >= 2)

    assert weight_norm(res.model) < weight_norm(plain.model)  # the L2 penalty shrinks weights


def test_batchnorm_drops_a_last_batch_of_one_and_says_so_once(tmp_path: Path) -> None:
    # digits has 1257 training rows: batch sizes 2, 4 and 8 all leave a last batch of 1
    cfg = tiny(tmp_path, model={"norm": "batch"}, train={"epochs": 2, "batch_size": 8, "log_every": 50})
    res = fit(cfg, quiet=True)
    assert res.stopped == "completed" and res.steps == 2 * (1257 // 8)  # 157 full batches an epoch
    said = [w for w in res.warnings if "leaves a last batch of 1 example" in w]
    assert len(said) == 1 and said[0].startswith("[train] batch_size = 8") and "BatchNorm (net.2)" in said[0]
    assert json.loads((res.run_dir / "summary.json").read_text())["steps_per_epoch"] == 157
    plain = build_run(tiny(tmp_path, train={"batch_size": 8}))  # no BatchNorm: nothing dropped
    assert plain.steps_per_epoch == 158 and plain.notes == []
    with pytest.raises(ConfigError, match=r"\[train\] batch_size = 1: the model's BatchNorm \(net.2\) "
                                          r"needs at least 2 examples per batch"):
        fit({**tiny(tmp_path, model={"norm": "batch"}, train={"batch_size": 1}), "name": "one"}, quiet=True)
    assert not (tmp_path / "runs" / "one").exists()  # refused before anything was written
