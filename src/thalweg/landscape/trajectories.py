"""Run optimizers from one start point on a test surface and record their paths and losses.

Optimizers come as thalweg registry names or aliases (with hyperparameters; thalweg's own
optimizers), torch optimizer classes given explicitly, or ``(label, factory)`` pairs; a path that diverges (non-finite, or leaves a large box around the
plot window) is stopped and marked, never crashed on.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from thalweg.landscape.functions import TestFunction, as_function
from thalweg.optim import registry
from thalweg.optim.engine.modes import eval_mode

__all__ = [
    "OptimizerSpec",
    "Trajectory",
    "default_optimizers",
    "parse_spec",
    "resolve",
    "trajectories",
]

Factory = Callable[[list[torch.Tensor]], torch.optim.Optimizer]

_CLOSURE_CLASSES = (torch.optim.LBFGS,)


@dataclass
class OptimizerSpec:
    """An optimizer ready to run: its legend label, a factory over a parameter list, flags."""

    label: str
    factory: Factory
    needs_closure: bool = False
    hparams: dict[str, Any] = field(default_factory=dict)
    #: the closure calls backward() itself (torch.optim.LBFGS); thalweg's closure optimizers
    #: (Newton, AdaHessian, LBFGS) differentiate the returned loss themselves.
    closure_backward: bool = False


@dataclass
class Trajectory:
    """One optimizer's path: ``points[k]`` after k steps, ``losses[k] = f(points[k])``."""

    label: str
    points: np.ndarray
    losses: np.ndarray
    diverged: bool = False
    #: the step at which the path left the box or became non-finite (None if it did not).
    diverged_at: int | None = None
    hparams: dict[str, Any] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return len(self.points) - 1

    @property
    def escaped(self) -> bool:
        """Stopped by leaving the box while still going downhill (finite, loss below where it
        started): off an unbounded-below surface, or away from a saddle as saddle-free Newton
        is meant to — not a divergence, and not drawn as one."""
        return bool(self.diverged and len(self.losses) > 1 and np.all(np.isfinite(self.points))
                    and np.isfinite(self.losses[-1]) and self.losses[-1] < self.losses[0])

    @property
    def final(self) -> np.ndarray:
        return self.points[-1]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, tuple):
        return "(" + ", ".join(_fmt(x) for x in v) + ")"
    return str(v)


def _label(name: str, hp: Mapping[str, Any]) -> str:
    shown = ", ".join(f"{k}={_fmt(v)}" for k, v in hp.items())
    return f"{name} ({shown})" if shown else name


def _from_registry(name: str, hp: dict[str, Any]) -> OptimizerSpec:
    """A thalweg optimizer by registry name or alias ("gd", "momentum", "nesterov" are
    presets of sgd); the values are checked against its schema now, not at the first step."""
    info = registry.get(name)
    registry.validate_hparams(info.name, {**registry.preset(name), **hp})
    return OptimizerSpec(
        _label(name, hp),
        lambda params: registry.create(name, params, **hp),
        needs_closure=info.needs_closure,
        hparams=dict(hp),
    )


def _from_class(cls: type[torch.optim.Optimizer], hp: dict[str, Any]) -> OptimizerSpec:
    return OptimizerSpec(
        _label(cls.__name__, hp), lambda params: cls(params, **hp),
        needs_closure=issubclass(cls, _CLOSURE_CLASSES), hparams=dict(hp),
        closure_backward=cls.__module__.startswith("torch."),
    )


def resolve(spec: Any) -> OptimizerSpec:
    """Turn one user-facing optimizer description into an :class:`OptimizerSpec`.

    Accepted: ``"adam"``, ``"adam:lr=0.1,betas=(0.9,0.99)"``, ``("adam", {"lr": 0.1})``,
    ``torch.optim.Adam``, ``(torch.optim.Adam, {"lr": 0.1})``, ``(label, factory)``, or a spec.
    """
    if isinstance(spec, OptimizerSpec):
        return spec
    if isinstance(spec, str):
        name, hp = parse_spec(spec)
        return _from_registry(name, hp)
    if isinstance(spec, type) and issubclass(spec, torch.optim.Optimizer):
        return _from_class(spec, {})
    if isinstance(spec, tuple) and len(spec) == 2:
        head, tail = spec
        if isinstance(tail, Mapping):
            hp = dict(tail)
            if isinstance(head, str):
                return _from_registry(head, hp)
            if isinstance(head, type) and issubclass(head, torch.optim.Optimizer):
                return _from_class(head, hp)
        elif isinstance(head, str) and callable(tail):
            return OptimizerSpec(head, tail, needs_closure=bool(getattr(tail, "needs_closure", False)))
    raise TypeError(
        f"cannot read optimizer {spec!r}: give a registry name ('adam:lr=0.1'), (name, hparams), "
        "a torch.optim class, (class, hparams) or (label, factory)"
    )


def _split_top(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return parts


def parse_spec(text: str) -> tuple[str, dict[str, Any]]:
    """Parse ``"name:key=value,key=value"`` (values as Python literals) into (name, hparams)."""
    name, _, rest = text.partition(":")
    name = name.strip()
    if not name:
        raise ValueError(f"optimizer spec {text!r} has no name")
    hp: dict[str, Any] = {}
    for part in _split_top(rest):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"optimizer spec {text!r}: expected key=value, got {part.strip()!r}")
        try:
            hp[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            raise ValueError(
                f"optimizer spec {text!r}: value of {key.strip()!r} is not a number/literal: "
                f"{value.strip()!r}"
            ) from None
    return name, hp


def _box(fn: TestFunction, escape: float) -> tuple[np.ndarray, np.ndarray]:
    lo = np.array([a for a, _ in fn.domain])
    hi = np.array([b for _, b in fn.domain])
    width = hi - lo
    return lo - escape * width, hi + escape * width


def _run_one(fn: TestFunction, spec: OptimizerSpec, start: torch.Tensor, steps: int,
             box: tuple[np.ndarray, np.ndarray]) -> Trajectory:
    x = start.clone().requires_grad_(True)
    opt = spec.factory([x])
    pts = [start.detach().numpy().copy()]
    losses = [float(fn(start))]
    diverged_at: int | None = None

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = fn(x)
        if spec.closure_backward:
            loss.backward()
        return loss

    with np.errstate(all="ignore"):
        for k in range(1, steps + 1):
            try:
                if spec.needs_closure:
                    opt.step(closure)
                else:
                    opt.zero_grad()
                    fn(x).backward()
                    opt.step()
            except (RuntimeError, ValueError, OverflowError) as err:
                # e.g. a singular Newton system: the method broke down, which is a finding too
                if "singular" not in str(err).lower() and "nan" not in str(err).lower():
                    raise
                diverged_at = k
                break
            with eval_mode(opt), torch.no_grad():  # the iterate to show (schedule-free: the average x)
                p = x.detach().numpy().copy()
                loss_k = float(fn(x.detach()))
            out = not np.all(np.isfinite(p)) or np.any(p < box[0]) or np.any(p > box[1])
            if np.all(np.isfinite(p)):
                pts.append(p)
                losses.append(loss_k)
            if out or not math.isfinite(loss_k):
                diverged_at = k
                break
    return Trajectory(spec.label, np.array(pts), np.array(losses),
                      diverged=diverged_at is not None, diverged_at=diverged_at,
                      hparams=spec.hparams)


def trajectories(fn: str | TestFunction, optimizers: Iterable[Any] | Any,
                 start: Sequence[float] | torch.Tensor | None = None, steps: int = 50, *,
                 escape: float = 10.0, dtype: torch.dtype = torch.float64) -> list[Trajectory]:
    """Run each optimizer ``steps`` times from ``start`` on ``fn``; return their paths.

    A path that leaves the box ``domain ± escape·width`` or turns non-finite stops and is
    marked ``diverged`` (with the step), so too-large learning rates can be drawn.
    """
    f = as_function(fn)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"steps must be a non-negative int, got {steps!r}")
    if escape <= 0:
        raise ValueError(f"escape must be > 0, got {escape!r}")
    if start is None:
        if f.default_start is None:
            raise ValueError(f"function {f.name!r} has no default start; pass start=")
        start = f.default_start
    x0 = torch.as_tensor(start, dtype=dtype).detach().reshape(-1)
    if x0.numel() != f.dim:
        raise ValueError(f"start must have {f.dim} coordinate(s) for {f.name!r}, got {list(x0.tolist())}")
    if not torch.isfinite(x0).all():
        raise ValueError(f"start must be finite, got {x0.tolist()}")
    if isinstance(optimizers, (str, OptimizerSpec, type)) or (
        isinstance(optimizers, tuple) and len(optimizers) == 2
        and (isinstance(optimizers[1], Mapping) or callable(optimizers[1]))
        and not isinstance(optimizers[1], (str, OptimizerSpec, type, tuple))
    ):
        optimizers = [optimizers]
    specs = [resolve(o) for o in optimizers]
    if not specs:
        raise ValueError("optimizers is empty; give at least one")
    box = _box(f, escape)
    return [_run_one(f, s, x0, steps, box) for s in specs]


def default_optimizers(fn: str | TestFunction, start: Sequence[float] | None = None) -> list[str]:
    """GD, heavy-ball momentum and Adam with learning rates scaled to the surface's curvature."""
    f = as_function(fn)
    pts = [start if start is not None else f.default_start, *f.minima]
    curv = 0.0
    for p in pts:
        if p is None:
            continue
        eig = torch.linalg.eigvalsh(f.hessian(torch.tensor(p, dtype=torch.float64)))
        curv = max(curv, float(eig.abs().max()))
    lr = 1.0 / curv if curv > 0 else 0.1
    width = max(b - a for a, b in f.domain)
    adam_lr = 0.02 * width
    return [f"sgd:lr={lr:.3g}", f"sgd:lr={lr:.3g},momentum=0.9", f"adam:lr={adam_lr:.3g}"]
