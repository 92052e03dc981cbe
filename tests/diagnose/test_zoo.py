"""The sick-run zoo: each `examples/sick/*.toml`, trained briefly, gets its expected code ranked
first (the healthy control: no warning-level finding), and the verified treatment improves the
metric on the same data and budget. The reduced budgets here keep CI fast; the full zoo with
each run's own budget is `python examples/sick/zoo.py`."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

ZOO = Path(__file__).resolve().parents[2] / "examples" / "sick"
# epochs per member in CI (None: the config's own); the rest train 3 epochs
BUDGET: dict[str, int | None] = {"overfitting": None, "underfitting": None, "small_batch_norm": 1,
                                 "little_data": None, "noisy_labels": None, "over_regularized": None}
UNTREATABLE = {"healthy", "label_imbalance", "noisy_labels"}
#: the cause is the data: the config treatment can only regularize, and says so when it does not help
DATA_CAUSED = {"little_data"}


def _zoo() -> Any:
    spec = importlib.util.spec_from_file_location("sick_zoo", ZOO / "zoo.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


zoo = _zoo()


def test_every_cause_has_a_zoo_member() -> None:
    from thalweg.diagnose import ROOT_CAUSES

    codes = {zoo.expected(p) for p in zoo.members()}
    assert codes == {*ROOT_CAUSES, "HEALTHY"}  # the symptoms (dead units, NaNs, a saddle) show under a cause
    assert set(BUDGET) | UNTREATABLE | DATA_CAUSED <= {p.stem for p in zoo.members()}


@pytest.mark.slow
@pytest.mark.parametrize("member", [p.stem for p in zoo.members()])
def test_zoo_member_is_diagnosed_first_and_its_treatment_verified(member: str, tmp_path: Path) -> None:
    epochs = BUDGET.get(member, 3)
    row = zoo.run_member(ZOO / f"{member}.toml", tmp_path, epochs=epochs, verify_epochs=epochs, rediagnose=False)
    if row["expected"] == "HEALTHY":
        assert row["warnings"] == [] and row["got"] == "HEALTHY", row
    else:
        assert row["got"] == row["expected"], row
    if member in UNTREATABLE:
        assert row["fix"] is None, row
        return
    assert row["fix"], row
    if member in DATA_CAUSED and not row["improved"]:
        assert "data" in row["why"], row  # the doctor says why a config change could not help
        return
    assert row["improved"] is True, row
    if row["before"] is not None:
        better = row["after"] > row["before"] if "accuracy" in row["metric"] else row["after"] < row["before"]
        assert better, row
