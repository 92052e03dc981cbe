"""Low-precision optimizer state (int8 codes, bf16 with stochastic rounding) survives power
cuts as float32 state does: real `thalweg train` processes SIGKILLed at a checkpoint, between
checkpoints and from outside at a random moment, resumed, end bitwise identical to an
uninterrupted run."""

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
from test_train_resume import STEPS, assert_identical, cli
from test_train_resume import config as fp32_config

from thalweg.train import fit

#: (optimizer, state_dtype): int8's last block has padding past the last element; SGD keeps
#: no `step` of its own, yet bf16's stochastic rounding draws bits from the step count
CASES = [("adamw", "int8"), ("sgd", "bf16")]


def config(out_dir: Path, name: str, state_dtype: str) -> dict[str, Any]:
    cfg = fp32_config(out_dir)
    cfg["optimizer"] = {"name": name, "lr": 0.05 if name == "sgd" else 0.01, "state_dtype": state_dtype,
                        **({"momentum": 0.9} if name == "sgd" else {})}
    return cfg


@pytest.fixture(scope="module", params=CASES, ids=[f"{n}-{d}" for n, d in CASES])
def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, Path]:
    name, state_dtype = request.param
    res = fit(config(tmp_path_factory.mktemp("ref"), name, state_dtype), quiet=True)
    assert res.steps == STEPS and res.stopped == "completed"
    return name, state_dtype, res.run_dir


@pytest.mark.slow
def test_killed_at_and_between_checkpoints_then_resumed_is_bitwise_identical(case, tmp_path: Path) -> None:
    name, state_dtype, reference = case
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text(tomli_w.dumps(config(tmp_path / "runs", name, state_dtype)))
    run = tmp_path / "runs" / "r"
    p = cli([str(cfg_path)], kill_at="step:35")  # right after the checkpoint at step 35
    assert p.returncode == -signal.SIGKILL, p.stderr
    p = cli(["--resume", str(run)], kill_at="step:45")  # between checkpoints (42 and 49)
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert "(step 35)" in p.stderr
    res = fit(resume=run, quiet=True)
    assert res.steps == STEPS and res.stopped == "completed"
    assert_identical(run, reference)


@pytest.mark.slow
def test_killed_from_outside_at_a_random_moment(case, tmp_path: Path) -> None:
    name, state_dtype, reference = case
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text(tomli_w.dumps(config(tmp_path / "runs", name, state_dtype)))
    run = tmp_path / "runs" / "r"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("THALWEG_KILL_AT", None)
    proc = subprocess.Popen([sys.executable, "-m", "thalweg.cli", "train", str(cfg_path), "--quiet"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (run / "checkpoints" / "step_00000007.pt").exists():
        time.sleep(0.02)
    time.sleep(random.Random().uniform(0.0, 0.6))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    res = fit(resume=run, quiet=True)
    assert res.steps == STEPS
    assert_identical(run, reference)
