"""`thalweg doctor` on damaged runs (issue 24, item 6): one clear message each, never a
traceback, nothing of the run overwritten; a config.toml edited after training is not what the
doctor verifies; and `--probe` tells apart what the diagnosis left open."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from thalweg.cli import app
from thalweg.train import fit, load_config

pytestmark = pytest.mark.slow


def _sick(tmp_path: Path, name: str = "sym", **train: object) -> Path:
    """A small run with a symmetric init: the doctor has a treatment for it."""
    cfg = {"name": name, "out_dir": str(tmp_path), "data": {"name": "digits"},
           "model": {"name": "mlp", "width": 16, "depth": 1}, "init": {"rule": "constant", "value": 0.05},
           "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}, "schedule": {"name": "constant"},
           "train": {"epochs": 2, "batch_size": 64, "num_threads": 1, **train},
           "diagnostics": {"figures": False, "report": False}}
    return fit(cfg, quiet=True).run_dir


def _doctor(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, ["doctor", *args, "--no-curvature", "--no-figures"], env={"COLUMNS": "300"})
    assert res.exception is None or isinstance(res.exception, SystemExit), res.output
    assert "Traceback" not in res.output
    return res.exit_code, res.output


def test_treat_on_a_read_only_run_says_so_and_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = _sick(tmp_path)
    before = sorted(p.name for p in run.iterdir())
    real = Path.write_text

    def read_only(self: Path, *a: object, **k: object) -> int:
        if self.parent == run or run in self.parents:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "write_text", read_only)
    code, out = _doctor(str(run), "--treat")
    assert code == 4 and "cannot write the treatment next to the run" in out and "treated.toml" in out
    assert "nothing of the run was changed" in out
    monkeypatch.setattr(Path, "write_text", real)
    assert sorted(p.name for p in run.iterdir()) == before
    # the diagnosis alone still comes out when the report cannot be written
    monkeypatch.setattr(Path, "write_text", read_only)
    code, out = _doctor(str(run))
    assert code == 0 and "SYMMETRIC_INIT" in out and "report: not written" in out


def test_a_folder_named_treated_toml_or_doctor_is_kept(tmp_path: Path) -> None:
    run = _sick(tmp_path)
    (run / "treated.toml").mkdir()
    (run / "treated.toml" / "mine.txt").write_text("keep")
    (run / "doctor").write_text("my notes")
    code, out = _doctor(str(run), "--verify", "--epochs", "1")
    assert code == 0, out
    assert (run / "treated.toml" / "mine.txt").read_text() == "keep" and (run / "doctor").read_text() == "my notes"
    assert load_config(run / "treated-2.toml").init.rule == "kaiming_normal"
    assert (run / "doctor-2").is_dir() and "doctor-2" in out


def test_random_bytes_are_no_probe_file_and_torch_hints_are_never_shown(tmp_path: Path) -> None:
    bad = tmp_path / "x.pt"
    bad.write_bytes(os.urandom(3000))
    code, out = _doctor(str(bad))
    assert code == 2 and "not a run directory" in out
    assert "weights_only" not in out and "Traceback" not in out


def test_an_edited_config_is_not_what_the_doctor_treats_or_verifies(tmp_path: Path) -> None:
    run = _sick(tmp_path)
    text = (run / "config.toml").read_text()
    (run / "config.toml").write_text(text.replace("lr = 0.05", "lr = 5.0"))
    code, out = _doctor(str(run), "--verify", "--json")
    assert code == 0
    got = json.loads(out)
    assert any("edited after the run trained" in n and "0.05" in n for n in got["notes"])
    treated = load_config(got["treatment"]["path"])
    assert treated.optimizer.hyperparameters()["lr"] == 0.05  # the rate the run trained with
    v = got["verification"]
    assert v["before_run"] == str(run)  # the run itself, as it trained: nothing retrained with lr 5
    after = load_config(Path(v["after_run"]) / "config.toml")
    assert after.optimizer.hyperparameters()["lr"] == 0.05


def test_the_lr_probe_finds_a_rate_far_too_low(tmp_path: Path) -> None:
    from thalweg.diagnose.examine import examine
    from thalweg.diagnose.probes import lr_probe
    from thalweg.train import parse_config

    cfg = {"name": "slow", "out_dir": str(tmp_path), "data": {"name": "digits"},
           "model": {"name": "mlp", "width": 32, "depth": 2}, "optimizer": {"name": "adam", "lr": 1e-5},
           "schedule": {"name": "constant"}, "train": {"epochs": 6, "batch_size": 64, "num_threads": 1},
           "diagnostics": {"figures": False, "report": False}}
    probe = lr_probe(parse_config(cfg), 1257, steps=120)
    assert probe["factors"] == [0.01, 0.1, 1.0, 10.0, 100.0] and probe["best_factor"] == 100.0
    assert probe["best_values"][4] > probe["best_values"][2] + 0.3  # ×100 learns, ×1 does not
    run = fit(cfg, quiet=True).run_dir  # here the curves already say it: nothing is left to probe
    ex = examine(run, with_curvature=False, lr_finder=False, probe=True)
    assert ex.findings[0].code == "LR_TOO_LOW" and any("nothing to probe" in n for n in ex.notes)
    shutil.rmtree(run)
