"""The seeds' surfaces and the classic test functions, each with its domain, gradient and
known critical points — the terrain on which trajectories and pictures are drawn.

Every function takes a tensor of shape ``[..., d]`` and returns shape ``[...]``, so the same
code evaluates a single point (with autograd) and a whole plotting grid at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import torch
from torch import Tensor

__all__ = [
    "CriticalPoint",
    "Kind",
    "TestFunction",
    "as_function",
    "get",
    "names",
    "register",
]

Kind = Literal["minimum", "maximum", "saddle", "degenerate"]
_KINDS = ("minimum", "maximum", "saddle", "degenerate")


class CriticalPoint(NamedTuple):
    """A point where the gradient vanishes, with its kind from the Hessian's eigenvalues."""

    point: tuple[float, ...]
    kind: Kind


@dataclass(frozen=True)
class TestFunction:
    """A differentiable surface ``f: R^d -> R`` with a plot window and its known critical points.

    ``critical_points`` lists the critical points inside ``domain`` that are known in closed
    form or to machine precision; ``minima`` are the local minima among them (global first).
    """

    name: str
    f: Callable[[Tensor], Tensor]
    dim: int
    domain: tuple[tuple[float, float], ...]
    critical_points: tuple[CriticalPoint, ...] = ()
    latex: str = ""
    description: str = ""
    #: the infimum over R^d, or None when f is unbounded below.
    global_minimum: float | None = None
    default_start: tuple[float, ...] | None = None
    log_levels: bool = False  # contour levels on a log scale (Rosenbrock, Beale)
    extra: dict[str, object] = field(default_factory=dict)

    __test__ = False  # not a pytest class, despite the name

    def __post_init__(self) -> None:
        if len(self.domain) != self.dim:
            raise ValueError(f"domain of {self.name!r} has {len(self.domain)} ranges, dim={self.dim}")
        for cp in self.critical_points:
            if cp.kind not in _KINDS:
                raise ValueError(f"critical point kind {cp.kind!r} of {self.name!r} not in {_KINDS}")
            if len(cp.point) != self.dim:
                raise ValueError(f"critical point {cp.point} of {self.name!r} is not {self.dim}-D")

    @property
    def minima(self) -> list[tuple[float, ...]]:
        """Local minima among the known critical points."""
        return [cp.point for cp in self.critical_points if cp.kind == "minimum"]

    @property
    def bounded_below(self) -> bool:
        return self.global_minimum is not None

    def _check(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            x = torch.as_tensor(x, dtype=torch.float64)
        if x.shape[-1:] != (self.dim,):
            raise ValueError(
                f"{self.name} takes points of shape [..., {self.dim}], got {tuple(x.shape)}"
            )
        return x

    def __call__(self, x: Tensor | Sequence[float]) -> Tensor:
        """Evaluate f at ``x`` of shape ``[..., dim]``."""
        return self.f(self._check(x))  # type: ignore[arg-type]

    def grad(self, x: Tensor | Sequence[float]) -> Tensor:
        """The gradient at ``x`` (shape ``[..., dim]``) by autograd."""
        x = self._check(x).detach().clone().requires_grad_(True)  # type: ignore[arg-type]
        (g,) = torch.autograd.grad(self.f(x).sum(), x)
        return g

    def hessian(self, x: Tensor | Sequence[float]) -> Tensor:
        """The ``dim × dim`` Hessian at a single point ``x`` by autograd."""
        x = self._check(x).detach()  # type: ignore[arg-type]
        if x.dim() != 1:
            raise ValueError(f"hessian takes one point of shape [{self.dim}], got {tuple(x.shape)}")
        return torch.autograd.functional.hessian(self.f, x)

    def grid(self, resolution: int = 200, domain: Sequence[tuple[float, float]] | None = None
             ) -> tuple[list[Tensor], Tensor]:
        """Axes and values on a regular grid over the domain (for contour and line plots)."""
        if resolution < 2:
            raise ValueError(f"resolution must be >= 2, got {resolution}")
        dom = tuple(domain) if domain is not None else self.domain
        axes = [torch.linspace(lo, hi, resolution, dtype=torch.float64) for lo, hi in dom]
        mesh = torch.meshgrid(*axes, indexing="xy")
        pts = torch.stack(mesh, dim=-1)
        with torch.no_grad():
            return axes, self.f(pts)


# ----------------------------------------------------------------------------- formulas

def _x2(x: Tensor) -> Tensor:
    return x[..., 0] ** 2


def _xcos(x: Tensor) -> Tensor:
    return x[..., 0] * torch.cos(math.pi * x[..., 0])


def _x3(x: Tensor) -> Tensor:
    return x[..., 0] ** 3


def _neg_x3_plus_3x(x: Tensor) -> Tensor:
    return -x[..., 0] ** 3 + 3 * x[..., 0]


def _bowl(x: Tensor) -> Tensor:
    return x[..., 0] ** 2 + x[..., 1] ** 2


def _saddle(x: Tensor) -> Tensor:
    return x[..., 0] ** 2 - x[..., 1] ** 2


def _sinsin(x: Tensor) -> Tensor:
    return torch.sin(x[..., 0]) * torch.sin(x[..., 1])


def _x2_2xy_y3(x: Tensor) -> Tensor:
    a, b = x[..., 0], x[..., 1]
    return a**2 + 2 * a * b + b**3


def _ravine(x: Tensor) -> Tensor:
    return 0.1 * x[..., 0] ** 2 + 2 * x[..., 1] ** 2


def _rosenbrock(x: Tensor) -> Tensor:
    a, b = x[..., 0], x[..., 1]
    return (1 - a) ** 2 + 100 * (b - a**2) ** 2


def _beale(x: Tensor) -> Tensor:
    a, b = x[..., 0], x[..., 1]
    return (1.5 - a + a * b) ** 2 + (2.25 - a + a * b**2) ** 2 + (2.625 - a + a * b**3) ** 2


# Critical points of x·cos(πx) on [-1, 2]: roots of cos(πx) − πx·sin(πx), found by brentq to
# 1e-15 (the two inner ones are symmetric because f is odd).
_XCOS_C1 = 0.27385268680085095
_XCOS_C2 = 1.0904082219467213
_HALF_PI = math.pi / 2

_REGISTRY: dict[str, TestFunction] = {}


def register(fn: TestFunction) -> TestFunction:
    """Add a surface to the table so that `get(name)` and the CLI find it."""
    key = fn.name.lower()
    if key in _REGISTRY and _REGISTRY[key] is not fn:
        raise ValueError(f"test function {fn.name!r} is already registered")
    _REGISTRY[key] = fn
    return fn


def _cp(kind: Kind, *point: float) -> CriticalPoint:
    return CriticalPoint(tuple(float(p) for p in point), kind)


for _fn in (
    TestFunction(
        "x2", _x2, 1, ((-2.0, 2.0),), (_cp("minimum", 0.0),), r"$x^2$",
        "The simplest convex bowl: GD is stable for η < 1 (η·f'' < 2).",
        global_minimum=0.0, default_start=(-1.8,),
    ),
    TestFunction(
        "xcos", _xcos, 1, ((-1.0, 2.0),),
        (_cp("minimum", -_XCOS_C1), _cp("maximum", _XCOS_C1), _cp("minimum", _XCOS_C2)),
        r"$x\cos(\pi x)$",
        "A local minimum near −0.27 and the global one (on [−1, 2]) near 1.09.",
        global_minimum=None, default_start=(-0.9,),
        extra={"global_minimum_on_domain": _XCOS_C2 * math.cos(math.pi * _XCOS_C2)},
    ),
    TestFunction(
        "x3", _x3, 1, ((-2.0, 2.0),), (_cp("degenerate", 0.0),), r"$x^3$",
        "A 1-D saddle: the gradient and the Hessian vanish at 0, yet 0 is no extremum.",
        global_minimum=None, default_start=(1.5,),
    ),
    TestFunction(
        "neg_x3_plus_3x", _neg_x3_plus_3x, 1, ((-2.5, 2.5),),
        (_cp("minimum", -1.0), _cp("maximum", 1.0)), r"$-x^3 + 3x$",
        "Unbounded below: GD started right of the local maximum at 1 runs off to +∞.",
        global_minimum=None, default_start=(1.2,),
    ),
    TestFunction(
        "bowl", _bowl, 2, ((-2.0, 2.0), (-2.0, 2.0)), (_cp("minimum", 0.0, 0.0),),
        r"$x^2 + y^2$", "The isotropic convex bowl.", global_minimum=0.0,
        default_start=(-1.5, 1.2),
    ),
    TestFunction(
        "saddle", _saddle, 2, ((-2.0, 2.0), (-2.0, 2.0)), (_cp("saddle", 0.0, 0.0),),
        r"$x^2 - y^2$",
        "The textbook saddle: a minimum along x, a maximum along y.",
        global_minimum=None, default_start=(-1.5, 1e-3),
    ),
    TestFunction(
        "sinsin", _sinsin, 2, ((-math.pi, math.pi), (-math.pi, math.pi)),
        (
            _cp("saddle", 0.0, 0.0),
            _cp("maximum", _HALF_PI, _HALF_PI), _cp("maximum", -_HALF_PI, -_HALF_PI),
            _cp("minimum", _HALF_PI, -_HALF_PI), _cp("minimum", -_HALF_PI, _HALF_PI),
        ),
        r"$\sin x \cdot \sin y$",
        "An egg box: maxima and minima alternate around a saddle at the origin.",
        global_minimum=-1.0, default_start=(0.3, 0.2),
    ),
    TestFunction(
        "x2_2xy_y3", _x2_2xy_y3, 2, ((-2.0, 2.0), (-2.0, 2.0)),
        (_cp("saddle", 0.0, 0.0), _cp("minimum", -2.0 / 3.0, 2.0 / 3.0)),
        r"$x^2 + 2xy + y^3$",
        "The seeds' gradient example: ∇f = (2x + 2y, 2x + 3y²); unbounded below through y³.",
        global_minimum=None, default_start=(1.0, 1.5),
    ),
    TestFunction(
        "ravine", _ravine, 2, ((-6.0, 6.0), (-3.0, 3.0)), (_cp("minimum", 0.0, 0.0),),
        r"$0.1x^2 + 2y^2$",
        "An ill-conditioned quadratic (condition number 20): GD zig-zags across the ravine.",
        global_minimum=0.0, default_start=(-5.0, -2.0),
    ),
    TestFunction(
        "rosenbrock", _rosenbrock, 2, ((-2.0, 2.0), (-1.0, 3.0)), (_cp("minimum", 1.0, 1.0),),
        r"$(1-x)^2 + 100(y-x^2)^2$",
        "Rosenbrock's banana valley: easy to enter, slow to follow to (1, 1).",
        global_minimum=0.0, default_start=(-1.5, 2.0), log_levels=True,
    ),
    TestFunction(
        "beale", _beale, 2, ((-4.5, 4.5), (-4.5, 4.5)),
        (_cp("minimum", 3.0, 0.5), _cp("saddle", 0.0, 1.0)),
        r"Beale",
        "Beale's function: a narrow curved valley to (3, 0.5); flat along x = 0.",
        global_minimum=0.0, default_start=(1.0, 1.5), log_levels=True,
    ),
):
    register(_fn)


def names() -> list[str]:
    """Names of all registered test functions."""
    return list(_REGISTRY)


def get(name: str) -> TestFunction:
    """Look a surface up by name; an unknown name raises a ValueError listing the known ones."""
    if not isinstance(name, str):
        raise TypeError(f"function name must be a str, got {type(name).__name__}")
    try:
        return _REGISTRY[name.lower()]
    except KeyError:
        raise ValueError(f"unknown test function {name!r}; known: {', '.join(names())}") from None


def as_function(fn: str | TestFunction) -> TestFunction:
    """Accept a name or a TestFunction (what the trajectory and plot APIs take)."""
    if isinstance(fn, TestFunction):
        return fn
    if isinstance(fn, str):
        return get(fn)
    raise TypeError(f"fn must be a test-function name or TestFunction, got {type(fn).__name__}")
