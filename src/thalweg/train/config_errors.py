"""How a config's validation errors read, for the trainer's and meta runs' configs alike:
pydantic's first error as one :class:`ConfigError` naming section, field and value, and a
number in quotes refused by name rather than coerced."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from thalweg.train.config_text import ConfigError

__all__ = ["from_validation_error", "quoted_number"]


def quoted_number(value: Any) -> bool:
    """True for a string that spells a number ("64", "1e-3"): the config refuses those
    everywhere rather than guessing whether the quotes were meant."""
    if not isinstance(value, str):
        return False
    try:
        float(value.strip())
    except ValueError:
        return False
    return bool(value.strip())


def from_validation_error(err: ValidationError) -> ConfigError:
    """pydantic's first error as one ConfigError naming section, field and value (and how
    many more errors there are)."""
    first = err.errors()[0]
    loc = [str(p) for p in first["loc"]]
    section = ".".join(loc[:-1])
    field = loc[-1] if loc else "?"
    value = first.get("input")
    problem = first["msg"]
    if first["type"] == "extra_forbidden":
        problem = "unknown key"
    elif first["type"] == "missing":
        value = None
    elif quoted_number(value):
        problem = f"a number in quotes; write a number: {field} = {value.strip()}"
    elif isinstance(value, bool) and first["type"] in ("int_type", "float_type"):
        problem = f"expected a number, not {str(value).lower()}"
    more = len(err.errors()) - 1
    if more:
        problem += f" (and {more} more error{'s' if more > 1 else ''})"
    return ConfigError(section, field, value, problem)
