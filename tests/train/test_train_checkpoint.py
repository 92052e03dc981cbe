"""Checkpoints: atomic, checksummed, loaded without executing code, damaged ones skipped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from thalweg.train.rundir.checkpoint import (
    CheckpointError,
    CheckpointManager,
    content_digest,
    load_checkpoint,
    save_checkpoint,
)
from thalweg.train.rundir.state import capture_rng, restore_rng


def _state(seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"model": {"w": torch.randn(64, 32, generator=g), "b": torch.zeros(32)},
            "step": seed, "nested": [1, (2.5, "x")], "flag": None}


def test_round_trip_and_plain_torch_load(tmp_path: Path) -> None:
    st = _state(3)
    path = save_checkpoint(st, tmp_path / "c.pt")
    back = load_checkpoint(path)
    assert torch.equal(back["model"]["w"], st["model"]["w"]) and back["step"] == 3
    raw = torch.load(path, weights_only=True)  # a plain torch file, readable without thalweg
    assert raw["format"] == "thalweg-checkpoint-2" and raw["sha256"] == content_digest(st)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left behind


def test_digest_sees_one_changed_bit() -> None:
    a = _state(1)
    b = _state(1)
    b["model"]["w"].view(torch.int32)[5, 7] ^= 1
    assert content_digest(a) != content_digest(b)
    assert content_digest(a) == content_digest(_state(1))


def test_bit_flip_in_tensor_data_is_detected(tmp_path: Path) -> None:
    st = _state(2)
    path = save_checkpoint(st, tmp_path / "c.pt")
    data = bytearray(path.read_bytes())
    needle = st["model"]["w"].reshape(-1)[100:104].numpy().tobytes()
    i = bytes(data).index(needle)
    data[i] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt: checksum"):
        load_checkpoint(path)


def test_code_in_a_checkpoint_is_never_executed(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pt"
    torch.save({"format": "thalweg-checkpoint-2", "sha256": "", "state": Evil()}, path)
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


def test_manager_keeps_last_n_and_falls_back_past_damage(tmp_path: Path) -> None:
    mgr = CheckpointManager(tmp_path / "ck", keep=3)
    for step in (0, 10, 20, 30, 40):
        mgr.save(_state(step), step)
    assert [p.name for p in mgr.paths()] == ["step_00000020.pt", "step_00000030.pt", "step_00000040.pt"]
    newest = mgr.paths()[-1]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # truncated by a power cut
    with pytest.warns(UserWarning, match="falling back"):
        path, st = mgr.load_latest()
    assert path.name == "step_00000030.pt" and st["step"] == 30
    assert mgr.skipped and mgr.skipped[0][0] == newest and "cannot be read" in mgr.skipped[0][1]


def test_missing_checkpoint_and_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")
    assert CheckpointManager(tmp_path / "empty").load_latest() is None


def test_rng_states_survive_a_weights_only_checkpoint(tmp_path: Path) -> None:
    import random

    import numpy as np

    gen = torch.Generator().manual_seed(5)
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    save_checkpoint({"rng": capture_rng({"g": gen})}, tmp_path / "r.pt")
    expect = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(2, generator=gen))
    torch.manual_seed(9), np.random.seed(9), random.seed(9), gen.manual_seed(9)
    restore_rng(load_checkpoint(tmp_path / "r.pt")["rng"], {"g": gen})
    got = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(2, generator=gen))
    assert torch.equal(got[0], expect[0]) and np.array_equal(got[1], expect[1])
    assert got[2] == expect[2] and torch.equal(got[3], expect[3])
