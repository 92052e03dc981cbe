"""`-o` is a directory everywhere, and no command replaces an earlier output without --overwrite."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from thalweg.cli import app
from thalweg.outputs import OutputError, fresh, holds_any, numbered, output_dir

runner = CliRunner()


def _ok(args: list[str]) -> str:
    res = runner.invoke(app, args)
    assert res.exit_code == 0, (res.output, res.exception)
    return res.output


def test_numbered_names_keep_a_file_suffix_last_and_number_other_names_whole(tmp_path: Path) -> None:
    it = numbered(tmp_path / "ravine.png")
    assert [p.name for p in (next(it), next(it), next(it))] == ["ravine.png", "ravine-2.png", "ravine-3.png"]
    it = numbered(tmp_path / "run.v2")
    assert [next(it).name, next(it).name] == ["run.v2", "run.v2-2"]


def test_fresh_takes_the_first_free_name_and_says_so(tmp_path: Path) -> None:
    target = tmp_path / "lr_find"
    assert fresh(target) == (target, None)  # absent
    target.mkdir()
    assert fresh(target) == (target, None)  # empty: nothing to lose
    (target / "lr_find.png").write_bytes(b"x")
    (tmp_path / "lr_find-2").mkdir()
    (tmp_path / "lr_find-2" / "other.txt").write_text("x")
    path, note = fresh(target, taken=holds_any(["lr_find.*"]), what="an earlier range test")
    assert path == tmp_path / "lr_find-2"  # holds no range test: usable
    assert note == f"{target} holds an earlier range test, so this one is {path} (--overwrite replaces it)"
    assert fresh(target, overwrite=True) == (target, None)


def test_output_dir_refuses_a_file_name(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match=r"-o/--out .*x\.png: looks like a file name"):
        output_dir(tmp_path / "x.png")
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        output_dir(tmp_path / "f")
    assert output_dir(tmp_path / "new") == tmp_path / "new"


def test_trajectories_never_overwrite_a_picture(tmp_path: Path) -> None:
    args = ["trajectories", "ravine", "-O", "sgd:lr=0.4", "--start=-5,-2", "--steps", "3", "-o", str(tmp_path)]
    assert f"wrote {tmp_path / 'ravine.png'}" in _ok(args)
    before = (tmp_path / "ravine.png").read_bytes()
    text = _ok(args)
    assert f"wrote {tmp_path / 'ravine-2.png'}" in text and "holds a picture of that name" in text
    assert (tmp_path / "ravine.png").read_bytes() == before
    assert f"wrote {tmp_path / 'ravine-2.png'}" in _ok([*args, "--name", "ravine-2", "--overwrite"])
    res = runner.invoke(app, [*args[:-2], "-o", str(tmp_path / "out.png")])
    assert res.exit_code == 2 and "-o/--out" in res.output and "looks like a file name" in res.output


def test_lr_find_writes_a_fresh_directory_the_second_time(tmp_path: Path) -> None:
    args = ["lr-find", "--dataset", "digits", "--model", "linear", "--steps", "5", "-o", str(tmp_path / "lr")]
    _ok(args)
    text = _ok(args)
    assert f"wrote {tmp_path / 'lr-2' / 'lr_find.png'}" in text and "holds an earlier range test" in text
    assert (tmp_path / "lr" / "lr_find.npz").is_file()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from thalweg.train import fit

    out = tmp_path_factory.mktemp("runs")
    cfg = {"name": "tiny", "out_dir": str(out), "data": {"name": "digits"},
           "model": {"name": "mlp", "width": 8, "depth": 1}, "train": {"epochs": 1, "batch_size": 256},
           "diagnostics": {"figures": False, "tensorboard": False}}
    return fit(cfg, quiet=True).run_dir


def test_landscape_defaults_under_the_run_and_numbers_the_second(tiny_run: Path) -> None:
    args = ["landscape", str(tiny_run), "--dim", "1", "--resolution", "3", "--samples", "16"]
    assert f"wrote {tiny_run / 'landscape' / 'landscape_1d.png'}" in _ok(args)
    text = _ok(args)
    assert f"wrote {tiny_run / 'landscape-2' / 'landscape_1d.png'}" in text and "holds earlier slices" in text


def test_inspect_numbers_its_density_plot(tiny_run: Path, tmp_path: Path) -> None:
    args = ["inspect", str(tiny_run), "--k", "1", "--max-samples", "16", "--no-progress", "-o", str(tmp_path)]
    assert f"density plot: {tmp_path / 'hessian_density.png'}" in _ok(args)
    text = _ok(args)
    assert f"density plot: {tmp_path / 'hessian_density-2.png'}" in text and "earlier density plot" in text


def test_train_o_is_the_directory_that_holds_runs(tmp_path: Path) -> None:
    cfg = tmp_path / "t.toml"
    cfg.write_text('name = "t"\n[data]\nname = "digits"\n[model]\nname = "linear"\n[train]\nepochs = 1\n'
                   "[diagnostics]\nfigures = false\nreport = false\ntensorboard = false\n")
    assert f"run: {tmp_path / 'r' / 't'}" in _ok(["train", str(cfg), "-q", "-o", str(tmp_path / "r")])
    assert f"run: {tmp_path / 'r' / 't-2'}" in _ok(["train", str(cfg), "-q", "-o", str(tmp_path / "r")])


@pytest.mark.parametrize("name", ["../../escaped", "/ABS/escaped", "sub/escaped", "..", ""])
def test_a_name_that_is_a_path_is_refused_and_nothing_is_written_outside_o(tmp_path: Path, name: str) -> None:
    """`--name` names a file inside `-o`: `../../x`, an absolute path or `a/b` would write
    elsewhere (trajectories, bench recipe)."""
    out = tmp_path / "a" / "b" / "out"
    name = name.replace("/ABS", str(tmp_path))
    r = CliRunner().invoke(app, ["trajectories", "rosenbrock", "--steps", "5", "-o", str(out), "--name", name])
    assert r.exit_code == 2 and f"--name {name!r}: a name is one file name, not a path" in r.output, r.output
    r = CliRunner().invoke(app, ["bench", "recipe", str(tmp_path / "nobench"), "linreg", "-o", str(out),
                                 "--name", name])
    assert r.exit_code == 2 and f"--name {name!r}: a name is one file name, not a path" in r.output, r.output
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
