"""Labels the trainer checks before it trains (the doctor's LABEL_PROBLEMS rule, said up
front): one class is refused naming the data (nothing to classify; before: accuracy 1.0 and
exit 0), 180 classes in 400 rows are trained with a warning that names the likely cause."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from thalweg.train import ConfigError, fit


def _csv(path: Path, n: int, label) -> Path:
    rng = random.Random(0)
    path.write_text("a,b,label\n" + "".join(f"{rng.random()},{rng.random()},{label(i)}\n" for i in range(n)))
    return path


def _cfg(tmp_path: Path, csv: Path) -> dict:
    return {"name": "l", "out_dir": str(tmp_path / "runs"), "data": {"name": "csv", "options": {"path": str(csv)}},
            "train": {"epochs": 1}, "diagnostics": {"figures": False, "report": False}}


def test_one_class_is_refused(tmp_path: Path) -> None:
    csv = _csv(tmp_path / "one.csv", 100, lambda i: "cat")
    with pytest.raises(ConfigError, match=r"\[data\] name = 'csv': the labels hold 1 class \('cat'\): there is nothing to classify"):
        fit(_cfg(tmp_path, csv), quiet=True)
    assert not (tmp_path / "runs" / "l").exists()


def test_180_classes_in_400_rows_train_with_a_warning(tmp_path: Path) -> None:
    csv = _csv(tmp_path / "many.csv", 400, lambda i: f"id{i % 180}")
    res = fit(_cfg(tmp_path, csv), quiet=True)
    assert any("class(es) have fewer than 5 training examples" in w for w in res.warnings), res.warnings
    assert any("180 classes for 280 training examples" in w and "regression" in w for w in res.warnings)
