"""The house plan holds: import-linter's contracts in pyproject.toml are kept (layers from the
CLI down, library areas never import the trainer, no circles between an area's rooms), and no
two modules of thalweg import each other through any path — imports inside functions, under
TYPE_CHECKING and by name (`importlib.import_module("thalweg.x")`, a list of module names)
all count, since each hides a mutual dependency rather than removing it."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import grimp
import pytest

import thalweg

SRC = Path(thalweg.__file__).parent
ROOT = SRC.parent.parent


def _graph() -> grimp.ImportGraph:
    return grimp.build_graph("thalweg", cache_dir=None)  # function-level and TYPE_CHECKING imports included


def _named_imports(modules: set[str]) -> set[tuple[str, str]]:
    """(module, module it imports by name): a string naming a thalweg module passed to
    `importlib.import_module` / `__import__`, or listed in a list, tuple, set or dict (a table of
    modules to import, as the CLI's command modules). A logger's name is not an import."""
    edges = set()
    for name in modules:
        rel = Path(*name.split(".")[1:])
        path = SRC / rel / "__init__.py" if (SRC / rel).is_dir() else (SRC / rel).with_suffix(".py")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                f = node.func
                called = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
                values = node.args[:1] if called in ("import_module", "__import__") else []
            elif isinstance(node, ast.List | ast.Tuple | ast.Set):
                values = node.elts
            elif isinstance(node, ast.Dict):
                values = node.values
            else:
                continue
            edges |= {(name, v.value) for v in values
                      if isinstance(v, ast.Constant) and isinstance(v.value, str) and v.value in modules}
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_two_modules_import_each_other_by_any_path() -> None:
    g = _graph()
    modules = set(g.modules)
    assert len(modules) > 100
    edges = {m: set(g.find_modules_directly_imported_by(m)) for m in modules}
    for a, b in _named_imports(modules):
        edges[a].add(b)
    found = _cycles(edges)
    detail = []
    for comp in found:
        inside = set(comp)
        detail += [f"{a} -> {b}" for a in comp for b in sorted(edges[a] & inside)]
    assert not found, "import circles:\n" + "\n".join(detail)


def test_the_cycle_finder_sees_lazy_and_named_imports() -> None:
    """The check above can fail: a function-level import and a by-name import close circles."""
    edges = {"a": {"b"}, "b": set(), "c": set()}
    assert _cycles(edges) == []
    edges["b"].add("a")
    assert _cycles(edges) == [["a", "b"]]
    g = _graph()
    lazy = g.get_import_details(importer="thalweg.train.build", imported="thalweg.data")
    assert lazy and all(d["line_number"] > 50 for d in lazy)  # `from thalweg.data import Loader` in build_run
    assert ("thalweg.cli", "thalweg.train.commands") in _named_imports(set(g.modules))


def test_import_linter_contracts_are_kept() -> None:
    pytest.importorskip("importlinter")
    from importlinter.cli import lint_imports

    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0
