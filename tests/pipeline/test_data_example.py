"""docs/data.md's example works as written: examples/csv_regression.toml reads
examples/data/my_table.csv into a standardized regression run, and the table's generator
rewrites the shipped file byte for byte."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def test_example_table_is_what_its_generator_writes(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("make_my_table", ROOT / "examples/data/make_my_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.main(tmp_path / "t.csv")
    assert out.read_bytes() == (ROOT / "examples/data/my_table.csv").read_bytes()


def test_csv_example_config_builds_a_regression_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from thalweg.train import build_run, load_config

    monkeypatch.chdir(ROOT)  # the config's path is relative to the repository root, as documented
    parts = build_run(load_config(ROOT / "examples/csv_regression.toml"), device="cpu")
    s = parts.splits
    assert s.task == "regression" and s.feature_names == ("area_m2", "rooms", "age_years", "distance_km")
    assert (len(s.x_train), len(s.x_val), len(s.x_test)) == (280, 60, 60)
    assert s.y_train.shape == (280, 1)
    assert torch.allclose(s.x_train.mean(0), torch.zeros(4), atol=1e-5)  # standardized on the train split
    assert parts.best_metric == "val_loss"
