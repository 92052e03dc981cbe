"""The generator behind the doctor's reported accuracy (benchmarks/doctor_zoo.py): a seed draws
the same base and fault every time, the sick run differs from its base only by a fault whose
cause the doctor knows, and the report counts top-1, top-3 and false alarms as docs/doctor.md
says. No training here: the zoo's runs are the benchmark's."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import doctor_faults as F
import doctor_zoo_report as R

from thalweg.diagnose import ROOT_CAUSES


@pytest.mark.parametrize("fault", F.FAULTS)
def test_a_seed_draws_the_same_fault_into_the_same_base(fault: str, tmp_path: Path) -> None:
    seed = 3 * len(F.FAULTS) + F.FAULTS.index(fault)  # a tuning seed of this fault
    a, b = F.draw(seed, tmp_path), F.draw(seed, tmp_path)
    assert a.fault == fault and a.expected in ROOT_CAUSES
    assert (a.base, a.sick) == (b.base, b.sick)
    assert a.sick != a.base
    assert F.draw(seed, tmp_path, attempt=1).base != a.base  # a redrawn base is another base


def _case(seed: int, fault: str) -> dict:
    return {"seed": seed, "fault": fault, "expected": F.EXPECTED[fault], "hurts": True,
            "sick": {"run_dir": f"sick-{seed}"}, "base": {"run_dir": f"base-{seed}", "failed": False}}


def test_the_report_counts_top1_top3_the_confusion_and_false_alarms() -> None:
    cases = [_case(0, "lr_too_high"), _case(1, "lr_too_high"), _case(2, "init_too_small"),
             {"seed": 3, "fault": "lr_too_low", "hurts": False}]
    now = {"sick-0": {"codes": ["LR_TOO_HIGH", "DEAD_UNITS"]},
           "sick-1": {"codes": ["DEAD_UNITS", "PLATEAU", "LR_TOO_HIGH"]},  # second place: top-3 only
           "sick-2": {"codes": ["VANISHING_GRADIENTS"]}}  # a symptom: right only for the old doctor, leniently
    healthy = {"base-0": {"warnings": []}, "base-1": {"warnings": ["OVERFITTING"]}, "base-2": {"warnings": []}}
    rec, _ = R.report(cases, {"at-old": now, "new": now}, ["at-old", "new"], {"at-old": healthy, "new": healthy})
    f = rec["figures"]
    assert f["sick_runs"] == 3 and f["did_not_hurt"] == 1
    assert f["now.top1"] == pytest.approx(100 / 3) and f["now.top3"] == pytest.approx(200 / 3)
    assert f["now.lr_too_high.top1"] == 50 and f["now.init_too_small.top1"] == 0
    assert f["before.lenient.top1"] == pytest.approx(200 / 3)  # VANISHING_GRADIENTS counted for the old doctor
    assert f["now.false_alarms"] == 1 and f["now.healthy_runs"] == 3
    conf = {r[0]: r[1:] for r in rec["tables"]["confusion"]["rows"]}
    head = rec["tables"]["confusion"]["header"][1:]
    assert dict(zip(head, conf["lr_too_high"], strict=True)) == {"LR_TOO_HIGH": "1", "DEAD_UNITS": "1",
                                                                 "VANISHING_GRADIENTS": "·"}
