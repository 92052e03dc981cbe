"""Power cuts: real `thalweg train` processes SIGKILLed at several points (mid-epoch, inside a
checkpoint write, at the very end, and from outside at a random moment), resumed, end
bitwise identical to an uninterrupted run — also when the newest checkpoint is damaged."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import tomli_w
import torch

from thalweg.train import fit, read_metrics

STEPS = 60  # 3 epochs x 20 batches of digits


def config(out_dir: Path) -> dict[str, Any]:
    """Every random stream in play: shuffling, dropout, mixup; mid-epoch checkpoints."""
    return {
        "name": "r", "out_dir": str(out_dir),
        "data": {"name": "digits"},
        "model": {"name": "mlp", "width": 32, "depth": 1, "dropout": 0.2},
        "optimizer": {"name": "adamw", "lr": 0.01},
        "schedule": {"name": "warmup_cosine", "warmup_fraction": 0.1},
        "regularization": {"label_smoothing": 0.1, "clip_norm": 1.0, "mixup_alpha": 0.2},
        "train": {"epochs": 3, "batch_size": 64, "num_threads": 1, "log_every": 5,
                  "checkpoint_every": 7, "keep_checkpoints": 3},
        "diagnostics": {"figures": False, "report": False},
    }


def cli(args: list[str], kill_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("THALWEG_KILL_AT", None)
    if kill_at:
        env["THALWEG_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, "-m", "thalweg.cli", "train", *args, "--quiet"],
                          env=env, capture_output=True, text=True, timeout=120)


def final_state(run: Path) -> dict[str, Any]:
    last = sorted((run / "checkpoints").glob("step_*.pt"))[-1]
    assert last.name == f"step_{STEPS:08d}.pt"
    return torch.load(last, weights_only=True)["state"]


def assert_identical(run: Path, ref: Path) -> None:
    a, b = final_state(run), final_state(ref)
    for k in b["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for pid, st in b["optimizer"]["state"].items():
        for k, v in st.items():
            assert torch.equal(torch.as_tensor(a["optimizer"]["state"][pid][k]), torch.as_tensor(v))
    assert torch.equal(a["ranks"][0]["rng"]["torch"], b["ranks"][0]["rng"]["torch"])

    def strip(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in recs]

    assert strip(read_metrics(run)) == strip(read_metrics(ref))
    ba = torch.load(run / "best.pt", weights_only=True)["state"]
    bb = torch.load(ref / "best.pt", weights_only=True)["state"]
    assert ba["step"] == bb["step"] and all(torch.equal(ba["model"][k], bb["model"][k]) for k in bb["model"])


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ref")
    res = fit(config(out), quiet=True)
    assert res.steps == STEPS and res.stopped == "completed"
    return res.run_dir


def test_killed_at_several_points_then_resumed_is_bitwise_identical(reference: Path, tmp_path: Path) -> None:
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text(tomli_w.dumps(config(tmp_path / "runs")))
    run = tmp_path / "runs" / "r"
    # 1. dies inside its 2nd checkpoint write (step 7: temp file written, not yet renamed)
    p = cli([str(cfg_path)], kill_at="save:2")
    assert p.returncode == -signal.SIGKILL, p.stderr
    names = sorted(c.name for c in (run / "checkpoints").iterdir())
    assert names[0].startswith(".step_00000007.pt.tmp-") and names[1:] == ["step_00000000.pt"]
    # 2. resumed from step 0 (stale temp removed), dies mid-epoch 2 after the checkpoint at step 35
    p = cli(["--resume", str(run)], kill_at="step:37")
    assert p.returncode == -signal.SIGKILL, p.stderr
    names = sorted(c.name for c in (run / "checkpoints").iterdir())
    assert names == ["step_00000021.pt", "step_00000028.pt", "step_00000035.pt"]  # keep 3
    newest = run / "checkpoints" / "step_00000035.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # 3. and the power cut truncated the newest
    # 4. resumed: reports the damage, falls back to step 28, dies after the last epoch's checkpoint
    p = cli(["--resume", str(run)], kill_at=f"step:{STEPS}")
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert "skipped damaged checkpoint step_00000035.pt" in p.stderr
    assert "from step_00000028.pt (step 28)" in p.stderr
    # 5. resumed to the end (in-process: the CLI's own resume path ran above)
    res = fit(resume=run, quiet=True)
    assert res.steps == STEPS and res.stopped == "completed"
    assert_identical(run, reference)


def test_killed_from_outside_at_a_random_moment(reference: Path, tmp_path: Path) -> None:
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text(tomli_w.dumps(config(tmp_path / "runs")))
    run = tmp_path / "runs" / "r"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("THALWEG_KILL_AT", None)
    proc = subprocess.Popen([sys.executable, "-m", "thalweg.cli", "train", str(cfg_path), "--quiet"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (run / "checkpoints" / "step_00000000.pt").exists():
        time.sleep(0.02)
    time.sleep(random.Random().uniform(0.0, 0.6))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    res = fit(resume=run, quiet=True)
    assert res.steps == STEPS
    assert_identical(run, reference)
