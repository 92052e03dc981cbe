"""results.jsonl: one trial a line, strict JSON (non-finite numbers become null) — the record of
what finished: a bench started again reads it back (a trial the database lost is written back,
never run again), and it is only ever replaced by a superset of itself."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["ResultsFile", "jsonable", "read_results", "scan_results"]


def jsonable(x: Any) -> Any:
    """`x` with NaN/±inf replaced by None and tuples by lists (strict JSON)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    return x


def _parse(line: str) -> tuple[dict[str, Any] | None, str]:
    """(the record, "") or (None, why the line is not one)."""
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as e:
        return None, f"not JSON ({e})"
    if not isinstance(rec, dict):
        return None, f"a JSON {type(rec).__name__}, not a record (an object)"
    return rec, ""


def scan_results(path: str | Path) -> tuple[list[dict[str, Any]], list[tuple[int, str, str]]]:
    """(records, rejected lines as (line number, text, why)) of a results.jsonl; a missing file
    has none. A line cut short by a kill while it was appended is one of the rejected."""
    out: list[dict[str, Any]] = []
    bad: list[tuple[int, str, str]] = []
    p = Path(path)
    if not p.is_file():
        return out, bad
    with open(p, encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                rec, why = _parse(line)
                if rec is None:
                    bad.append((i, line.rstrip("\n"), why))
                else:
                    out.append(rec)
    return out, bad


def _lacks(rec: dict[str, Any], required: Mapping[str, type | tuple[type, ...]]) -> str | None:
    """What `rec` lacks of `required` (dotted keys reach into nested objects), or None."""
    for key, kind in required.items():
        v: Any = rec
        for part in key.split("."):
            if not isinstance(v, dict) or part not in v:
                return f"lacks {key!r}"
            v = v[part]
        if (isinstance(v, bool) and kind in (int, float)) or not isinstance(v, kind):
            names = "/".join(t.__name__ for t in (kind if isinstance(kind, tuple) else (kind,)))
            return f"{key!r} = {json.dumps(v)[:60]} is not {names}"
    return None


def read_results(path: str | Path, required: Mapping[str, type | tuple[type, ...]] | None = None) -> list[dict[str, Any]]:
    """The records of a results.jsonl: a line that is not a JSON object, or (with `required`:
    key → type, dotted keys reach into nested objects) a record that lacks a key, is an error
    naming the file and line."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        out, bad = scan_results(path)
        numbers = [i for i, line in enumerate(Path(path).read_text(encoding="utf-8", errors="replace").splitlines(), 1)
                   if line.strip()]
    except OSError as e:
        raise ValueError(f"{path}: cannot read it ({e.strerror or e})") from None
    if bad:
        i, _, why = bad[0]
        raise ValueError(f"{path}:{i}: {why}")
    for line, rec in zip(numbers, out, strict=False) if required else ():
        if (why := _lacks(rec, required)) is not None:
            raise ValueError(f"{path}:{line}: not a bench trial record: it {why}" if why.startswith("lacks")
                             else f"{path}:{line}: not a bench trial record: {why}")
    return out


class ResultsFile:
    """Appended as trials finish; rewritten atomically (from the database, the source of
    truth) when a bench starts and ends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rejected_path = path.with_name(path.stem + ".rejected.jsonl")

    def read(self) -> tuple[list[dict[str, Any]], list[tuple[int, str, str]]]:
        """(records, rejected lines) as they are now (see :func:`scan_results`)."""
        return scan_results(self.path)

    def reject(self, lines: list[tuple[int, str, str]]) -> None:
        """Keep lines that are not records in `<name>.rejected.jsonl` (appended), so the rewrite
        that drops them from results.jsonl loses nothing."""
        with open(self.rejected_path, "a", encoding="utf-8") as f:
            f.writelines(json.dumps({"line": i, "text": text, "why": why}) + "\n" for i, text, why in lines)
            f.flush()
            os.fsync(f.fileno())

    @staticmethod
    def line(rec: dict[str, Any]) -> str:
        return json.dumps(jsonable(rec), allow_nan=False, sort_keys=True) + "\n"

    def rewrite(self, records: list[dict[str, Any]], studies: set[str] | None = None) -> None:
        """Write `records` atomically; with `studies`, the file's records of other studies
        (another ruleset run into the same bench), and any of these studies' that `records`
        lacks, are kept ahead of them — the file only ever grows."""
        kept: list[dict[str, Any]] = []
        if studies is not None:
            new = {(r.get("study"), r.get("trial")) for r in records}
            kept = [r for r in scan_results(self.path)[0]
                    if r.get("study") not in studies or (r.get("study"), r.get("trial")) not in new]
        tmp = self.path.with_suffix(".jsonl.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(self.line(r) for r in kept + records)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def append(self, rec: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(self.line(rec))
