"""The docs' marked spans and the commands they show: parse, render from docs/record, check.

Markers (invisible when Markdown is rendered):

- `<!--fig:SOURCE.KEY|SPEC-->0.9065<!--/fig-->`: one figure of `docs/record/SOURCE.json`,
  `format(value, SPEC)` (SPEC optional; see `thalweg.record.format_figure`);
- `<!--table:SOURCE.NAME-->` … `<!--/table-->`: a whole recorded table;
- `<!--block:SOURCE.NAME|LANG-->` … `<!--/block-->`: a recorded text block as a code block;
- `<!--run:SOURCE-->` … `<!--/run-->` around a `console` code block: the `$ ` lines are
  commands as written here; the lines under each are that command's output in SOURCE's record;
- `<!--static-->` on the line above a table: a table of settings, not of measurements; at the
  end of a prose line: its numbers are settings or targets, not measurements.

`check()` (tests/test_docs.py) lists every span that differs from the records, every table
that is neither generated nor static, every figure-like number in the README's prose outside
a marker, and every README command that no record ran with the exit status the README implies.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from thalweg.record import format_figure, render_table  # noqa: E402

RECORD = ROOT / "docs" / "record"
MARK = re.compile(r"<!--(fig|table|block|run):([\w.\-]+)(?:\|([^>]*?))?-->(.*?)<!--/\1-->", re.S)
STATIC = "<!--static-->"
#: figure-like tokens in prose: a decimal, or a number with a unit of measurement
NUMBER = re.compile(r"(?<![\w.\-/])(\d+(?:\.\d+)?\s?(?:%|×|ms\b|s\b|min\b|minutes\b|seconds\b|MB\b|GB\b)|\d+\.\d+)")


def _code_spans(text: str) -> list[tuple[int, int]]:
    """Where code is (fenced blocks and inline `code`): markers shown there are examples."""
    spans, pos, fence = [], 0, None
    for line in text.split("\n"):
        if line.strip().startswith("```"):
            if fence is None:
                fence = pos
            else:
                spans.append((fence, pos + len(line)))
                fence = None
        elif fence is None:
            spans += [(pos + m.start(), pos + m.end()) for m in re.finditer(r"`[^`]+`", line)]
        pos += len(line) + 1
    return spans


def marks_in(text: str) -> list[re.Match[str]]:
    """The markers of a doc, leaving out those shown as code."""
    code = _code_spans(text)
    return [m for m in MARK.finditer(text) if not any(a <= m.start() < b for a, b in code)]


def doc_files(root: Path = ROOT) -> list[Path]:
    """README.md and docs/*.md: the files whose figures must be the records'."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def load_records(folder: Path = RECORD) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))}


# -- commands ------------------------------------------------------------------------------
def strip_comment(line: str) -> str:
    """A shell line without its trailing `# comment` (a `#` outside quotes after a blank)."""
    quote, prev = "", " "
    for i, ch in enumerate(line):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and prev.isspace():
            return line[:i].rstrip()
        prev = ch
    return line.rstrip()


def normalize(command: str) -> str:
    """A command as the shell sees it: no comment, single spaces between words."""
    text = strip_comment(command)
    try:
        return " ".join(shlex.quote(w) if w not in (">", "2>&1", "|", ">>") else w for w in shlex.split(text))
    except ValueError:
        return " ".join(text.split())


def make_targets(root: Path = ROOT) -> dict[str, list[str]]:
    """Each Makefile target's recipe lines with the variables filled in (this Makefile's style:
    `NAME := value`, recipes that use $(NAME))."""
    text = (root / "Makefile").read_text(encoding="utf-8")
    var: dict[str, str] = dict(re.findall(r"^(\w+)\s*:=\s*(.*?)\s*$", text, re.M))

    def fill(s: str) -> str:
        for _ in range(3):
            s = re.sub(r"\$\((\w+)\)", lambda m: var.get(m.group(1), ""), s)
        return s

    out: dict[str, list[str]] = {}
    for m in re.finditer(r"^([\w.-]+):[^=\n]*\n((?:\t.*\n?)*)", text, re.M):
        out[m.group(1)] = [fill(ln.strip()) for ln in m.group(2).splitlines() if ln.strip()]
    return out


def expand(command: str, targets: dict[str, list[str]] | None = None) -> list[str]:
    """What a command runs: `make T` is T's recipe (normalized), anything else itself."""
    norm = normalize(command)
    m = re.fullmatch(r"make ([\w.-]+)", norm)
    if m and targets is not None and m.group(1) in targets:
        return [normalize(c) for c in targets[m.group(1)]]
    return [norm]


def is_skipped(command: str) -> bool:
    """`make docs` itself, and the Install section's lines for your own environment (bare `pip`
    and `thalweg`): make docs does not run those; tests/test_install.py runs them in a fresh
    virtual environment, and `benchmarks/install.py` (the `install` source) measures them."""
    c = normalize(command)
    return c.startswith("make docs") or c.startswith(("pip ", "thalweg "))


@dataclass
class Shown:
    """A command a doc shows: its text, the doc and line, the output shown under it."""

    command: str
    doc: str
    line: int
    output: list[str]
    source: str | None  # the <!--run:SOURCE--> block it is in

    @property
    def expect_failure(self) -> bool:
        """The README shows an error under it, so it must fail (and print that line)."""
        return bool(self.output) and self.output[0].startswith(("error:", "config error:"))


def commands(path: Path) -> list[Shown]:
    """Every command in a doc's bash/sh/console code blocks, in order (`\\` continuations joined)."""
    text = path.read_text(encoding="utf-8")
    runs = [(_line(text, m.start()), _line(text, m.end()), m.group(2)) for m in marks_in(text)
            if m.group(1) == "run"]
    out: list[Shown] = []
    lang: str | None = None
    lines: list[str] = []
    start = 0
    for no, line in enumerate(text.split("\n"), 1):
        if line.strip().startswith("```"):
            if lang is None:
                lang, lines, start = line.strip()[3:].strip() or "text", [], no
                continue
            if lang in ("bash", "sh", "console"):
                src = next((s for a, b, s in runs if a <= start <= b), None)
                out += _block_commands(lines, lang, path.name, start, src)
            lang = None
        elif lang is not None:
            lines.append(line)
    return out


def _block_commands(lines: list[str], lang: str, doc: str, start: int, src: str | None) -> list[Shown]:
    out: list[Shown] = []
    i = 0
    while i < len(lines):
        raw = lines[i]
        is_cmd = raw.startswith("$ ") if lang == "console" else bool(raw.strip()) and not raw.lstrip().startswith("#")
        if not is_cmd:
            if out and lang == "console":
                out[-1].output.append(raw)
            i += 1
            continue
        cmd, no = raw[2:] if lang == "console" else raw.strip(), start + i + 1
        while strip_comment(cmd).endswith("\\") and i + 1 < len(lines):
            i += 1
            cmd = strip_comment(cmd)[:-1].rstrip() + " " + lines[i].strip()
        out.append(Shown(cmd.strip(), doc, no, [], src))
        i += 1
    return out


# -- rendering -----------------------------------------------------------------------------
class MarkError(LookupError):
    pass


def _lookup(records: dict[str, Any], ref: str, part: str) -> Any:
    source, _, key = ref.partition(".")
    if source not in records:
        raise MarkError(f"no record docs/record/{source}.json (make docs SOURCES={source})")
    items = records[source].get(part, {})
    if key in items:
        return items[key]
    node: Any = records[source]  # a figure may also be the record's own data: versions.torch, machine.cpus
    for k in key.split("."):
        if part != "figures" or not isinstance(node, dict) or k not in node or k in ("figures", "tables", "blocks"):
            raise MarkError(f"docs/record/{source}.json has no {part[:-1]} {key!r}")
        node = node[k]
    return node


def _transcript(records: dict[str, Any], source: str, body: str) -> str:
    """The console block in `body` with every command's output replaced by the recorded one."""
    if source not in records:
        raise MarkError(f"no record docs/record/{source}.json (make docs SOURCES={source})")
    ran: dict[str, dict[str, Any]] = {}
    for c in records[source].get("commands", []):  # by the text as written, and by what it ran
        for key in (normalize(c["command"]), *c.get("expanded", [])[:1]):
            ran.setdefault(key, c)
    out, skipping = [], False
    for line in body.split("\n"):
        if line.startswith("$ "):
            c = ran.get(normalize(line[2:]))
            if c is None:
                raise MarkError(f"{source} did not run `{line[2:].strip()}` (make docs SOURCES={source})")
            out += [line, *c["output"].rstrip("\n").split("\n")] if c["output"].strip() else [line]
            skipping = True
        elif line.startswith("```"):
            out.append(line)
            skipping = False
        elif not skipping:
            out.append(line)
    return "\n".join(out)


def render_span(kind: str, ref: str, spec: str | None, body: str, records: dict[str, Any]) -> str:
    """What a marked span must hold, from the records (`MarkError` when it cannot be found)."""
    if kind == "fig":
        return format_figure(_lookup(records, ref, "figures"), spec or "")
    if kind == "table":
        return "\n" + render_table(_lookup(records, ref, "tables")) + "\n"
    if kind == "block":
        return f"\n```{spec or ''}\n" + _lookup(records, ref, "blocks") + "\n```\n"
    return _transcript(records, ref, body)


def render(text: str, records: dict[str, Any]) -> tuple[str, list[str]]:
    """`text` with every marked span re-rendered, and the problems met (unknown references)."""
    problems: list[str] = []

    def sub(m: re.Match[str]) -> str:
        kind, ref, spec, body = m.groups()
        try:
            new = render_span(kind, ref, spec, body, records)
        except (MarkError, ValueError, TypeError) as e:
            problems.append(f"<!--{kind}:{ref}-->: {e}")
            return m.group(0)
        return f"<!--{kind}:{ref}{'|' + spec if spec else ''}-->{new}<!--/{kind}-->"

    out, last = [], 0
    for m in marks_in(text):
        out += [text[last:m.start()], sub(m)]
        last = m.end()
    return "".join(out) + text[last:], problems


# -- checks --------------------------------------------------------------------------------
def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _outside_marks(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every line outside marked spans and code blocks."""
    spans = [(m.start(), m.end()) for m in marks_in(text)]
    out, fenced, pos = [], False, 0
    for no, line in enumerate(text.split("\n"), 1):
        inside = any(a <= pos < b for a, b in spans)
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and not inside:
            out.append((no, line))
        pos += len(line) + 1
    return out


def unmarked_tables(path: Path) -> list[str]:
    """Tables neither generated (`<!--table:…-->`) nor declared `<!--static-->`."""
    text = path.read_text(encoding="utf-8")
    lines = _outside_marks(text)
    bad, prev = [], ""
    for i, (no, line) in enumerate(lines):
        nxt = lines[i + 1][1] if i + 1 < len(lines) else ""
        if line.startswith("|") and re.match(r"^\|[\s:|-]*-[\s:|-]*\|?\s*$", nxt) and STATIC not in prev:
            bad.append(f"{path.name}:{no}: a table that is neither generated (<!--table:SOURCE.NAME-->) "
                       f"nor marked {STATIC}")
        prev = line
    return bad


def unmarked_numbers(path: Path) -> list[str]:
    """Figure-like numbers in prose outside markers, inline code and static tables."""
    text = path.read_text(encoding="utf-8")
    bad, static = [], False
    for no, line in _outside_marks(text):
        if line.strip() == STATIC:
            static = True
            continue
        if line.startswith("|"):
            if static:
                continue
        else:
            static = False
        if STATIC in line:  # a line that says its numbers are settings, not measurements
            continue
        prose = re.sub(r"`[^`]*`|\[[^\]]*\]\([^)]*\)", " ", MARK.sub(" ", line))
        bad += [f"{path.name}:{no}: unmarked figure {m.group(1)!r} (mark it <!--fig:SOURCE.KEY-->…<!--/fig-->)"
                for m in NUMBER.finditer(prose)]
    return bad


def check(root: Path = ROOT, records: dict[str, Any] | None = None) -> list[str]:
    """Everything that keeps the docs from being the records' (empty: they are)."""
    records = load_records(root / "docs" / "record") if records is None else records
    problems: list[str] = []
    for path in doc_files(root):
        text = path.read_text(encoding="utf-8")
        new, bad = render(text, records)
        problems += [f"{path.name}: {b}" for b in bad]
        if new != text and not bad:
            problems += [f"{path.name}:{_line(text, m.start())}: <!--{m.group(1)}:{m.group(2)}--> differs from the "
                         f"record (make docs renders it)" for m in marks_in(text)
                         if render_span(*m.groups(), records) != m.group(4)]
        problems += unmarked_tables(path)
    problems += unmarked_numbers(root / "README.md")
    problems += readme_commands(root, records)
    return problems


#: the source whose command runs this very check (`make test`): its exit status is CI's to
#: judge — a failed run recorded here would otherwise fail every later run of the suite
SELF_CHECKED = "tests"


def readme_commands(root: Path, records: dict[str, Any]) -> list[str]:
    """Every README command ran in some record, with exit 0 (or an error, when one is shown);
    `make test`'s own status is left to CI (:data:`SELF_CHECKED`)."""
    targets = make_targets(root)
    ran: dict[str, dict[str, Any]] = {}
    for name, rec in records.items():
        for c in rec.get("commands", []):
            for e in c.get("expanded", [normalize(c["command"])]):
                ran.setdefault(e, {**c, "source": name})
    bad = []
    for shown in commands(root / "README.md"):
        if is_skipped(shown.command):
            continue
        for e in expand(shown.command, targets):
            c = ran.get(e)
            if c is None:
                bad.append(f"README.md:{shown.line}: `{shown.command}` is in no record (make docs SOURCES=readme)")
            elif c["source"] != SELF_CHECKED and (c["status"] != 0) != shown.expect_failure:
                want = "an error" if shown.expect_failure else "exit 0"
                bad.append(f"README.md:{shown.line}: `{shown.command}` exited {c['status']} in "
                           f"docs/record/{c['source']}.json, the README implies {want}")
            elif shown.expect_failure and shown.output[0] not in c["output"]:
                bad.append(f"README.md:{shown.line}: `{shown.command}` did not print {shown.output[0]!r}")
    return bad
