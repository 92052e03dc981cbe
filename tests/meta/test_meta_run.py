"""`thalweg meta` runs: the run directory, the adaptation table in summary.json, figures, the
report, no silent overwrite — and a real process SIGKILLed mid-run (inside an atomic write, then
mid-phase) resumes to a state bitwise identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import tomli_w
import torch

from thalweg.train import load_checkpoint, read_metrics
from thalweg.train.meta_run import run_meta

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
    recs = read_metrics(root)
    assert [r["iteration"] for r in recs if r["method"] == "maml" and "val_mse" in r] == [5, 10, 12]
    with pytest.raises(FileExistsError, match="already holds a run"):
        run_meta(cfg, quiet=True)
    cfg["meta"]["figures"] = False
    again = run_meta(cfg, quiet=True, overwrite=True)
    assert again.summary["adaptation"] == summary["adaptation"]  # same seed, same table


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
    assert sorted(c.name for c in (run / "checkpoints").iterdir())[-1] == "step_00000016.pt"
    # 3. resumed mid-Reptile to the end
    run_meta(resume=run, quiet=True)
    a, b = final(run), final(ref)
    for key in ("best_weights", "final_weights", "meta"):
        assert same_tensors({k: v for k, v in a[key].items() if k != "seconds"},
                            {k: v for k, v in b[key].items() if k != "seconds"}), key
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])

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
