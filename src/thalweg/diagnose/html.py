"""The doctor's section of report.html: findings first, each with the figure of its evidence;
and the helper that puts a marked section into a report (replacing an earlier copy)."""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from thalweg.diagnose.findings import Finding, _fmt

__all__ = ["markers", "to_html", "write_html_section"]

_COLORS = {"critical": "#b00020", "warning": "#b26a00", "info": "#2f6f3e"}


def markers(name: str = "doctor") -> tuple[str, str]:
    """The comment pair that delimits a section `name` in a report."""
    return f"<!-- thalweg-{name}:start -->", f"<!-- thalweg-{name}:end -->"


def _img(path: Path | None, base: Path | None) -> str:
    if path is None:
        return ""
    src = os.path.relpath(path, base) if base is not None else str(path)
    return f'<br><img src="{html.escape(src)}" alt="{html.escape(Path(path).stem)}" style="max-width:100%;height:auto">'


def _finding(f: Finding, img: str) -> str:
    ev = html.escape(", ".join(f"{k}={_fmt(v)}" for k, v in f.evidence.items() if k != "explained_by"))
    out = (f'<li><b style="color:{_COLORS[f.severity]}">{f.severity.upper()}</b> <code>{html.escape(f.code)}</code> '
           f"{html.escape(f.title)} <small>(confidence {f.confidence:.2f})</small><br><small>evidence: {ev}</small>"
           f"<br>→ {html.escape(f.action)}")
    if f.symptoms:
        out += "<br><small>symptoms it explains:</small><ul>" + "".join(
            f"<li><small><code>{html.escape(s.code)}</code> {html.escape(s.title)}: "
            f"{html.escape(', '.join(f'{k}={_fmt(v)}' for k, v in s.evidence.items() if k != 'explained_by'))}"
            "</small></li>" for s in f.symptoms) + "</ul>"
    if f.differential:
        out += (f"<br><small>could be: {html.escape(', '.join(f.differential))} — not told apart"
                + (f"; {html.escape(f.tell_apart)}" if f.tell_apart else "") + "</small>")
    return out + img + "</li>"


def to_html(findings: Sequence[Finding], *, title: str = "Diagnosis (thalweg doctor)", extra: str = "",
            figures: Mapping[Finding, Path | None] | Mapping[int, Path | None] | None = None,
            base: Path | None = None, note: str = "") -> str:
    """An HTML section listing the findings, most likely cause first, each cause with the
    symptoms it explains (for a run's report.html).

    `figures` maps a finding's index to the image of its evidence; `base` is the report's folder
    (image paths are written relative to it). An image is shown once, at the first finding that
    points at it (several findings often share the loss curves)."""
    figs: Mapping[Any, Path | None] = figures or {}
    shown: set[Path] = set()
    items = []
    for i, f in enumerate(findings):
        path = figs.get(i)
        items.append(_finding(f, _img(path, base) if path is not None and path not in shown else ""))
        if path is not None:
            shown.add(path)
    body = f"<ol>{''.join(items)}</ol>" if findings else \
        "<p>No findings: gradients, activations and curvature look healthy.</p>"
    start, end = markers("doctor")
    note_html = f"<p><small>{html.escape(note)}</small></p>" if note else ""
    return f'{start}\n<section id="thalweg-doctor"><h2>{html.escape(title)}</h2>{note_html}{body}{extra}</section>\n{end}'


def write_html_section(path: Any, section: str, *, name: str = "doctor", lead: bool = True,
                       after: str | None = None) -> Path:
    """Put `section` into the HTML file at `path`: replace an earlier section of that name,
    else insert it after the section named `after` (if present), else right after the page
    title (`lead`, so findings come before the config) or before ``</body>``; create a minimal
    page when the file does not exist."""
    p = Path(path)
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
        doc = ('<!doctype html>\n<html><head><meta charset="utf-8"><title>thalweg doctor</title></head>'
               f"<body style=\"font-family:sans-serif;max-width:960px;margin:2em auto\">\n{section}\n</body></html>\n")
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    tmp.write_text(doc, encoding="utf-8")
    os.replace(tmp, p)
    return p
