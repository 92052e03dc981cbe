"""A run is never lost (issue 15, items 1-5 and 8): no silent overwrite, one process per run
directory, best.pt recoverable and never replaced by a worse or non-finite model, resume
checked against the config, strict JSON."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomli_w
import torch
from test_train_loop import _digits_npz, tiny
from typer.testing import CliRunner

from thalweg.cli import app
from thalweg.train import (
    CheckpointError,
    ConfigChangedError,
    RunLock,
    RunLockedError,
    fit,
    load_checkpoint,
    load_run,
    read_metrics,
    save_checkpoint,
    validation,
)
from thalweg.train.loop import Trainer


def files(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_a_new_run_never_replaces_one_that_holds_a_run(tmp_path: Path) -> None:
    cfg = tiny(tmp_path, train={"epochs": 1})
    first = fit(cfg, quiet=True)
    before = files(first.run_dir)
    again = fit({**cfg, "train": {**cfg["train"], "epochs": 2}}, quiet=True)  # as fit(load_config(..))
    assert again.run_dir == first.run_dir.with_name("t-2") and again.steps == 40
    assert any(f"{first.run_dir} holds a run, so this one is {again.run_dir}" in w for w in again.warnings)
    assert tomllib.loads((again.run_dir / "config.toml").read_text())["name"] == "t-2"
    assert files(first.run_dir) == before  # not one byte of the first run changed
    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps(cfg))
    out = CliRunner().invoke(app, ["train", str(path), "--quiet"])
    assert out.exit_code == 0 and f"this one is {first.run_dir.with_name('t-3')}" in out.output
    out = CliRunner().invoke(app, ["train", str(path), "--quiet", "--overwrite"])
    assert out.exit_code == 0 and f"run: {first.run_dir} " in out.output
    assert files(first.run_dir) != before and not first.run_dir.with_name("t-4").exists()


HOLDER = ("import sys, time; from thalweg.train import RunLock; RunLock(sys.argv[1]).acquire(); "
          "print('locked', flush=True); time.sleep(120)")


@pytest.mark.slow
def test_a_locked_run_fails_at_once_and_a_stale_lock_is_taken_over(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tiny(tmp_path, train={"epochs": 1})
    run = Path(cfg["out_dir"]) / "t"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"locked"
        with pytest.raises(RunLockedError) as e:
            RunLock(run).acquire()
        assert f"pid {holder.pid} on {socket.gethostname()}, started 20" in str(e.value)
        path = tmp_path / "c.toml"
        path.write_text(tomli_w.dumps(cfg))
        t0 = time.monotonic()
        out = CliRunner().invoke(app, ["train", str(path), "--quiet"])
        assert out.exit_code == 2 and f"is in use by another thalweg process (pid {holder.pid}" in out.output
        assert time.monotonic() - t0 < 30 and not (run / "config.toml").exists()  # at once
        out = CliRunner().invoke(app, ["resume", str(run)])
        assert out.exit_code == 2  # resume is refused too (here: no config.toml yet)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert json.loads((run / ".lock").read_text())["pid"] == holder.pid  # left by the dead process
    capsys.readouterr()
    res = fit(cfg, quiet=True)  # the stale lock is taken over
    assert res.run_dir == run and res.stopped == "completed"
    assert f"by pid {holder.pid} on {socket.gethostname()}" in capsys.readouterr().err
    assert not (run / ".lock").exists()  # released at the end


def _three_epochs(tmp_path: Path) -> Any:
    res = fit(tiny(tmp_path), quiet=True)
    run = res.run_dir
    best, prev = load_checkpoint(run / "best.pt"), load_checkpoint(run / "best.prev.pt")
    assert best["step"] == res.best_step > prev["step"] >= 20  # two generations of best
    return res, best, prev


def test_a_truncated_best_pt_is_recovered_at_resume(tmp_path: Path) -> None:
    """Regression: a truncated best.pt made every resume train to the end and crash in finish()."""
    res, best, prev = _three_epochs(tmp_path)
    run = res.run_dir
    (run / "checkpoints" / f"step_{res.steps:08d}.pt").unlink()  # interrupted before the end
    (run / "best.pt").write_bytes((run / "best.pt").read_bytes()[:500])
    again = fit(resume=run, quiet=True)
    assert any(f"restored best.pt from best.prev.pt (step {prev['step']})" in w for w in again.warnings)
    assert again.steps == res.steps and again.test_accuracy == res.test_accuracy
    now = load_checkpoint(run / "best.pt")
    assert now["step"] == best["step"] and all(torch.equal(now["model"][k], v) for k, v in best["model"].items())


def test_a_deleted_best_pt_is_rebuilt_not_reported_as_null(tmp_path: Path) -> None:
    """Regression: with best.pt deleted, resume ended with exit 0 and test_accuracy null."""
    res, best, _ = _three_epochs(tmp_path)
    (res.run_dir / "best.pt").unlink()
    (res.run_dir / "best.prev.pt").unlink()
    again = fit(resume=res.run_dir, quiet=True)
    assert any(f"rebuilt best.pt from step_{best['step']:08d}.pt" in w for w in again.warnings)
    assert again.test_accuracy == res.test_accuracy is not None and again.best_step == best["step"]


def test_starting_over_never_replaces_a_better_best_pt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: with every checkpoint corrupt, 'starting from scratch' overwrote a valid
    best.pt with the first epoch's model."""
    res, best, _ = _three_epochs(tmp_path)
    run = res.run_dir
    for p in (run / "checkpoints").glob("step_*.pt"):
        p.write_bytes(p.read_bytes()[:300])
    real = validation.eval_and_keep_best

    def eval_then_crash(tr: Trainer, rec: dict[str, Any]) -> None:
        real(tr, rec)
        raise KeyboardInterrupt  # the restart dies after its first evaluation

    monkeypatch.setattr(validation, "eval_and_keep_best", eval_then_crash)
    with pytest.raises(KeyboardInterrupt):
        fit(resume=run, quiet=True)
    now = load_checkpoint(run / "best.pt")
    assert (now["step"], now["value"]) == (best["step"], best["value"])
    assert sorted(p.name for p in (run / "checkpoints" / "unusable").iterdir()) == [
        "step_00000020.pt", "step_00000040.pt", "step_00000060.pt"]  # kept, out of the way
    assert read_metrics(run / "metrics.before-restart.jsonl")[-1]["event"] == "final"


def test_load_run_falls_back_to_the_newest_good_checkpoint(tmp_path: Path) -> None:
    res = fit(tiny(tmp_path, train={"epochs": 1}), quiet=True)
    run = res.run_dir
    (run / "best.pt").write_bytes(b"not a checkpoint")
    torch.manual_seed(5)
    expect = torch.rand(3)
    torch.manual_seed(5)
    with pytest.warns(UserWarning, match=r"best.pt cannot be read.*; using step_00000020.pt instead"):
        loaded = load_run(run)
    assert torch.equal(torch.rand(3), expect)  # the caller's random stream is untouched
    assert loaded.checkpoint.name == "step_00000020.pt" and loaded.warnings
    with pytest.raises(CheckpointError, match=r"best\.pt cannot be read") as e:
        load_run(run / "best.pt")  # asked for that file: never silently another one
    assert isinstance(e.value, ValueError)  # the commands report ValueErrors in one line
    for p in (run / "checkpoints").glob("*.pt"):
        p.write_bytes(b"")
    out = CliRunner().invoke(app, ["landscape", str(run), "--resolution", "3", "--samples", "8",
                                   "-o", str(tmp_path / "o")])
    assert out.exit_code == 2 and "has no loadable model" in out.output
    assert "Traceback" not in out.output


def _edit_config(run: Path, section: str, key: str, value: Any) -> None:
    d = tomllib.loads((run / "config.toml").read_text())
    d[section][key] = value
    (run / "config.toml").write_text(tomli_w.dumps(d))


def test_resume_refuses_an_edited_config_and_records_an_allowed_change(tmp_path: Path) -> None:
    """Regression: an lr edited in config.toml was used silently on resume."""
    res = fit(tiny(tmp_path, train={"epochs": 1}), quiet=True)
    run = res.run_dir
    _edit_config(run, "optimizer", "lr", 0.02)
    with pytest.raises(ConfigChangedError, match=r"in 1 field\(s\): \[optimizer\] lr: 0.01 -> 0.02") as e:
        fit(resume=run, quiet=True)
    assert e.value.changes == {"optimizer.lr": (0.01, 0.02)}
    out = CliRunner().invoke(app, ["resume", str(run), "--quiet"])
    assert out.exit_code == 2 and "--allow-config-change" in out.output
    out = CliRunner().invoke(app, ["resume", str(run), "--quiet", "--allow-config-change"])
    assert out.exit_code == 0, out.output
    ev = [r for r in read_metrics(run) if r.get("event") == "config_change"]
    assert ev == [{"event": "config_change", "step": 20, "checkpoint": "step_00000020.pt",
                   "changes": {"optimizer.lr": [0.01, 0.02]}}]


def test_incompatible_checkpoints_are_skipped_like_damaged_ones(tmp_path: Path) -> None:
    """Regression: a checkpoint of another model, or one missing keys, crashed the resume."""
    res = fit(tiny(tmp_path, train={"epochs": 2}), quiet=True)
    run, ck = res.run_dir, res.run_dir / "checkpoints"
    (ck / "step_00000040.pt").unlink()  # the run was interrupted after step 20
    other = fit({**tiny(tmp_path, model={"width": 8}, train={"epochs": 1}), "name": "o"}, quiet=True)
    shutil.copy(other.run_dir / "checkpoints" / "step_00000020.pt", ck / "step_00000030.pt")
    st = load_checkpoint(ck / "step_00000020.pt")
    del st["optimizer"]
    save_checkpoint(st, ck / "step_00000025.pt")
    again = fit(resume=run, quiet=True)
    assert again.steps == 40 and again.test_accuracy == res.test_accuracy
    text = "\n".join(again.warnings)
    assert ("skipped incompatible checkpoint step_00000030.pt: its net.1.weight is (8, 64), the "
            "model's is (32, 64): it was written for another model") in text
    assert "skipped incompatible checkpoint step_00000025.pt: it lacks ['optimizer']" in text
    assert sorted(p.name for p in (ck / "unusable").iterdir()) == ["step_00000025.pt", "step_00000030.pt"]


def test_a_model_whose_val_loss_is_not_finite_is_never_best(tmp_path: Path) -> None:
    """Regression: a model with NaN val_loss was kept as best on its val_accuracy."""
    npz = _digits_npz(tmp_path, huge_rows=0)
    with np.load(npz) as z:
        x, y = z["x"].copy(), z["y"]
    from thalweg.data import load_dataset

    marker = tmp_path / "marker.npz"  # which rows land in the validation split
    np.savez(marker, x=np.arange(len(x), dtype=np.float64)[:, None] + np.zeros((1, 2)), y=y)
    x[load_dataset("npz", path=str(marker)).x_val[:1, 0].long().tolist()] = 3e38
    np.savez(npz, x=x, y=y)
    res = fit(tiny(tmp_path, data={"name": "npz", "options": {"path": str(npz)}, "standardize": False},
                   train={"epochs": 2}), quiet=True)
    vals = [r for r in read_metrics(res.run_dir) if "val_accuracy" in r and "event" not in r]
    assert vals and all(r["val_loss"] is None and r["val_accuracy"] > 0.5 for r in vals)
    assert res.best_value is None and res.best_step == -1 and not (res.run_dir / "best.pt").exists()
    assert any("test metrics are of the final weights" in w for w in res.warnings)


def test_metrics_and_summary_are_strict_json(tmp_path: Path) -> None:
    """Regression: metrics.jsonl and summary.json held bare NaN/Infinity."""
    npz = _digits_npz(tmp_path, huge_rows=1)  # one inf loss per epoch
    res = fit(tiny(tmp_path, data={"name": "npz", "options": {"path": str(npz)}, "standardize": False},
                   train={"epochs": 1}), quiet=True)

    def strict(text: str) -> Any:
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))

    recs = [strict(ln) for ln in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    ev = [r for r in recs if r.get("event") == "nonfinite"]
    assert len(ev) == 1 and ev[0]["loss"] is None and ev[0]["what"] == "loss"
    assert strict((res.run_dir / "summary.json").read_text())["skipped_steps"] == 1
    assert read_metrics(res.run_dir) == recs
