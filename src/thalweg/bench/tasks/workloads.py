"""The bench's workloads: a registry like the optimizers' (name → factory → :class:`Workload`;
what a workload is, and the built-in ones, are in :mod:`thalweg.bench.tasks.problems`).

A workload is a model + data + loss (built per seed as a :class:`Problem`), a **target** (the
validation metric to reach, set as AlgoPerf does from the best of tuned baselines, stored in
:mod:`thalweg.bench.tasks.targets` with the command that recomputes it), a **step budget** and a
**wall-clock budget**. Parameters go in ``name(key=value, ...)`` or as keyword arguments to
:func:`get`. `get` knows registered workloads only and never imports anything; a
`thalweg train` config or a workload of the user's own code is loaded by
:mod:`thalweg.bench.tasks.loader`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from thalweg.bench.tasks import charlm, configs  # noqa: F401  (their workloads join BUILTIN)
from thalweg.bench.tasks.problems import BUILTIN, Problem, Workload, WorkloadError, workload_key

__all__ = [
    "Problem",
    "Workload",
    "WorkloadError",
    "get",
    "infos",
    "names",
    "parse_key",
    "register",
    "workload_key",
]


_FACTORIES: dict[str, Callable[..., Workload]] = dict(BUILTIN)


def register(name: str) -> Callable[[Callable[..., Workload]], Callable[..., Workload]]:
    """Decorator: add a workload factory (keyword parameters with defaults) under `name`."""

    def deco(factory: Callable[..., Workload]) -> Callable[..., Workload]:
        if name in _FACTORIES and _FACTORIES[name] is not factory:
            raise ValueError(f"workload {name!r} is already registered")
        _FACTORIES[name] = factory
        return factory

    return deco


def names() -> list[str]:
    """The registered workload names."""
    return list(_FACTORIES)


def infos() -> list[Workload]:
    """Every registered workload with its default parameters."""
    return [get(n) for n in names()]


def parse_key(text: str) -> tuple[str, dict[str, Any]]:
    """Split ``"quadratic(condition_number=1000)"`` into a name and literal parameters."""
    import ast

    text = text.strip()
    if "(" not in text:
        return text, {}
    if not text.endswith(")"):
        raise WorkloadError(f"workload {text!r}: expected name(key=value, ...)")
    name, args = text[: text.index("(")].strip(), text[text.index("(") :]
    try:
        call = ast.parse(f"f{args}", mode="eval").body
        assert isinstance(call, ast.Call) and not call.args
        params = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords if kw.arg}
    except (SyntaxError, ValueError, AssertionError):
        raise WorkloadError(f"workload {text!r}: parameters must be key=literal pairs") from None
    return name, params


def get(name: str, **params: Any) -> Workload:
    """The registered workload `name` with `params`, and its stored target (nothing is
    imported: a name that is not registered is an error)."""
    from thalweg.bench.tasks import targets

    base, parsed = parse_key(name)
    params = {k: tuple(v) if isinstance(v, list) else v for k, v in {**parsed, **params}.items()}
    if base not in _FACTORIES:
        raise WorkloadError(f"unknown workload {base!r}; known: {', '.join(names())}")
    factory = _FACTORIES[base]
    known = inspect.signature(factory).parameters
    for k in params:
        if k not in known:
            raise WorkloadError(
                f"workload {base!r} has no parameter {k!r}; it takes: {', '.join(known) or 'none'}"
            )
    try:
        w = factory(**params)
    except (TypeError, ValueError) as e:
        raise WorkloadError(f"workload {base!r}: {e}") from None
    # parameters equal to the defaults are left out, so `quadratic` and
    # `quadratic(condition_number=100.0)` are one workload with one key and one target
    given = {k: v for k, v in sorted(params.items()) if v != known[k].default}
    w = replace(w, params=given, ref=workload_key(base, given))
    if w.target is None and (stored := targets.lookup(w.key)) is not None:
        w = w.with_target(stored["value"], stored.get("source", ""))
    return w
