"""`--set section.field=value`: one change to a run, meta or bench configuration from the
command line, applied to the TOML's dict *before* it is validated — so the same pydantic
models (and the same one-line errors naming the field) judge it as if it were in the file."""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["OverrideError", "apply", "parse"]


class OverrideError(ValueError):
    """A `--set` that is not `KEY=VALUE`, or whose KEY runs through a value that is not a
    table (`section`, `field`, `value` name that value, as a config error would)."""

    def __init__(self, message: str, section: str = "", field: str = "", value: Any = None) -> None:
        super().__init__(message)
        self.section, self.field, self.value = section, field, value


def _value(text: str) -> Any:
    """A TOML value (`5`, `1e-3`, `true`, `[0.9, 0.95]`, `"x"`); anything else is a string,
    so `--set optimizer.name=muon` needs no quotes."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse(items: Iterable[str]) -> dict[str, Any]:
    """`["train.epochs=5", "optimizer.name=muon"]` → `{"train.epochs": 5, "optimizer.name": "muon"}`."""
    out: dict[str, Any] = {}
    for item in items:
        key, eq, text = item.partition("=")
        key = key.strip()
        parts = key.split(".")
        if not eq or not key or not all(p.strip() for p in parts):
            raise OverrideError(f"--set {item!r}: expected SECTION.FIELD=VALUE, e.g. --set train.epochs=5")
        out[".".join(p.strip() for p in parts)] = _value(text.strip())
    return out


def apply(data: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Set each dotted key of `overrides` in `data` (in place; missing tables are created)."""
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = data
        for i, part in enumerate(parents):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise OverrideError(f"is not a table, so {key} cannot be set",
                                    ".".join(parents[:i]), part, node)
        node[leaf] = value
    return data
