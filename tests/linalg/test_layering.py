"""The shared numerics stay a leaf: thalweg.linalg imports nothing else of thalweg, and the
curvature library (everything but its CLI module) never imports the trainer."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import thalweg

SRC = Path(thalweg.__file__).parent


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_linalg_imports_only_torch_numpy_scipy_and_itself() -> None:
    files = sorted((SRC / "linalg").glob("*.py"))
    assert files
    for f in files:
        own = {n for n in _imports(f) if n.split(".")[0] == "thalweg"}
        assert all(n.startswith("thalweg.linalg") for n in own), (f.name, own)
        third = {n.split(".")[0] for n in _imports(f)} - {"thalweg", "__future__"}
        assert third <= {"torch", "numpy", "scipy"} | set(sys.stdlib_module_names), (f.name, third)


def test_curvature_library_never_imports_train() -> None:
    for f in sorted((SRC / "curvature").glob("*.py")):
        if f.name == "commands.py":  # the CLI layer wires the trainer's loader in
            continue
        bad = {n for n in _imports(f) if n == "thalweg.train" or n.startswith("thalweg.train.")}
        assert not bad, (f.name, bad)
