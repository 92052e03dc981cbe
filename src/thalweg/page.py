"""The one way thalweg writes HTML (the run report, the doctor's page, `watch()`'s report, the
meta and bench reports, `inspect`'s section): every value goes in escaped unless it is
:class:`Markup` — HTML this code wrote itself. A run name, a metric a user logged, a path, a
status read back from results.jsonl can hold ``<script>``; on these pages it is text.

Built on MarkupSafe (Jinja's escaping): ``html("<td>{}</td>", value)`` escapes `value`;
:func:`table`, :func:`figure` and :func:`document` escape every cell, caption and title.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from markupsafe import Markup, escape

__all__ = ["Markup", "document", "escape", "figure", "html", "join", "png_data", "table"]

#: the pages' shared look
STYLE = ("body{font-family:sans-serif;max-width:1180px;margin:2em auto;padding:0 1em;color:#222}"
         "table{border-collapse:collapse;margin:0.5em 0;display:block;overflow-x:auto;max-width:100%}th,td{border-bottom:1px solid #ddd;padding:3px 9px;"
         "text-align:left;font-size:13px}figure{display:inline-block;margin:6px;vertical-align:top;max-width:100%}"
         "img{max-width:100%;height:auto}pre{background:#f6f6f6;padding:1em;overflow-x:auto}")


def html(template: str, *args: Any, **kwargs: Any) -> Markup:
    """`template` (HTML written here) with `{}` fields filled by escaped values (a Markup value
    goes in as it is)."""
    return Markup(template).format(*args, **kwargs)


def join(parts: Iterable[Any], sep: str = "") -> Markup:
    """Parts joined, each escaped unless Markup."""
    return Markup(sep).join(escape(p) for p in parts)


def table(head: Sequence[Any], rows: Iterable[Sequence[Any]], *, row_heads: bool = False) -> Markup:
    """A table; every cell escaped unless Markup (`row_heads`: the first cell of a row is a th)."""
    def row(cells: Sequence[Any]) -> Markup:
        out = []
        for i, c in enumerate(cells):
            cell = "th" if row_heads and i == 0 else "td"
            out.append(html(f"<{cell}>{{}}</{cell}>", c))
        return html("<tr>{}</tr>", join(out))

    top = html("<tr>{}</tr>", join(html("<th>{}</th>", h) for h in head)) if head else Markup("")
    return html("<table>{}{}</table>", top, join(row(r) for r in rows))


def png_data(path: Path) -> str:
    """A PNG file as a data: URL (a page that needs no files beside it)."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def figure(src: str, alt: str, caption: str | None = None, *, style: str = "") -> Markup:
    """An image (its source, alt text and caption escaped)."""
    img = html('<img src="{}" alt="{}"{}>', src, alt, html(' style="{}"', style) if style else Markup(""))
    cap = html("<figcaption>{}</figcaption>", caption) if caption is not None else Markup("")
    return html("<figure>{}{}</figure>", img, cap)


def document(title: str, body: Iterable[Any], *, style: str = STYLE) -> str:
    """A whole page: the title (escaped) as <title> and <h1>, then the body parts (each escaped
    unless Markup)."""
    return str(html('<!doctype html>\n<html><head><meta charset="utf-8"><title>{0}</title>\n<style>{1}</style>'
                    "\n</head><body>\n<h1>{0}</h1>\n{2}\n</body></html>\n", title, Markup(style),
                    join(body, "\n")))
