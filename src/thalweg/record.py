"""What a command measured, machine-readable: named figures (numbers), tables and text blocks.

The benchmarks and examples write one with `--json PATH`; `docs/build.py` keeps it as
`docs/record/<source>.json` and fills the docs' marked spans from it, so every figure the
docs quote is the one a named command last measured (docs/CONTRACTS.md, "Docs that stay
true"). A figure is kept exact (the docs format it: `<!--fig:source.key|.3f-->`); a table
holds the cells as the command prints them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Record", "format_figure", "render_table"]

_ALIGN = {"l": "---", "r": "---:", "c": ":---:"}


def _plain(value: Any) -> Any:
    """JSON-ready: numpy/torch scalars to Python numbers, non-finite floats to 'inf'/'-inf'/'nan'."""
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@dataclass
class Record:
    """Figures, tables and blocks of one command's run; `write(path)` saves them as strict JSON."""

    figures: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    blocks: dict[str, str] = field(default_factory=dict)

    def figure(self, key: str, value: Any) -> Any:
        """Keep one named number (or short string) and return it."""
        self.figures[key] = _plain(value)
        return value

    def table(self, name: str, header: list[str], rows: list[list[Any]], align: str | None = None) -> None:
        """Keep a table: `align` is one letter per column (l, r or c; default: first l, rest r)."""
        align = align or "l" + "r" * (len(header) - 1)
        if len(align) != len(header) or any(len(r) != len(header) for r in rows):
            raise ValueError(f"table {name!r}: every row and the alignment need {len(header)} columns")
        self.tables[name] = {"header": [str(h) for h in header], "align": align,
                             "rows": [[str(c) for c in r] for r in rows]}

    def block(self, name: str, text: str) -> None:
        """Keep a text block (printed output the docs show in a code block)."""
        self.blocks[name] = text.rstrip("\n")

    def to_dict(self) -> dict[str, Any]:
        return {"figures": self.figures, "tables": self.tables, "blocks": self.blocks}

    def write(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), indent=1, ensure_ascii=False, allow_nan=False) + "\n",
                     encoding="utf-8")
        return p


def render_table(table: dict[str, Any]) -> str:
    """A recorded table as a Markdown table (one line per row, no trailing newline)."""
    esc = [[c.replace("|", "\\|") for c in row] for row in [table["header"], *table["rows"]]]
    lines = ["| " + " | ".join(esc[0]) + " |", "|" + "|".join(_ALIGN[a] for a in table["align"]) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in esc[1:]]
    return "\n".join(lines)


def format_figure(value: Any, spec: str = "") -> str:
    """A figure as the docs print it: `format(value, spec)` for numbers; strings as they are.
    The default for a float is 4 significant digits."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int | float):
        if spec:
            return format(value, spec)
        return str(value) if isinstance(value, int) else format(value, ".4g")
    if isinstance(value, str) and spec and value not in ("inf", "-inf", "nan"):
        raise ValueError(f"a format ({spec!r}) for a string figure {value!r}")
    return str(value)
