"""Failing cleanly (issue 15, items 5-7 and 9): every config value checked (finite, in range,
numbers not strings, the right field named, what cannot fit refused before it starts), data
that overflows float32 named at load, disk faults as one message with nothing lost, and no
advice to load a file unsafely."""

from __future__ import annotations

import errno
import os
import re
import resource
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomli_w
import torch
from test_train_loop import tiny
from typer.testing import CliRunner

from thalweg.cli import app
from thalweg.train import (
    CheckpointError,
    ConfigError,
    build_run,
    fit,
    load_checkpoint,
    load_config,
    parse_config,
)
from thalweg.train.budget import Estimate, check_fits
from thalweg.train.config import DEFAULT_TOML

runner = CliRunner()


def _with(section: str, key: str, value: Any) -> dict[str, Any]:
    data = tomllib.loads(DEFAULT_TOML)
    node = data
    for part in section.split("."):
        node = node.setdefault(part, {})
    node[key] = value
    return data


@pytest.mark.parametrize(("section", "key"), [
    ("regularization", "mixup_alpha"), ("regularization", "l2"), ("regularization", "clip_value"),
    ("regularization.early_stopping", "min_delta"), ("schedule", "power"),
])
def test_inf_and_nan_are_refused_for_every_float(section: str, key: str) -> None:
    """Regression: inf passed these checks and crashed mid-run."""
    for bad in (float("inf"), float("nan")):
        with pytest.raises(ConfigError) as e:
            parse_config(_with(section, key, bad))
        assert (e.value.section, e.value.field) == (section, key) and "finite number" in str(e.value)


@pytest.mark.parametrize(("section", "key", "value"), [
    ("model", "width", "64"), ("train", "batch_size", "64"), ("regularization", "l2", "1e-3"),
    ("train", "epochs", " 3 "),
])
def test_a_number_in_quotes_is_refused_everywhere(section: str, key: str, value: str) -> None:
    """Regression: width = "64" was accepted while lr = "1e-3" was rejected."""
    with pytest.raises(ConfigError) as e:
        parse_config(_with(section, key, value))
    assert (e.value.section, e.value.field, e.value.value) == (section, key, value)
    assert f"a number in quotes; write a number: {key} = {value.strip()}" in str(e.value)
    with pytest.raises(ConfigError, match=r"\[optimizer\] lr = '1e-3'"):
        parse_config(_with("optimizer", "lr", "1e-3"))


@pytest.mark.parametrize(("value", "words"), [
    ("64", "a number in quotes; write a number: num_samples = 64"),
    (float("inf"), "expected an integer"), (10**12, "must be at most 100,000,000"),
])
def test_numeric_data_options_follow_the_same_rules(tmp_path: Path, value: Any, words: str) -> None:
    """The loader's numeric options are checked by its signature, before any data is made."""
    with pytest.raises(ConfigError) as e:
        build_run(tiny(tmp_path, data={"name": "mnist1d", "options": {"num_samples": value}}))
    assert (e.value.section, e.value.field, e.value.value) == ("data.options", "num_samples", value)
    assert words in str(e.value)


@pytest.mark.parametrize(("section", "key", "value", "words"), [
    ("train", "epochs", 10**12, "less than or equal to 1000000"),
    ("model", "depth", 10**6, "less than or equal to 1000"),
    ("train", "seed", -1, "greater than or equal to 0"),
])
def test_sizes_and_counts_have_a_sane_range(section: str, key: str, value: int, words: str) -> None:
    """Regression: epochs = 10**12 trained at lr 3e-11; depth = 10**6 hung with no output."""
    with pytest.raises(ConfigError) as e:
        parse_config(_with(section, key, value))
    assert (e.value.section, e.value.field) == (section, key) and words in str(e.value)


def test_what_cannot_fit_is_refused_before_it_starts(tmp_path: Path) -> None:
    """Regression: width = 10**7 ended in an allocation traceback."""
    with pytest.raises(ConfigError) as e:
        build_run(tiny(tmp_path, model={"width": 10**7, "depth": 2}))
    assert (e.value.section, e.value.field, e.value.value) == ("model", "width", 10**7)
    assert "100,000,760,000,010 parameters" in str(e.value) and "free" in str(e.value)
    est = Estimate(parameters=10, param_bytes=1, activation_bytes=1, eval_bytes=0, data_bytes=0,
                   available_bytes=None, flops=1e25, min_seconds=1e9)
    with pytest.raises(ConfigError, match=r"\[train\] epochs = 3: this run would take at least 31.7 years"):
        check_fits(est, parse_config(tiny(tmp_path)), torch.device("cpu"))


def test_a_field_the_model_does_not_take_is_named(tmp_path: Path) -> None:
    """Regression: kernel_size on an MLP named width as the bad field."""
    with pytest.raises(ConfigError) as e:
        build_run(tiny(tmp_path, model={"kernel_size": 3}))
    assert (e.value.section, e.value.field, e.value.value) == ("model", "kernel_size", 3)


def test_unreadable_config_and_out_dir_on_a_file(tmp_path: Path) -> None:
    """Regression: non-UTF-8 bytes gave a UnicodeDecodeError traceback, out_dir on a file a
    NotADirectoryError one."""
    bad = tmp_path / "latin1.toml"
    bad.write_bytes('name = "caf\u00e9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 0xe9 on line 1\)"):
        load_config(bad)
    out = runner.invoke(app, ["train", str(bad)])
    assert out.exit_code == 2 and "not UTF-8" in out.output and "Traceback" not in out.output
    (tmp_path / "afile").write_text("x")
    cfg = tiny(tmp_path)
    cfg["out_dir"] = str(tmp_path / "afile" / "runs")
    with pytest.raises(ConfigError) as e:
        fit(cfg, quiet=True)
    assert e.value.field == "out_dir" and "afile is a file, not a directory" in str(e.value)


def test_data_that_overflows_float32_is_named_at_load(tmp_path: Path) -> None:
    """Regression: a CSV value 1e308 became inf, standardization made the column NaN, and the
    run blamed the learning rate."""
    from thalweg.data import load_dataset

    rows = ["a,b,y"] + [f"{i},{i % 3},{i % 2}" for i in range(40)]
    rows[3] = "2,1e308,0"
    csv = tmp_path / "d.csv"
    csv.write_text("\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=rf"{csv}, line 4, column 'b': value '1e308' overflows float32"):
        load_dataset("csv", path=str(csv))
    with pytest.raises(ConfigError) as e:
        fit(tiny(tmp_path, data={"name": "csv", "options": {"path": str(csv)}}), quiet=True)
    assert e.value.field == "options" and "line 4, column 'b'" in str(e.value)
    x = np.zeros((30, 3))
    x[7, 2] = -1e300
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(30) % 2)
    with pytest.raises(ValueError, match=r"array 'x' at row 7, column 2 is -1e\+300, which overflows"):
        load_dataset("npz", path=str(tmp_path / "d.npz"))


def test_a_failed_background_write_is_one_message_and_the_run_resumes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: a disk fault in the checkpoint thread ended in a traceback from another
    thread ('inline_container.cc: unexpected pos')."""
    from thalweg.train.rundir import checkpoint

    real = checkpoint._Sink.write

    def full_disk(self: Any, b: Any) -> int:
        if "step_00000020" in self.f.name:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, b)

    monkeypatch.setattr(checkpoint._Sink, "write", full_disk)
    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps(tiny(tmp_path, train={"epochs": 2, "log_every": 100})))
    out = runner.invoke(app, ["train", str(path), "--quiet"])
    run = tmp_path / "runs" / "t"
    assert out.exit_code == 4
    assert (f"[Errno {errno.ENOSPC}] cannot write checkpoint: No space left on device: "
            f"'{run / 'checkpoints' / 'step_00000020.pt'}'") in out.output
    assert "Traceback" not in out.output and "unexpected pos" not in out.output
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_00000000.pt"]  # no temp left
    monkeypatch.setattr(checkpoint._Sink, "write", real)  # the disk is fixed
    out = runner.invoke(app, ["resume", str(run), "--quiet"])
    assert out.exit_code == 0, out.output
    assert load_checkpoint(run / "checkpoints" / "step_00000040.pt")["trainer"]["stopped"] == "completed"


@pytest.mark.slow
def test_a_file_size_limit_is_reported_and_the_run_resumes_once_lifted(tmp_path: Path) -> None:
    """Regression: EFBIG showed as `inline_container.cc:672 unexpected pos` from a thread."""
    cfg = tiny(tmp_path, model={"width": 256}, train={"epochs": 1})  # a checkpoint of ~310 KB
    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps(cfg))

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, 150_000))

    p = subprocess.run([sys.executable, "-m", "thalweg.cli", "train", str(path), "--quiet"],
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                       timeout=120, preexec_fn=limit)
    run = tmp_path / "runs" / "t"
    assert p.returncode == 4, p.stderr
    assert re.search(r"cannot write checkpoint: File too large: '.*/step_\d{8}\.pt'", p.stderr)
    assert "Traceback" not in p.stderr and "unexpected pos" not in p.stderr
    res = fit(resume=run, quiet=True)
    assert res.stopped == "completed" and res.test_accuracy > 0.8


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through read-only permissions")
def test_a_read_only_run_directory_is_one_message(tmp_path: Path) -> None:
    res = fit(tiny(tmp_path, train={"epochs": 1}), quiet=True)
    os.chmod(res.run_dir, 0o555)
    try:
        out = runner.invoke(app, ["resume", str(res.run_dir), "--quiet"])
    finally:
        os.chmod(res.run_dir, 0o755)
    assert out.exit_code == 4 and "Permission denied" in out.output and "Traceback" not in out.output


def test_no_advice_to_load_unsafely(tmp_path: Path) -> None:
    """Regression: our messages repeated torch's 'weights_only=False will likely succeed' and
    suggested allow_pickle for a garbage NPZ."""
    from thalweg.data import load_dataset

    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (print, ("ran",))

    torch.save({"format": "thalweg-checkpoint-2", "sha256": "", "state": Evil()}, tmp_path / "e.pt")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "e.pt")
    assert "not a thalweg checkpoint; it was not loaded" in str(e.value)
    assert "weights_only" not in str(e.value) and "likely succeed" not in str(e.value)
    (tmp_path / "junk.npz").write_bytes(os.urandom(256))
    np.save(tmp_path / "a.npy", np.zeros(3))
    os.replace(tmp_path / "a.npy", tmp_path / "npy.npz")
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}] * 4, dtype=object), y=np.arange(4))
    for name, words in (("junk.npz", "not an .npz archive"), ("npy.npz", "not an .npz archive"),
                        ("obj.npz", "not a valid array file")):
        with pytest.raises(ValueError) as v:
            load_dataset("npz", path=str(tmp_path / name))
        assert words in str(v.value) and "allow_pickle" not in str(v.value) and "pickle" not in str(v.value)
