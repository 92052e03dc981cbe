"""`make docs`: run the commands whose figures the docs quote, keep what they measured, redraw
the pictures, and rewrite the docs' marked spans from what was kept.

    python docs/build.py                       # every source (30–60 min on 2 cores)
    python docs/build.py --sources meta,zoo    # some (make docs SOURCES=meta,zoo)
    python docs/build.py --render              # only rewrite the docs from docs/record/
    python docs/build.py --check               # what tests/test_docs.py checks; changes nothing
    python docs/build.py --list                # the sources and their commands
    python docs/build.py --sources S --reread DIR   # S's kept directory (--keep) read again

A *source* (docs/sources.py) is a few shell commands, run one by one in a fresh shell
(`env -i HOME=… PATH=/usr/bin:/bin bash -c …`) in a fresh directory that looks like a checkout
after `make` (its files linked, `.venv` the virtual environment), then a function that reads
what they wrote. Its record, `docs/record/<source>.json`, holds the commands with their exit
status and output, the date, machine and versions, and the figures, tables and blocks the
docs mark (docs/marks.py); its pictures are copied into docs/images/. `make X` in a command
runs X's recipe (never make itself, which would rebuild the environment).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import marks
import sources as S

ROOT, RECORD, IMAGES = marks.ROOT, marks.RECORD, marks.ROOT / "docs" / "images"
#: what a fresh checkout after `make` has: linked into each source's directory
LINKED = ("src", "tests", "examples", "benchmarks", "docs", "README.md", "Makefile", "pyproject.toml")
OUTPUT_CHARS = 12_000
#: sources run after the others, on docs rendered from their records (the test suite reads them)
LAST = ("tests",)


class Workspace(S.Context):
    """A fresh directory that looks like a checkout after `make`; runs commands in fresh shells."""

    def __init__(self, name: str, venv: Path, keep: bool) -> None:
        self.path = Path(tempfile.mkdtemp(prefix=f"thalweg-docs-{name}-"))
        self.keep = keep
        for entry in LINKED:
            (self.path / entry).symlink_to(ROOT / entry)
        (self.path / ".venv").symlink_to(venv)
        self.ran: list[dict[str, Any]] = []
        self.env = {"HOME": os.environ.get("HOME", str(self.path)), "PATH": "/usr/bin:/bin"}
        for k in ("PYTHONPATH", "THALWEG_CACHE"):  # a worktree's src, a shared data cache
            if k in os.environ:
                self.env[k] = os.environ[k]

    def run(self, command: str, timeout: float) -> dict[str, Any]:
        """Run one command as written (`{json}` → a fresh path here); keep status and output."""
        targets = marks.make_targets(ROOT)
        json_path = self.path / f"record-{len(self.ran)}.json"
        shown = command.replace(" --json {json}", "")
        expanded = marks.expand(shown, targets)
        script = [e for e in marks.expand(command, targets)] if command.startswith("make ") else [command]
        script = [c.replace("{json}", str(json_path)) for c in script]
        t0, cpu0 = time.perf_counter(), os.times()
        print(f"[{self.path.name}] $ {shown}", flush=True)
        proc = subprocess.Popen(["bash", "-c", " && ".join(script)], cwd=self.path, env=self.env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, errors="replace",
                                start_new_session=True)  # its own process group: a timeout ends all of it
        try:
            output, _ = proc.communicate(timeout=timeout)
            status = proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            status, output = 124, (output or "") + f"\n(timed out after {timeout:.0f} s)"
        cpu = os.times()
        entry = {"command": shown, "expanded": expanded, "status": status,
                 "seconds": round(time.perf_counter() - t0, 1),
                 "cpu_seconds": round(cpu.children_user + cpu.children_system - cpu0.children_user
                                      - cpu0.children_system, 1), "output": _tail(output)}
        if json_path.is_file():
            entry["json"] = json.loads(json_path.read_text(encoding="utf-8"))
        print(f"    exit {status} after {entry['seconds']} s", flush=True)
        self.ran.append(entry)
        return entry

    def close(self, ok: bool) -> None:
        if ok and not self.keep:
            shutil.rmtree(self.path, ignore_errors=True)
        else:
            print(f"    kept {self.path}", flush=True)


def _tail(text: str) -> str:
    text = "\n".join(ln.rstrip() for ln in text.replace("\r", "\n").split("\n") if "\x1b" not in ln)
    return text if len(text) <= OUTPUT_CHARS else "…\n" + text[-OUTPUT_CHARS:]


def _versions(venv: Path) -> dict[str, str]:
    code = "import torch, thalweg, sys; print(torch.__version__); print(sys.version.split()[0])"
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True,
                         env={**os.environ}).stdout.split()
    commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                            text=True).stdout.strip()
    return {"torch": out[0] if out else "?", "python": out[1] if len(out) > 1 else "?", "thalweg": commit}


def build(source: S.Source, venv: Path, keep: bool) -> list[str]:
    """Run one source, write its record and pictures; the problems met (empty: done)."""
    ws = Workspace(source.name, venv, keep)
    ws.load_average = os.getloadavg()[0]
    t0 = time.perf_counter()
    problems = []
    for cmd in source.command_list():
        entry = ws.run(cmd, source.timeout)
        want_fail = cmd in source.failing
        if (entry["status"] != 0) != want_fail:
            problems.append(f"{source.name}: `{entry['command']}` exited {entry['status']}:\n"
                            + "\n".join(entry["output"].splitlines()[-15:]))
    return problems + _collect(source, ws, venv, t0)


def reread(source: S.Source, venv: Path, path: Path, record: Path) -> list[str]:
    """Read a source's kept directory (`--keep`) again with today's reader: the figures of the
    commands that ran then (their record, `record`, says which), recomputed — when the code that
    reads them (scoring, intervals) changed and the commands need not run again."""
    old = json.loads(record.read_text(encoding="utf-8"))
    if old.get("source") != source.name:
        return [f"{record}: a record of {old.get('source')!r}, not of {source.name!r}"]
    ws = Workspace.__new__(Workspace)
    ws.path, ws.keep, ws.ran, ws.load_average = path, True, [], old["machine"]["load_average_at_start"]
    for i, entry in enumerate(old["commands"]):
        js = path / f"record-{i}.json"
        ws.ran.append({**entry, **({"json": json.loads(js.read_text(encoding="utf-8"))} if js.is_file() else {})})
    return _collect(source, ws, venv, time.perf_counter() - old["seconds"], old)


def _collect(source: S.Source, ws: Workspace, venv: Path, t0: float, old: dict[str, Any] | None = None) -> list[str]:
    """Read what `source`'s commands wrote in `ws`; write its record and pictures."""
    problems: list[str] = []
    try:
        found = source.collect(ws) if source.collect else {}
    except Exception as e:  # a collect that cannot read what the commands wrote: say which
        problems.append(f"{source.name}: reading the outputs failed: {type(e).__name__}: {e}")
        found = None
    if found is not None:
        for rel, name in source.images.items():
            src = ws.path / rel
            if src.is_file():
                shutil.copyfile(src, IMAGES / name)
            else:
                problems.append(f"{source.name}: no picture {rel} to copy to docs/images/{name}")
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        record = {"source": source.name, "about": source.about, "date": now,
                  "machine": {"host": socket.gethostname(), "cpus": os.cpu_count(), "platform": platform.platform(),
                              "load_average_at_start": round(ws.load_average, 2)},
                  "versions": _versions(venv), "seconds": round(time.perf_counter() - t0, 1),
                  "commands": [{k: v for k, v in e.items() if k != "json"} for e in ws.ran],
                  "figures": {}, "tables": {}, "blocks": {}}
        if old is not None:  # re-read: the run's own date, machine and versions; the reader's now
            record.update({k: old[k] for k in ("date", "machine", "versions", "seconds")})
            record["reread"] = {"date": now, "versions": _versions(venv)}
        for part in ("figures", "tables", "blocks"):
            record[part].update(found.get(part, {}))
        RECORD.mkdir(parents=True, exist_ok=True)
        (RECORD / f"{source.name}.json").write_text(
            json.dumps(record, indent=1, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
        print(f"    wrote docs/record/{source.name}.json", flush=True)
    ws.close(not problems)
    return problems


def render_docs() -> list[str]:
    records = marks.load_records(RECORD)
    problems = []
    for path in marks.doc_files(ROOT):
        text = path.read_text(encoding="utf-8")
        new, bad = marks.render(text, records)
        problems += [f"{path.name}: {b}" for b in bad]
        if new != text:
            path.write_text(new, encoding="utf-8")
            print(f"rewrote {path.relative_to(ROOT)}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sources", default="", help="comma-separated source names (default: all)")
    ap.add_argument("--venv", type=Path, default=ROOT / ".venv", help="the virtual environment (.venv)")
    ap.add_argument("--render", action="store_true", help="only rewrite the docs from docs/record/")
    ap.add_argument("--check", action="store_true", help="list what differs from the records; change nothing")
    ap.add_argument("--list", action="store_true", help="list the sources and their commands")
    ap.add_argument("--keep", action="store_true", help="keep each source's directory")
    ap.add_argument("--no-render", action="store_true", help="run the sources, leave the docs as they are")
    ap.add_argument("--reread", type=Path, default=None, metavar="DIR",
                    help="read the kept directory DIR of the one source named by --sources again (its commands "
                         "do not run); --record: the record it wrote then (default: docs/record/SOURCE.json)")
    ap.add_argument("--record", type=Path, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    registry = S.sources(ROOT)
    if a.reread is not None:
        names = [n for n in a.sources.split(",") if n]
        if len(names) != 1 or names[0] not in registry or not a.reread.is_dir():
            print("--reread DIR needs an existing DIR and one source in --sources", file=sys.stderr)
            return 2
        problems = reread(registry[names[0]], a.venv, a.reread, a.record or RECORD / f"{names[0]}.json")
        problems += [] if a.no_render else render_docs()
        print("\n".join(problems) if problems else "docs rendered from docs/record/")
        return 1 if problems else 0
    if a.list:
        for s in registry.values():
            print(f"{s.name}: {s.about}")
            for c in s.command_list():
                print(f"    $ {c}")
        return 0
    if a.check:
        problems = marks.check(ROOT)
        print("\n".join(problems) or "the docs are the records'")
        return 1 if problems else 0
    problems: list[str] = []
    if not a.render:
        names = [n for n in a.sources.split(",") if n] or list(registry)
        unknown = [n for n in names if n not in registry]
        if unknown:
            print(f"unknown source(s) {unknown}; the sources: {', '.join(registry)}", file=sys.stderr)
            return 2
        if not (a.venv / "bin" / "python").exists():
            print(f"no virtual environment at {a.venv} (make creates .venv; or give --venv)", file=sys.stderr)
            return 2
        venv = a.venv.resolve() if a.venv.is_symlink() else a.venv
        last = [n for n in LAST if n in names]  # the test suite checks the docs: it runs on rendered ones
        for n in [n for n in names if n not in last]:
            problems += build(registry[n], venv, a.keep)
        for n in last:
            if not a.no_render:
                problems += render_docs()
            problems += build(registry[n], venv, a.keep)
    if not a.no_render:
        problems += render_docs()
    print("\n".join(problems) if problems else "docs rendered from docs/record/")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
