"""Nothing a user made is lost by resuming: `thalweg resume` of a finished run rewrites
report.html, and the sections `thalweg doctor` and `thalweg inspect` put there come back."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from thalweg.cli import app
from thalweg.diagnose.html import read_sections
from thalweg.train import fit
from thalweg.train.report import QUICK_NOTE


def _ok(args: list[str]) -> str:
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return res.output


@pytest.mark.slow
def test_resume_of_a_finished_run_keeps_the_doctor_and_inspect_sections(tmp_path: Path) -> None:
    cfg = {"name": "tiny", "out_dir": str(tmp_path), "data": {"name": "digits"},
           "model": {"name": "mlp", "width": 16, "depth": 2},
           "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}, "schedule": {"name": "constant"},
           "train": {"epochs": 2, "batch_size": 64, "num_threads": 1}}
    run = fit(cfg, quiet=True).run_dir
    report = run / "report.html"
    assert QUICK_NOTE.split(";")[0] in report.read_text()  # the trainer's own quick findings
    _ok(["inspect", str(run)])
    _ok(["doctor", str(run)])
    before = read_sections(report.read_text())
    assert set(before) == {"doctor", "inspect"}
    assert QUICK_NOTE.split(";")[0] not in before["doctor"]  # the doctor's full diagnosis replaced them

    _ok(["resume", str(run)])
    page = report.read_text()
    after = read_sections(page)
    assert after == before  # both sections, word for word, in the same order
    assert page.index("</h1>") < page.index("thalweg-doctor:start") < page.index("thalweg-inspect:start") \
        < page.index("Final numbers")
    assert page.count("thalweg-doctor:start") == 1
