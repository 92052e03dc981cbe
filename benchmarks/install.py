"""A first install as a user makes it: the wheel `make dist` built (or built here as it does),
a fresh virtual environment, then the README's "Install" lines there — torch first, then the
wheel with no extra — and the README's "your own training script" example and
`thalweg --version` with it. Measures the time of each step and the environment's size (and
the size of `.venv`, what `make` installs: torch and every extra). Downloads from the package
index: slow on a slow network, which the figures then include.

    .venv/bin/python benchmarks/install.py [--dist dist] [--keep DIR] [--json PATH]

`--torch-line LINE` replaces the README's torch line (default: `pip install torch==2.13.0`, as
the Makefile installs it: the README's `--index-url https://download.pytorch.org/whl/cpu` is
not reachable from this project's machines, where torch comes from a local wheel).

The README lines and example are read from README.md (`<!--install:project-->`,
`<!--example:own-script-->`), so what is measured is what the README says.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_block(name: str, readme: Path = ROOT / "README.md") -> str:
    """The code block after `<!--NAME-->` in the README (its first fenced block)."""
    text = readme.read_text(encoding="utf-8")
    m = re.search(rf"<!--{re.escape(name)}-->\s*```\w*\n(.*?)```", text, re.S)
    if m is None:
        raise ValueError(f"README.md has no <!--{name}--> code block")
    return m.group(1)


def install_lines(readme: Path = ROOT / "README.md") -> list[str]:
    """The README's install lines for your own project, comments stripped."""
    out = []
    for line in readme_block("install:project", readme).splitlines():
        line = line.split("  #")[0].strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def build_wheel(out: Path, python: str = sys.executable) -> Path:
    """The wheel as `make dist` builds it (`python -m build --no-isolation`), into `out`."""
    subprocess.run([python, "-m", "build", "--no-isolation", "--wheel", "--outdir", str(out), str(ROOT)],
                   check=True, capture_output=True, text=True)
    (wheel,) = out.glob("thalweg-*.whl")
    return wheel


def fresh_venv(path: Path) -> Path:
    """`python -m venv` with the interpreter this environment was made from (no site packages)."""
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(path)], check=True)
    return path / "bin"


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def run_line(line: str, bindir: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A README line in the fresh environment: `pip` and `thalweg` are its own."""
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}", "VIRTUAL_ENV": str(bindir.parent)}
    env.pop("PYTHONPATH", None)
    return subprocess.run(line, shell=True, cwd=cwd, env=env, capture_output=True, text=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, default=None, help="make the environment here and keep it")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--dist", type=Path, default=None, help="use the wheel in this folder (make dist's)")
    ap.add_argument("--torch-line", default="pip install torch==2.13.0", help="how torch is installed first")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="thalweg-install-"))
    try:
        t0 = time.perf_counter()
        if a.dist is not None:
            (wheel,) = a.dist.glob("thalweg-*.whl")
            shutil.copytree(a.dist, work / "dist")
        else:
            wheel = build_wheel(work / "dist")
        t_build = time.perf_counter() - t0
        venv = a.keep or work / "venv"
        bindir = fresh_venv(venv)
        times: dict[str, float] = {}
        for line in install_lines():
            if "[" in line:  # the extras: not part of a first, plain install
                continue
            if line.startswith("pip install torch"):
                line = a.torch_line
            t0 = time.perf_counter()
            res = run_line(line, bindir, work)
            times[line] = time.perf_counter() - t0
            print(f"$ {line}\n{(res.stdout + res.stderr).strip()[-400:]}\n  ({times[line]:.0f} s, exit {res.returncode})")
            if res.returncode:
                raise SystemExit(f"`{line}` failed")
        example = work / "own_script.py"
        example.write_text(readme_block("example:own-script"), encoding="utf-8")
        t0 = time.perf_counter()
        out = run_line(f"python {example}", bindir, work)
        t_example = time.perf_counter() - t0
        print(out.stdout.strip(), out.stderr.strip()[-400:])
        site = next((venv / "lib").glob("python*/site-packages"))
        size, torch_size = du(venv), du(site / "torch")
        make_venv = ROOT / ".venv"
        make_size = du(make_venv.resolve()) if make_venv.exists() else None
        torch_line = next(k for k in times if "torch" in k)
        rest = sum(v for k, v in times.items() if k != torch_line and k.startswith("pip "))
        print(f"wheel {wheel.stat().st_size / 1024:.0f} kB built in {t_build:.1f} s; torch {times[torch_line]:.0f} s, "
              f"the wheel and its requirements {rest:.0f} s; venv {size / 1e9:.2f} GB (torch {torch_size / 1e9:.2f} GB)"
              + (f"; make's .venv {make_size / 1e9:.2f} GB" if make_size else ""))
        if a.json:
            sys.path.insert(0, str(ROOT / "src"))
            from thalweg.record import Record

            rec = Record()
            rec.figure("wheel_kb", wheel.stat().st_size / 1024)
            if a.dist is None:
                rec.figure("build_seconds", t_build)
            rec.block("torch_line", a.torch_line)
            rec.figure("torch_seconds", times[torch_line])
            rec.figure("rest_seconds", rest)
            rec.figure("venv_gb", size / 1e9)
            rec.figure("torch_gb", torch_size / 1e9)
            rec.figure("example_seconds", t_example)
            if make_size:
                rec.figure("make_venv_gb", make_size / 1e9)
            rec.block("example_output", out.stdout)
            rec.write(a.json)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
