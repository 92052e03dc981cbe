"""The README's Install section, run as typed in a fresh virtual environment from the built
wheel: torch first, the wheel with no extra, `thalweg --version`, the "your own training
script" example, then the extras line.

What this proves and what it does not: the environment is a real `python -m venv` (no system
site packages) and the wheel is really installed into it by pip, by the README's lines; every
requirement pip asks for must already be met with the index switched off (PIP_NO_INDEX), and
what meets them is the *closure of the wheel's declared requirements* taken from the project's
environment and linked in with a .pth file: first the base requirements only (so the example
and `thalweg --version` run without Optuna, Lightning, …, which are checked to be absent),
then those of `[bench,integrations]`. A requirement the wheel forgot to declare fails here.
The venv's bundled setuptools (65, older than torch asks for) is uninstalled so the linked one
counts. It downloads nothing: a real first install from the index is `benchmarks/install.py` (the
README quotes its time and size).
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from install import build_wheel, fresh_venv, install_lines, readme_block  # noqa: E402


def _closure(reqs: list[str], extras: set[str]) -> set[str]:
    """Every installed distribution the requirements pull in (markers evaluated for each
    requirement's extras, e.g. fsspec[http]), thalweg's own self-references (thalweg[bench]
    in [ray]) followed; by normalized name."""
    names: set[str] = set()
    done: set[tuple[str, str]] = set()
    todo = [(Requirement(r), "") for r in reqs] + [(Requirement(r), e) for r in reqs for e in extras]
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = req.name.lower().replace("_", "-")
        for e in ("", *req.extras):
            if (name, e) in done:
                continue
            done.add((name, e))
            if name == "thalweg":
                todo += [(Requirement(r), e) for r in THALWEG_REQS]
                continue
            names.add(name)
            todo += [(Requirement(r), e) for r in (md.distribution(name).requires or [])]
    return names


def _link(names: set[str], into: Path) -> Path:
    """A folder of links to the installed files of `names` (packages, modules, dist-info)."""
    into.mkdir(parents=True)
    for name in names:
        dist = md.distribution(name)
        base = Path(dist.locate_file(""))
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            src = base / top
            if src.exists() and not (into / top).exists() and not top.endswith(".pth"):
                (into / top).symlink_to(src)
    return into


THALWEG_REQS: list[str] = []


@pytest.mark.slow
def test_readme_install_lines_and_example_in_a_fresh_venv(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path / "dist")
    import zipfile

    with zipfile.ZipFile(wheel) as z:
        text = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    THALWEG_REQS[:] = [ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("Requires-Dist:")]
    base = _closure(THALWEG_REQS, set())
    extra = _closure(THALWEG_REQS, {"bench", "integrations"}) - base
    base.discard("thalweg")
    assert "torch" in base and "optuna" not in base and {"optuna", "lightning"} <= extra

    bindir = fresh_venv(tmp_path / "venv")
    site = next((tmp_path / "venv" / "lib").glob("python*/site-packages"))
    (site / "_base_requirements.pth").write_text(str(_link(base, tmp_path / "base")) + "\n")
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(bindir.parent),
           "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)

    def run(line: str) -> str:
        res = subprocess.run(line, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, f"$ {line}\n{res.stdout}\n{res.stderr}"
        return res.stdout + res.stderr

    # Python 3.11's venv ships setuptools 65, older than torch's requirement; with an index pip
    # would upgrade it, without one the linked (newer) copy must be the one found
    run("python -m pip uninstall -q -y setuptools")
    lines = install_lines()
    assert lines[0].startswith("pip install torch") and lines[1].startswith("pip install dist/thalweg-")
    assert Path(lines[1].split()[2]).name == wheel.name  # the README names the wheel make dist builds
    plain = [ln for ln in lines if "[" not in ln]
    extras = [ln for ln in lines if "[" in ln]
    for line in plain:
        out = run(line)
        if line.startswith("thalweg --version"):
            from thalweg import __version__

            assert out.strip().startswith(f"thalweg {__version__} (torch 2.")
    where = run("python -c 'import thalweg, shutil; print(thalweg.__file__, shutil.which(\"thalweg\"))'")
    assert str(site) in where and str(bindir) in where  # the wheel's copy, not the clone's
    (tmp_path / "own_script.py").write_text(readme_block("example:own-script"))
    out = run("python own_script.py")
    loss = float(re.search(r"loss after 300 steps: ([\d.]+)", out).group(1))
    assert loss < 0.05, out
    missing = run("python -c 'import importlib.util as u; print([m for m in (\"optuna\", \"lightning\", "
                  "\"transformers\", \"ray\") if u.find_spec(m)])'")
    assert missing.strip() == "[]"  # the base install ran the example without any extra
    bench = subprocess.run("thalweg bench workloads", shell=True, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert bench.returncode == 2 and "pip install 'thalweg[bench]'" in bench.stderr

    (site / "_extra_requirements.pth").write_text(str(_link(extra, tmp_path / "extra")) + "\n")
    for line in extras:
        run(line)
    assert "[bench,integrations]" in extras[0]
