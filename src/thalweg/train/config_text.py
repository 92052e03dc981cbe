"""The config as text. Reading: a TOML file or text, with dotted overrides, where anything
wrong is one :class:`ConfigError` naming the section, field and value (the trainer's and meta
runs' configs both read this way). Writing: the config as commented TOML, generated from the
pydantic models: every field of every
section with the value a run uses, what it means (the field's description), its choices, and
its default when the shown value differs — so `thalweg train --print-config` cannot drift from
what the config accepts. Unset optional fields appear as comments."""

from __future__ import annotations

import tomllib
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

__all__ = ["ConfigError", "model_fields", "optimizer_lines", "read_config", "read_config_file", "render", "toml_value"]

_COMMENT_AT = 34  # column where the explanation starts


class ConfigError(ValueError):
    """A bad configuration: `section`, `field` and `value` say exactly what is wrong."""

    def __init__(self, section: str, field: str, value: Any, problem: str) -> None:
        self.section, self.field, self.value, self.problem = section, field, value, problem
        where = f"[{section}] {field}" if section else field
        super().__init__(f"config error: {where} = {value!r}: {problem}")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A TOML file as a dict; a missing, non-UTF-8 or malformed file is one ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("", "config", str(p), "no such file" if not p.exists() else "not a file")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError("", "config", str(p), f"not UTF-8 text (byte 0x{raw[e.start]:02x} on "
                          f"line {line}); save the file as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("", "config", str(p), f"not valid TOML: {e}") from None


def read_config(path: str | Path | None, default: str,
                overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The TOML at `path` (or the text `default` when `path` is None) as a dict, with dotted
    overrides applied ("train.epochs" -> data["train"]["epochs"]); what `thalweg train` and
    `thalweg meta` read before validating."""
    from thalweg import overrides as ov

    data = tomllib.loads(default) if path is None else read_config_file(path)
    try:
        ov.apply(data, overrides or {})
    except ov.OverrideError as e:
        raise ConfigError(e.section, e.field, e.value, str(e)) from None
    return data


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }" if v else "{}"
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
        parts.append(f"if left out: {toml_value(d) if d is not None else 'unset'}")
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
            lines.append(_line(f"{name} = {toml_value(value)}", _explain(field, value)))
    if model.model_config.get("extra") == "allow":  # free keys (an optimizer's hyperparameters)
        for k, v in values.items():
            if k not in model.model_fields:
                lines.append(f"{k} = {toml_value(v)}")
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


def optimizer_lines(section: str, values: dict[str, Any]) -> list[str]:
    """The optimizer's other hyperparameters with their defaults, as comments (from the registry)."""
    if section != "optimizer":
        return []
    from thalweg.optim import registry

    try:
        info = registry.get(str(values.get("name", "adamw")))
    except ValueError:
        return []
    rest = [h for h in info.hyperparameters if h.name not in values]
    return [f"# {h.name} = {toml_value(list(h.default) if isinstance(h.default, tuple) else h.default)}"
            for h in rest if h.default is not None]
