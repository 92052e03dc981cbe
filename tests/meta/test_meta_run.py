"""`thalweg meta` runs: the run directory, the adaptation table in summary.json, figures, the
report, no silent overwrite — and a real process SIGKILLed mid-run (inside an atomic write, then
mid-phase) resumes to a state bitwise identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w
import torch
from typer.testing import CliRunner

from thalweg.cli import app
from thalweg.meta.run import run_meta
from thalweg.train import ConfigChangedError, ConfigError, load_checkpoint, read_metrics

ITERS = 12  # per method; 2 methods -> 24 steps


def config(out_dir: Path) -> dict[str, Any]:
    """Dropout in the model (vmap draws different masks per task): every RNG stream matters."""
    return {
        "name": "m", "out_dir": str(out_dir),
        "task": {"name": "sinusoid", "k_shot": 5, "k_query": 5},
        "model": {"name": "mlp", "width": 8, "depth": 2, "dropout": 0.1},
        "outer": {"name": "adam", "lr": 0.01},
        "meta": {"methods": ["maml", "reptile"], "iterations": ITERS, "meta_batch": 4, "log_every": 3,
                 "eval_every": 5, "checkpoint_every": 4, "val_tasks": 8, "test_tasks": 10,
                 "adapt_steps": 3, "fit_tasks": 2},
        "overrides": {"reptile": {"inner_steps": 2}},
    }


def files(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_run_directory_summary_figures_and_no_silent_overwrite(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    cfg["meta"]["methods"] = ["maml", "reptile", "scratch"]
    res = run_meta(cfg, quiet=True)
    root = res.run_dir
    summary = json.loads((root / "summary.json").read_text())
    assert summary["metric"] == "query_mse" and summary["test_tasks"] == 10
    assert list(summary["adaptation"]) == ["maml", "reptile", "scratch"]
    for row in summary["adaptation"].values():
        assert list(row) == ["steps", "mean", "ci95"] and row["steps"] == [0, 1, 2, 3]
        assert len(row["mean"]) == len(row["ci95"]) == 4 and all(c > 0 for c in row["ci95"])
    for name in ("adaptation", "fits", "meta_training"):
        assert (root / "figures" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "query_mse" in (root / "report.html").read_text()
    best = load_checkpoint(root / "best.pt")
    assert set(best["methods"]) == {"maml", "reptile"}  # scratch is never trained, so never "best"
    assert best["best"]["maml"]["iteration"] in (5, 10, 12)
    prev = load_checkpoint(root / "best.prev.pt")  # the generation before, as the trainer keeps
    assert set(prev["best"]) <= set(best["best"]) and prev["best"] != best["best"]
    recs = read_metrics(root)
    assert [r["iteration"] for r in recs if r["method"] == "maml" and "val_mse" in r] == [5, 10, 12]
    before = files(root)
    cfg["meta"]["figures"] = False
    second = run_meta(cfg, quiet=True)  # as `thalweg train`: a fresh name, said, the old run untouched
    assert second.run_dir == root.with_name("m-2") and files(root) == before
    assert any(f"{root} holds a run, so this one is {second.run_dir}" in w for w in second.warnings)
    assert tomllib.loads((second.run_dir / "config.toml").read_text())["name"] == "m-2"
    assert second.summary["adaptation"] == summary["adaptation"]  # same seed, same table
    again = run_meta(cfg, quiet=True, overwrite=True)
    assert again.run_dir == root and not root.with_name("m-3").exists()
    assert not (root / "figures").exists() and files(root) != before  # replaced, not mixed
    assert again.summary["adaptation"] == summary["adaptation"]


def cli(args: list[str], kill_at: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "THALWEG_KILL_AT": kill_at}
    return subprocess.run([sys.executable, "-m", "thalweg.cli", "meta", *args, "--quiet"],
                          env=env, capture_output=True, text=True, timeout=180)


def final(run: Path) -> dict[str, Any]:
    last = sorted((run / "checkpoints").glob("step_*.pt"))[-1]
    assert last.name == f"step_{2 * ITERS:08d}.pt"
    return load_checkpoint(last)


def same_tensors(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_tensors(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same_tensors(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.slow
def test_killed_twice_then_resumed_is_bitwise_identical(tmp_path: Path) -> None:
    def no_figures(out: Path) -> dict[str, Any]:
        c = config(out)
        c["meta"]["figures"] = False
        return c

    ref = run_meta(no_figures(tmp_path / "ref"), quiet=True).run_dir
    cfg = tmp_path / "c.toml"
    cfg.write_text(tomli_w.dumps(no_figures(tmp_path / "runs")))
    run = tmp_path / "runs" / "m"
    # 1. dies inside its 3rd atomic write: best.pt after the evaluation at step 5 (temp written,
    #    not renamed); the newest checkpoint is then step 4, in the middle of the MAML phase
    p = cli([str(cfg)], kill_at="save:3")
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert sorted(c.name for c in (run / "checkpoints").iterdir()) == ["step_00000000.pt", "step_00000004.pt"]
    assert list(run.glob(".best.pt.tmp-*")) and not (run / "best.pt").exists()
    # 2. resumed mid-phase (RNG, Adam state, metrics window restored); dies in the Reptile
    #    phase 3 steps after its checkpoint at step 16
    p = cli(["--resume", str(run)], kill_at="step:19")
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert "from step_00000004.pt (step 4)" in p.stderr and not list(run.glob(".best.pt.tmp-*"))
    assert "took over the lock left in" in p.stderr  # the killed process's lock
    assert sorted(c.name for c in (run / "checkpoints").iterdir())[-1] == "step_00000016.pt"
    # 3. resumed mid-Reptile to the end, by `thalweg resume RUN` (it knows a meta run)
    out = CliRunner().invoke(app, ["resume", str(run), "--quiet"])
    assert out.exit_code == 0, out.output
    a, b = final(run), final(ref)
    for key in ("best_weights", "final_weights", "meta"):
        assert same_tensors({k: v for k, v in a[key].items() if k != "seconds"},
                            {k: v for k, v in b[key].items() if k != "seconds"}), key
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    for name in ("best.pt", "best.prev.pt"):  # both generations as if never killed
        x, y = load_checkpoint(run / name), load_checkpoint(ref / name)
        assert x["best"] == y["best"] and same_tensors(x["methods"], y["methods"]), name

    def strip(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in recs]

    assert strip(read_metrics(run)) == strip(read_metrics(ref))
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (run, ref))
    assert sa["adaptation"] == sb["adaptation"] and sa["best"] == sb["best"]


def test_a_diverging_meta_loss_stops_with_a_message(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    cfg["inner"] = {"lr": 1e6}  # the adapted weights overflow: every meta-loss is inf or nan
    cfg["meta"]["methods"] = ["maml"]
    with pytest.raises(FloatingPointError, match="maml: the meta-loss or meta-gradient was non-finite 10 times"):
        run_meta(cfg, quiet=True)
    events = [r for r in read_metrics(tmp_path / "m") if r.get("event") == "nonfinite"]
    assert [e["iteration"] for e in events] == list(range(1, 11))


HOLDER = ("import sys, time; from thalweg.train import RunLock; RunLock(sys.argv[1]).acquire(); "
          "print('locked', flush=True); time.sleep(120)")


@pytest.mark.slow
def test_a_locked_meta_run_fails_at_once_naming_the_holder_and_a_run_is_never_replaced(
        tmp_path: Path) -> None:
    c = config(tmp_path / "runs")
    c["meta"]["figures"] = False
    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps(c))
    run = tmp_path / "runs" / "m"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"locked"
        t0 = time.monotonic()
        out = CliRunner().invoke(app, ["meta", str(path), "--quiet"])
        assert out.exit_code == 2, out.output
        assert f"is in use by another thalweg process (pid {holder.pid} on {socket.gethostname()}" in out.output
        assert time.monotonic() - t0 < 30 and not (run / "config.toml").exists()  # at once, nothing written
        out = CliRunner().invoke(app, ["meta", "--resume", str(run), "--quiet"])
        assert out.exit_code == 2  # resume is refused too (here: no config.toml yet)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    out = CliRunner().invoke(app, ["meta", str(path), "--quiet"])  # the dead holder's lock is taken over
    assert out.exit_code == 0 and f"by pid {holder.pid} on {socket.gethostname()}" in out.output
    assert f"run: {run} " in out.output and not (run / ".lock").exists()
    before = files(run)
    out = CliRunner().invoke(app, ["meta", str(path), "--quiet"])
    assert out.exit_code == 0 and f"{run} holds a run, so this one is {run.with_name('m-2')}" in out.output
    assert files(run) == before  # not one byte of the existing run changed
    out = CliRunner().invoke(app, ["meta", "--resume", str(run), "--overwrite"])
    assert out.exit_code == 2 and "takes the config from the run directory" in out.output


def test_resume_rebuilds_a_damaged_best_pt_and_refuses_an_edited_config(tmp_path: Path) -> None:
    c = config(tmp_path)
    c["meta"].update(methods=["maml"], figures=False)
    run = run_meta(c, quiet=True).run_dir
    best = load_checkpoint(run / "best.pt")
    (run / "best.pt").write_bytes((run / "best.pt").read_bytes()[:100])  # torn by a disk fault
    res = run_meta(resume=run, quiet=True)
    assert any("best.pt is damaged" in w for w in res.warnings)
    assert any("rebuilt best.pt from the checkpoint" in w for w in res.warnings)
    again = load_checkpoint(run / "best.pt")
    assert again["best"] == best["best"] and same_tensors(again["methods"], best["methods"])
    text = (run / "config.toml").read_text()
    (run / "config.toml").write_text(text.replace("meta_batch = 4", "meta_batch = 5"))
    with pytest.raises(ConfigChangedError, match=r"\[meta\] meta_batch: 4 -> 5"):
        run_meta(resume=run, quiet=True)
    (run / "config.toml").write_bytes(b"name = \"m\"\n\xff\n")
    with pytest.raises(ConfigError, match="not UTF-8 text"):  # one clear error, as `thalweg train`
        run_meta(resume=run, quiet=True)
