"""`thalweg train` under `torchrun --nproc_per_node 2` (gloo on CPU) matches one process with
the same global batch, writes from rank 0 only, and resumes after every rank was killed; with
`[distributed] strategy = "fsdp2"` it shards the model, checkpoints through DCP, and a run
whose rank 1 was killed inside a checkpoint, then (resumed) rank 0 after a step, resumes to
the uninterrupted run's bits."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import tomli_w
import torch

from thalweg.train import fit, read_metrics

STEPS = 2 * 12  # 720 training rows of MNIST-1D, global batch 64 → 12 batches per epoch


def config(out_dir: Path, optimizer: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": "d", "out_dir": str(out_dir),
        "data": {"name": "mnist1d", "options": {"num_samples": 1000}},
        "model": {"name": "mlp", "width": 32, "depth": 1},
        "optimizer": optimizer or {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "schedule": {"name": "cosine"},
        "regularization": {"label_smoothing": 0.1, "clip_norm": 1.0},
        "train": {"epochs": 2, "batch_size": 64, "num_threads": 1, "log_every": 4,
                  "checkpoint_every": 5},
        "diagnostics": {"figures": False, "report": False},
        "distributed": {"timeout_s": 60},  # a lost rank fails the others' collectives, never hangs them
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], kill_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    env.pop("THALWEG_KILL_AT", None)
    if kill_at:
        env["THALWEG_KILL_AT"] = kill_at
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "--max_restarts", "0",
           "-m", "thalweg.cli", "train", *args, "--quiet"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


def _killed_and_resumed(tmp_path: Path, cfg: dict[str, Any],
                        *kills: tuple[str, int]) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """Train `cfg` under torchrun, killed at each `(kill_at, kept)` in turn (the first run
    fresh, the next ones resumed; the checkpoint of step `kept` is the newest left, the next
    one 5 steps on is not), then resume it to the end."""
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text(tomli_w.dumps(cfg))
    run = tmp_path / "runs" / "d"
    for k, (kill_at, kept) in enumerate(kills):
        p = torchrun([str(cfg_path)] if k == 0 else ["--resume", str(run)], kill_at=kill_at)
        assert p.returncode != 0
        assert (run / "checkpoints" / f"step_{kept:08d}.pt").is_file()
        assert not (run / "checkpoints" / f"step_{kept + 5:08d}.pt").exists()
    p = torchrun(["--resume", str(run)])
    assert p.returncode == 0, p.stderr[-3000:]
    return run, p


@pytest.mark.parametrize("optimizer", [None, {"name": "muon", "lr": 0.02}], ids=["sgd", "muon-owners"])
def test_two_processes_match_one_and_resume(tmp_path: Path, optimizer: dict[str, Any] | None) -> None:
    # every rank SIGKILLs itself after step 13 (checkpoints at 0, 5, 10 exist), torchrun fails
    run, p = _killed_and_resumed(tmp_path, config(tmp_path / "runs", optimizer), ("step:13", 10))
    assert p.stdout.count("test accuracy: ") == 1  # rank 0 alone reports
    ddp = torch.load(run / "checkpoints" / f"step_{STEPS:08d}.pt", weights_only=True)["state"]
    assert ddp["world_size"] == 2 and len(ddp["ranks"]) == 2

    ref_cfg = config(tmp_path / "single", optimizer)
    one = fit(ref_cfg, quiet=True)
    assert one.steps == STEPS
    for name, p1 in one.model.state_dict().items():
        torch.testing.assert_close(ddp["model"][name], p1, rtol=1e-4, atol=1e-5)
    a = [r for r in read_metrics(run) if "event" not in r]
    b = [r for r in read_metrics(one.run_dir) if "event" not in r]
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        assert abs(ra["train_loss"] - rb["train_loss"]) < 1e-4
        assert ra["lr"] == rb["lr"]
    assert not list(run.glob("**/*.tmp-*"))


def _shards(run: Path, step: int) -> dict[str, Any]:
    """Model and optimizer of an FSDP2 checkpoint, read by one process (DCP reshards 2 → 1)."""
    import torch.distributed.checkpoint as dcp

    from thalweg.train.build import build_run
    from thalweg.train.config import load_config
    from thalweg.train.rundir.checkpoint import load_checkpoint

    cfg = load_config(run / "config.toml")
    parts = build_run(cfg, check_budget=False)
    st = load_checkpoint(run / "checkpoints" / f"step_{step:08d}.pt")
    assert st["model"] is None and st["sharded"]["files"]
    from torch.distributed.checkpoint.state_dict import get_state_dict

    msd, osd = get_state_dict(parts.model, parts.optimizer)
    state = {"model": msd, "optimizer": osd}
    dcp.load(state, checkpoint_id=str(run / "checkpoints" / st["sharded"]["dir"]))
    return {"trainer": st["trainer"], "loader": st["loader"], **state}


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        return {k2: v2 for k, v in d.items() for k2, v2 in _flat(v, f"{prefix}{k}.").items()}
    if isinstance(d, list):
        return {k2: v2 for i, v in enumerate(d) for k2, v2 in _flat(v, f"{prefix}{i}.").items()}
    return {prefix: d}


@pytest.mark.slow
def test_fsdp2_trains_is_killed_on_either_rank_and_resumes_bitwise(tmp_path: Path) -> None:
    opt = {"name": "adamw", "lr": 0.01}  # the flat core over the shards (matrix rules: the optim tests)
    cfg = config(tmp_path / "runs", opt)
    cfg["distributed"]["strategy"] = "fsdp2"
    # rank 1 is SIGKILLed inside the 3rd checkpoint (step 10), its shards written, not renamed;
    # resumed from step 5, rank 0 (the one writing step files) is SIGKILLed after step 17
    run, _ = _killed_and_resumed(tmp_path, cfg, ("shards:3@1", 5), ("step:17@0", 15))
    assert not list((run / "checkpoints").glob(".*tmp*"))
    cfg2 = {**cfg, "name": "whole"}
    cfg2_path = tmp_path / "c2.toml"
    cfg2_path.write_text(tomli_w.dumps(cfg2))
    p = torchrun([str(cfg2_path)])
    assert p.returncode == 0, p.stderr[-3000:]
    whole = tmp_path / "runs" / "whole"
    a, b = _shards(run, STEPS), _shards(whole, STEPS)
    fa, fb = _flat(a), _flat(b)
    assert fa.keys() == fb.keys()
    for k, v in fa.items():  # weights, optimizer state, counters: the same bits
        if isinstance(v, torch.Tensor):
            assert torch.equal(v, fb[k]), k
        elif k.split(".")[0] in ("model", "optimizer", "loader"):
            assert v == fb[k], k
    ra = [r for r in read_metrics(run) if "event" not in r]
    rb = [r for r in read_metrics(whole) if "event" not in r]
    assert [(r["step"], r["train_loss"]) for r in ra] == [(r["step"], r["train_loss"]) for r in rb]
    one = fit(config(tmp_path / "single", opt), quiet=True)  # and one process, to rounding
    for name, p1 in one.model.state_dict().items():
        torch.testing.assert_close(a["model"][name], p1, rtol=1e-4, atol=1e-5)


def test_the_strategy_is_checked_and_fsdp2_refuses_what_cannot_run_sharded() -> None:
    from thalweg.optim import registry
    from thalweg.train import fsdp
    from thalweg.train.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match=r"\[distributed\] strategy = 'zero': Input should be 'ddp' or 'fsdp2'"):
        parse_config({"distributed": {"strategy": "zero"}})
    with pytest.raises(ConfigError, match=r"\[distributed\] timeout_s"):
        parse_config({"distributed": {"timeout_s": 0}})
    from thalweg.train.rundir.resume import config_hash

    # how long a collective may wait changes nothing computed: a run resumes with another timeout
    assert config_hash(parse_config({"distributed": {"timeout_s": 30}})) == config_hash(parse_config({}))
    sharded = {"distributed": {"strategy": "fsdp2"}}
    for extra, field in (({"diagnostics": {"monitors": True}}, "monitors"),
                         ({"diagnostics": {"curvature_every": 4}}, "curvature_every")):
        with pytest.raises(ConfigError, match=field) as e:
            fsdp.check(parse_config({**sharded, **extra}), registry.get("adamw"))
        assert e.value.section == "diagnostics" and e.value.field == field
    with pytest.raises(ConfigError, match='strategy = "ddp"') as e:
        fsdp.check(parse_config(sharded), registry.get("kfac"))
    assert e.value.field == "name"


def test_a_rollback_judges_an_fsdp2_step_file_by_its_validation_alone(tmp_path: Path) -> None:
    """An FSDP2 step file holds no weights ("model": None, they are in the DCP shards): the
    rollback's health check reads the validation history instead of failing on them."""
    from types import SimpleNamespace

    from thalweg.train.loop import Trainer

    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 5, "val_loss": 1.0}\n{"step": 10, "val_loss": null}\n')
    tr = SimpleNamespace(paths=SimpleNamespace(metrics=metrics))
    assert Trainer._healthy(tr, {"model": None, "trainer": {"step": 5}}) is None
    assert "validation loss was None" in str(Trainer._healthy(tr, {"model": None, "trainer": {"step": 10}}))
