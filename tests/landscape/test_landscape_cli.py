"""`thalweg trajectories`, `thalweg landscape` and `thalweg lr-find` write their files."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest
from typer.testing import CliRunner

from thalweg.cli import app

runner = CliRunner()


def _ok(args: list[str]) -> str:
    res = runner.invoke(app, args)
    assert res.exit_code == 0, (res.output, res.exception)
    return res.output


def test_trajectories_lr_panel_marks_divergence(tmp_path) -> None:
    text = _ok(["trajectories", "x2", "-O", "sgd", "--lr", "0.05", "--lr", "0.4", "--lr", "1.05",
                "--start", "-1.8", "--steps", "40", "-o", str(tmp_path)])
    assert "diverged at step 34" in text
    assert mpimg.imread(tmp_path / "x2_lr.png").ndim == 3


@pytest.mark.slow
def test_trajectories_png_gif_and_surface(tmp_path) -> None:
    out = tmp_path / "sub" / "saddle.png"
    _ok(["trajectories", "saddle", "-O", "sgd:lr=0.1", "-O", "adam:lr=0.1", "--start",
         "-1.5,0.01", "--steps", "4", "-o", str(tmp_path / "sub"), "--animate", "--surface"])
    assert out.is_file() and out.with_suffix(".gif").is_file()
    assert (tmp_path / "sub" / "saddle_surface.png").is_file()


def test_trajectories_list_and_errors() -> None:
    assert "rosenbrock" in _ok(["trajectories", "--list"])
    res = runner.invoke(app, ["trajectories", "nosuch"])
    assert res.exit_code == 2 and "unknown test function 'nosuch'" in res.output
    res = runner.invoke(app, ["trajectories", "bowl", "--start", "1,x"])
    assert res.exit_code == 2 and "--start" in res.output


def test_landscape_trains_briefly_without_a_run(tmp_path) -> None:
    text = _ok(["landscape", "--dataset", "digits", "--model", "mlp", "--epochs", "3",
                "--dim", "1", "--resolution", "5", "--samples", "128", "-o", str(tmp_path)])
    assert "loss at the trained weights" in text
    with np.load(tmp_path / "landscape_1d.npz") as z:
        assert z["loss"].shape == (5,) and str(z["norm"]) == "filter"
    assert mpimg.imread(tmp_path / "landscape_1d.png").ndim == 3


@pytest.mark.slow
def test_landscape_of_run_directories_and_a_checkpoint(tmp_path) -> None:
    from thalweg.train import fit

    for name, bs in (("small", 32), ("large", 512)):
        cfg = {"name": name, "out_dir": str(tmp_path), "data": {"name": "digits"},
               "model": {"name": "mlp", "width": 16, "depth": 1, "norm": "batch"},
               "optimizer": {"name": "adam", "lr": 0.01}, "schedule": {"name": "constant"},
               "train": {"epochs": 1, "batch_size": bs},
               "diagnostics": {"figures": False, "report": False}}
        fit(cfg, quiet=True)
    text = _ok(["landscape", str(tmp_path / "small"), "--resolution", "3", "--samples", "64",
                "-o", str(tmp_path / "out")])
    assert "eval mode (BatchNorm uses running stats)" in text
    assert (tmp_path / "out" / "landscape_2d.npz").is_file()
    assert (tmp_path / "out" / "landscape_2d.png").is_file()
    ckpt = next((tmp_path / "large" / "checkpoints").glob("*.pt"))
    text = _ok(["landscape", str(tmp_path / "small"), str(ckpt), "--dim", "1", "--resolution",
                "5", "--samples", "64", "-o", str(tmp_path / "cmp")])
    assert ckpt.name in text
    for k in (0, 1):
        with np.load(tmp_path / "cmp" / f"landscape_1d_{k}.npz") as z:
            assert z["loss"].shape == (5,)
    assert mpimg.imread(tmp_path / "cmp" / "landscape_1d_compare.png").ndim == 3
    res = runner.invoke(app, ["landscape", str(tmp_path / "nothing")])
    assert res.exit_code == 2 and "nothing" in res.output


def test_lr_find_with_options(tmp_path) -> None:
    text = _ok(["lr-find", "--dataset", "digits", "--model", "linear", "--optimizer",
                "sgd:momentum=0.9", "--steps", "25", "--start-lr", "1e-4", "--end-lr", "100",
                "-o", str(tmp_path)])
    assert "suggested lr:" in text
    with np.load(tmp_path / "lr_find.npz") as z:
        assert 3 <= len(z["lrs"]) <= 25
    assert mpimg.imread(tmp_path / "lr_find.png").ndim == 3


def test_lr_find_with_a_training_config(tmp_path) -> None:
    cfg = tmp_path / "run.toml"
    cfg.write_text('name = "lr"\n[data]\nname = "digits"\n[model]\nname = "linear"\n'
                   '[optimizer]\nname = "adam"\nlr = 0.001\n[train]\nbatch_size = 32\n')
    text = _ok(["lr-find", str(cfg), "--steps", "15", "-o", str(tmp_path / "o")])
    assert "linear on digits, adam" in text and "suggested lr" in text
    assert (tmp_path / "o" / "lr_find.png").is_file()
    res = runner.invoke(app, ["lr-find", str(tmp_path / "missing.toml")])
    assert res.exit_code == 2 and "missing.toml" in res.output
