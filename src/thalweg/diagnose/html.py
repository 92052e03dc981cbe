"""The doctor's section of report.html: findings first, each with the figure of its evidence;
and the helper that puts a marked section into a report (replacing an earlier copy)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from thalweg.diagnose.findings import Finding, _fmt
from thalweg.page import Markup, document, html, join

__all__ = ["markers", "read_sections", "to_html", "write_html_section"]

_COLORS = {"critical": "#b00020", "warning": "#b26a00", "info": "#2f6f3e"}


def markers(name: str = "doctor") -> tuple[str, str]:
    """The comment pair that delimits a section `name` in a report."""
    return f"<!-- thalweg-{name}:start -->", f"<!-- thalweg-{name}:end -->"


def read_sections(doc: str) -> dict[str, str]:
    """Every marked section of a report (name → the section with its markers), in page order:
    what other commands (`thalweg doctor`, `thalweg inspect`) put into a run's report.html."""
    import re

    out: dict[str, str] = {}
    for m in re.finditer(r"<!-- thalweg-([\w.-]+):start -->", doc):
        end = markers(m.group(1))[1]
        j = doc.find(end, m.end())
        if j >= 0:
            out[m.group(1)] = doc[m.start(): j + len(end)]
    return out


def _img(path: Path | None, base: Path | None) -> Markup:
    if path is None:
        return Markup("")
    src = os.path.relpath(path, base) if base is not None else str(path)
    return html('<br><img src="{}" alt="{}" style="max-width:100%;height:auto">', src, Path(path).stem)


def to_html(findings: Sequence[Finding], *, title: str = "Diagnosis (thalweg doctor)", extra: str = "",
            figures: Mapping[Finding, Path | None] | Mapping[int, Path | None] | None = None,
            base: Path | None = None, note: str = "") -> Markup:
    """An HTML section listing the findings, most likely first (for a run's report.html).

    `figures` maps a finding's index to the image of its evidence; `base` is the report's folder
    (image paths are written relative to it); `extra` is HTML the caller wrote (`thalweg.page`)."""
    figs: Mapping[Any, Path | None] = figures or {}
    shown: dict[Path, int] = {}  # a figure several findings share is shown once, with the first

    def picture(i: int) -> Markup:
        p = figs.get(i)
        if p is None:
            return Markup("")
        if Path(p) in shown:
            return html("<br><small>(its evidence: the figure of finding {} above)</small>", shown[Path(p)] + 1)
        shown[Path(p)] = i
        return _img(p, base)

    items = join(
        html('<li><b style="color:{}">{}</b> <code>{}</code> {} <small>(confidence {})</small><br><small>evidence: '
             "{}</small><br>→ {}{}</li>", _COLORS.get(f.severity, "#222"), f.severity.upper(), f.code, f.title,
             f"{f.confidence:.2f}", ", ".join(f"{k}={_fmt(v)}" for k, v in f.evidence.items()), f.action,
             picture(i)) for i, f in enumerate(findings))
    body = (html("<ol>{}</ol>", items) if findings
            else Markup("<p>No findings: gradients, activations and curvature look healthy.</p>"))
    start, end = markers("doctor")
    note_html = html("<p><small>{}</small></p>", note) if note else Markup("")
    return html('{}\n<section id="thalweg-doctor"><h2>{}</h2>{}{}{}</section>\n{}', Markup(start), title,
                note_html, body, Markup(extra), Markup(end))


def write_html_section(path: Any, section: str, *, name: str = "doctor", lead: bool = True,
                       after: str | None = None) -> Path:
    """Put `section` into the HTML file at `path`: replace an earlier section of that name,
    else insert it after the section named `after` (if present), else right after the page
    title (`lead`, so findings come before the config) or before ``</body>``; create a minimal
    page when the file does not exist."""
    p = Path(path)
    section = str(section)  # plain text from here: a Markup would escape the page it is joined to
    start, end = markers(name)
    after_end = markers(after)[1] if after else None
    if p.is_file():
        doc = p.read_text(encoding="utf-8")
        if start in doc and end in doc:
            a, b = doc.index(start), doc.index(end) + len(end)
            doc = doc[:a] + section + doc[b:]
        elif after_end and after_end in doc:
            i = doc.index(after_end) + len(after_end)
            doc = doc[:i] + "\n" + section + doc[i:]
        elif lead and "</h1>" in doc:
            i = doc.index("</h1>") + len("</h1>")
            doc = doc[:i] + "\n" + section + doc[i:]
        elif "</body>" in doc:
            i = doc.rindex("</body>")
            doc = doc[:i] + section + "\n" + doc[i:]
        else:
            doc = doc + "\n" + section + "\n"
    else:
        p.parent.mkdir(parents=True, exist_ok=True)
        doc = document("thalweg doctor", [Markup(section)])
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    tmp.write_text(doc, encoding="utf-8")
    os.replace(tmp, p)
    return p
