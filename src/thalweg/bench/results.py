"""results.jsonl: one trial a line, strict JSON (non-finite numbers become null)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

__all__ = ["ResultsFile", "jsonable", "read_results"]


def jsonable(x: Any) -> Any:
    """`x` with NaN/±inf replaced by None and tuples by lists (strict JSON)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    return x


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """The records of a results.jsonl (a bad line is an error naming the file and line)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{i}: not a JSON record ({e})") from None
    return out


class ResultsFile:
    """Appended as trials finish; rewritten atomically (from the database, the source of
    truth) when a bench starts and ends."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @staticmethod
    def line(rec: dict[str, Any]) -> str:
        return json.dumps(jsonable(rec), allow_nan=False, sort_keys=True) + "\n"

    def rewrite(self, records: list[dict[str, Any]], studies: set[str] | None = None) -> None:
        """Write `records`; with `studies`, lines of other studies already in the file (another
        ruleset run into the same bench) are kept, ahead of these."""
        kept: list[dict[str, Any]] = []
        if studies is not None and self.path.is_file():
            kept = [r for r in read_results(self.path) if r.get("study") not in studies]
        tmp = self.path.with_suffix(".jsonl.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(self.line(r) for r in kept + records)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def append(self, rec: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(self.line(rec))
