"""The docs quote what `make docs` last measured (docs/record/), and the README's commands work.

No training here: the records are checked, not re-measured. A change that moves a figure must
re-run its source (`make docs SOURCES=name`) and commit the record with the docs."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"docs_{name}", ROOT / "docs" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


marks = _load("marks")
RECORDS = marks.load_records(ROOT / "docs" / "record")


@pytest.mark.parametrize("doc", marks.doc_files(ROOT), ids=lambda p: p.name)
def test_marked_spans_are_the_records(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    new, problems = marks.render(text, RECORDS)
    assert not problems, problems
    if new != text:
        bad = [f"line {text.count(chr(10), 0, m.start()) + 1}: <!--{m.group(1)}:{m.group(2)}-->"
               for m in marks.marks_in(text) if marks.render_span(*m.groups(), RECORDS) != m.group(4)]
        pytest.fail(f"{doc.name}: spans differ from docs/record (run `make docs` or `python docs/build.py "
                    f"--render`): {bad}")


def test_every_table_is_generated_or_static() -> None:
    bad = [b for p in marks.doc_files(ROOT) for b in marks.unmarked_tables(p)]
    assert not bad, bad


def test_the_readmes_measured_claims_are_marked() -> None:
    bad = marks.unmarked_numbers(ROOT / "README.md")
    assert not bad, bad


def test_every_readme_command_ran_in_the_last_make_docs() -> None:
    bad = marks.readme_commands(ROOT, RECORDS)
    assert not bad, bad


def test_records_say_what_ran_where() -> None:
    assert RECORDS, "no docs/record/*.json"
    for name, rec in RECORDS.items():
        assert rec["source"] == name and rec["commands"], name
        assert {"date", "machine", "versions"} <= rec.keys(), name
        assert all({"command", "status", "seconds", "output"} <= c.keys() for c in rec["commands"]), name


def test_every_picture_the_docs_show_is_drawn_by_a_source() -> None:
    import importlib
    import re

    sys.path.insert(0, str(ROOT / "docs"))
    sources = importlib.import_module("sources")  # by its own name: docs/readers.py registers into it
    drawn = {name for s in sources.sources(ROOT).values() for name in s.images.values()}
    shown = {m for p in marks.doc_files(ROOT) for m in re.findall(r"images/([\w.-]+\.png)", p.read_text())}
    assert shown and shown <= drawn, sorted(shown - drawn)
    assert all((ROOT / "docs" / "images" / n).is_file() for n in shown)


def test_a_moved_figure_is_caught_and_rendered(tmp_path: Path) -> None:
    """The check can fail: a record that moved leaves the doc stale until it is rendered."""
    (tmp_path / "docs" / "record").mkdir(parents=True)
    (tmp_path / "Makefile").write_text("PY := .venv/bin/python\nrun:\n\t$(PY) -m thing\n")
    rec = {"source": "s", "commands": [{"command": "make run", "expanded": [".venv/bin/python -m thing"],
                                        "status": 0, "seconds": 1, "output": "acc 0.91\n"}],
           "figures": {"acc": 0.9066}, "blocks": {},
           "tables": {"t": {"header": ["a", "b"], "align": "lr", "rows": [["x", "1.0"]]}}}
    (tmp_path / "docs" / "record" / "s.json").write_text(json.dumps(rec))
    doc = ("Accuracy <!--fig:s.acc|.3f-->0.907<!--/fig-->.\n\n<!--table:s.t-->\n| a | b |\n|---|---:|\n"
           "| x | 1.0 |\n<!--/table-->\n\n<!--run:s-->\n```console\n$ make run   # the run\nold output\n```\n"
           "<!--/run-->\n\nShown as code, not filled: `<!--fig:nope.x-->1<!--/fig-->`.\n")
    (tmp_path / "README.md").write_text(doc)
    assert marks.check(tmp_path) == [
        "README.md:9: <!--run:s--> differs from the record (make docs renders it)"]
    fixed, problems = marks.render(doc, marks.load_records(tmp_path / "docs" / "record"))
    assert not problems and "$ make run   # the run\nacc 0.91\n```" in fixed
    (tmp_path / "README.md").write_text(fixed)
    assert marks.check(tmp_path) == []
    rec["figures"]["acc"] = 0.95  # a change moved the figure: the doc no longer says what was measured
    rec["commands"][0]["status"] = 1
    (tmp_path / "docs" / "record" / "s.json").write_text(json.dumps(rec))
    problems = marks.check(tmp_path)
    assert problems[0] == "README.md:1: <!--fig:s.acc--> differs from the record (make docs renders it)"
    assert "exited 1" in problems[-1]
    (tmp_path / "README.md").write_text(fixed + "\n| m | 2.5 ms |\n|---|---|\n\nIt took 3.5 s.\n")
    assert any("neither generated" in p for p in marks.check(tmp_path))
    assert any("unmarked figure '3.5 s'" in p for p in marks.check(tmp_path))


def test_a_kept_directory_is_read_again_with_todays_reader(tmp_path: Path, monkeypatch) -> None:
    """`docs/build.py --reread DIR`: the commands do not run again; the reader of today reads what
    they wrote then (and the `--json` record of each), the record keeps the run's own date."""
    build = _load("build")
    sources = sys.modules["sources"]
    kept, rec_dir = tmp_path / "kept", tmp_path / "record"
    kept.mkdir()
    rec_dir.mkdir()
    (kept / "out.txt").write_text("7\n")
    (kept / "record-1.json").write_text(json.dumps({"figures": {"x": 2}, "tables": {}, "blocks": {}}))
    old = {"source": "s", "date": "2026-01-01T00:00:00+00:00", "seconds": 5.0, "versions": {"thalweg": "old"},
           "machine": {"host": "h", "cpus": 2, "platform": "p", "load_average_at_start": 0.5},
           "commands": [{"command": "make a", "status": 0, "seconds": 1, "output": ""},
                        {"command": "python b.py", "status": 0, "seconds": 1, "output": ""}]}
    (rec_dir / "s.json").write_text(json.dumps(old))

    def read(ctx):
        return {"figures": {"n": int(ctx.load("out.txt")) * 10, **ctx.records()["figures"]}}

    monkeypatch.setattr(build, "RECORD", rec_dir)
    src = sources.Source("s", "a test source", ["make a", "python b.py --json {json}"], read)
    assert build.reread(src, ROOT / ".venv", kept, rec_dir / "s.json") == []
    new = json.loads((rec_dir / "s.json").read_text())
    assert new["figures"] == {"n": 70, "x": 2} and new["date"] == old["date"] and "reread" in new
    other = sources.Source("t", "another", [], read)
    assert "not of 't'" in build.reread(other, ROOT / ".venv", kept, rec_dir / "s.json")[0]


#: README commands cheap enough to run for real here (a few seconds each)
CHEAP = ("thalweg train --print-config", "thalweg trajectories x2", "printf", "thalweg train bad.toml")


@pytest.mark.slow
def test_cheap_readme_commands_work_pasted_in_a_fresh_shell(tmp_path: Path) -> None:
    """The README's cheap commands, as written, in `env -i` bash in a directory like a checkout."""
    for entry in ("src", "examples", "pyproject.toml", "Makefile"):
        (tmp_path / entry).symlink_to(ROOT / entry)
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    env = {"HOME": os.environ.get("HOME", str(tmp_path)), "PATH": "/usr/bin:/bin",
           **{k: os.environ[k] for k in ("PYTHONPATH", "THALWEG_CACHE") if k in os.environ}}
    shown = [c for c in marks.commands(ROOT / "README.md") if any(k in c.command for k in CHEAP)]
    assert len(shown) >= 4, [c.command for c in shown]
    for c in shown:
        out = subprocess.run(["bash", "-c", c.command], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=120)
        assert (out.returncode != 0) == c.expect_failure, (c.command, out.returncode, out.stderr[-2000:])
        if c.expect_failure:
            assert c.output[0] in out.stderr + out.stdout, (c.command, out.stderr)
    assert (tmp_path / "trajectories" / "x2_lr.png").is_file()
    assert "[optimizer]" in (tmp_path / "my.toml").read_text()
