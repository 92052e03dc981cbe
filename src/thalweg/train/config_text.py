"""The config as commented TOML, generated from the pydantic models: every field of every
section with the value a run uses, what it means (the field's description), its choices, and
its default when the shown value differs — so `thalweg train --print-config` cannot drift from
what the config accepts. Unset optional fields appear as comments."""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel

__all__ = ["model_fields", "render"]

_COMMENT_AT = 34  # column where the explanation starts


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml(x)}" for k, x in v.items()) + " }" if v else "{}"
    raise TypeError(f"cannot write {v!r} as TOML")


def _choices(annotation: Any) -> list[str]:
    """The literal values a field accepts (a `Literal[...]`, possibly inside a union)."""
    out: list[str] = []
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return [str(a) for a in args]
    for a in args:
        out += _choices(a)
    return out


def _section_model(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _default(field: Any) -> Any:
    return field.default_factory() if field.default_factory is not None else field.default


def _line(text: str, comment: str) -> str:
    if not comment:
        return text
    return f"{text.ljust(_COMMENT_AT - 2)}  # {comment}" if len(text) < _COMMENT_AT - 2 else f"{text}  # {comment}"


def _explain(field: Any, value: Any) -> str:
    parts = [field.description or ""]
    ch = _choices(field.annotation)
    if ch and len(ch) > 1:
        parts.append(" | ".join(ch))
    d = _default(field)
    if value != d and d is not None and not isinstance(d, BaseModel):
        parts.append(f"if left out: {_toml(d) if d is not None else 'unset'}")
    return "; ".join(p for p in parts if p)


def render(model: type[BaseModel], values: Mapping[str, Any], *, header: str = "",
           extra: Callable[[str, Mapping[str, Any]], list[str]] | None = None, _path: str = "") -> str:
    """Commented TOML for `model` with `values` (a partial dict: what is not given shows the
    field's default). `extra(section, section_values)` may add lines to a section (e.g. an
    optimizer's other hyperparameters, as comments)."""
    lines: list[str] = [header.rstrip("\n")] if header else []
    subs: list[tuple[str, type[BaseModel], Any]] = []
    for name, field in model.model_fields.items():
        sub = _section_model(field.annotation)
        if sub is not None:
            subs.append((name, sub, values.get(name) or {}))
            continue
        value = values.get(name, _default(field))
        if value is None:
            lines.append(_line(f"# {name} =", _explain(field, value) or "unset"))
        else:
            lines.append(_line(f"{name} = {_toml(value)}", _explain(field, value)))
    if model.model_config.get("extra") == "allow":  # free keys (an optimizer's hyperparameters)
        for k, v in values.items():
            if k not in model.model_fields:
                lines.append(f"{k} = {_toml(v)}")
    if extra is not None:
        lines += extra(_path, values)
    for name, sub, vals in subs:
        path = f"{_path}.{name}" if _path else name
        doc = " ".join((sub.__doc__ or "").split()).split(". ")[0].rstrip(".")
        lines.append("")
        lines.append(_line(f"[{path}]", doc))
        body = render(sub, vals, extra=extra, _path=path)
        lines += body.splitlines()
    return "\n".join(lines) + ("\n" if not _path else "")


def model_fields(model: type[BaseModel], _path: str = "") -> list[str]:
    """Every field as a dotted name (`train.log_every`, `regularization.early_stopping.patience`)."""
    out: list[str] = []
    for name, field in model.model_fields.items():
        path = f"{_path}.{name}" if _path else name
        sub = _section_model(field.annotation)
        out += model_fields(sub, path) if sub is not None else [path]
    return out
