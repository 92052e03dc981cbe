"""The machinery of transform chains: the `Transform` base class and `Chain`, which runs
transforms in order as one in-place update (eagerly, or traced by `torch.compile` into one
fused kernel per pass). What a transform's math reads (hyperparameter references, the step's
context, reduction totals, the scaled in-place ops) is in :mod:`.context`, re-exported here.

A chain is one pass over memory unless a transform that needs the global norm of the update
(`clip_by_global_norm`) stands after others: the norm of the update *there* is a reduction
over every parameter, so the chain splits into passes at it (the update so far is kept in a
scratch buffer, the norm taken, the rest applied). Clip-first chains stay one pass: their
norm is the raw gradients', taken before the pass.

Reductions in general (`Transform.reduces`): a transform may need sums over its input, the
parameters and its state, over every parameter (`"global"`: Prodigy's d) or per tensor
(`"tensor"`: LAMB's and LARS's trust ratios). It starts a pass the same way; the core sums
its :meth:`Transform.statistics` over the scope (segment offsets, no loop per parameter),
and :meth:`Transform.combine` turns the sums into what `apply` reads as `norm`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, ParamSpec, TypeVar

import torch
from torch import Tensor

from thalweg.optim.registry import Hyperparameter

from .context import (
    Hyper,
    HyperValue,
    NoScalars,
    NoState,
    StepContext,
    Totals,
    add_scaled,
    add_scaled_,
    addcmul,
    addcmul_,
    resolve,
)

__all__ = [
    "Chain",
    "Hyper",
    "HyperValue",
    "NoScalars",
    "NoState",
    "Pass",
    "StepContext",
    "Totals",
    "Transform",
    "add_scaled",
    "add_scaled_",
    "addcmul",
    "addcmul_",
    "chain",
    "factory",
    "global_norm",
    "resolve",
]


class Transform:
    """One stage of an update rule, with named state and named scalars.

    A subclass sets:

    - `State`: a NamedTuple whose fields are the state buffers, named as in torch.optim's
      state dicts (optional buffers default to None); `state_names` (per instance, default
      all fields) says which this instance keeps; :meth:`init` creates them (zeros).
    - `Scalars`: a NamedTuple of the per-step scalars, computed in float64 on the host by
      :meth:`scalars`; `n_scalars` is derived from it.
    - `schema`: one :class:`Hyperparameter` per argument; :meth:`check_args` validates
      the constructor's arguments with it (group references and schedules pass).
    - flags: `counts_steps` (keeps torch's per-parameter `step`), `needs_global_norm` (gets
      the norm of the incoming update over all parameters), `is_scale` (the output is u times
      its one scalar: the chain folds it into the transform before it, or into the final
      add), `absorbs_scale` (its output is linear in one scalar, which :meth:`scalars`
      multiplies by `ctx.scale`), `reduces` (None, "global" or "tensor": sums of
      :meth:`statistics` over every parameter or over each tensor, made by :meth:`combine`
      into `apply`'s `norm`; such a transform starts a pass), `weight_state` (its buffers
      are copies of the weights, e.g. schedule-free's z: kept at the parameter's precision,
      so a low-precision `state_dtype` is refused rather than rounding the weights).

    :meth:`apply` does the elementwise math: buffers (and `p`, for decoupled decay) change in
    place; `u` may be the gradient buffer itself, so it is never modified in place. As the
    chain's last stage, :meth:`apply_into` adds the result to `p` (a subclass may split that
    sum to follow a reference implementation's rounding).
    """

    State: ClassVar[type[tuple]] = NoState
    Scalars: ClassVar[type[tuple]] = NoScalars
    schema: ClassVar[tuple[Hyperparameter, ...]] = ()
    name: ClassVar[str] = "transform"
    counts_steps: bool = False
    needs_global_norm: bool = False
    is_scale: bool = False
    absorbs_scale: bool = False
    reduces: ClassVar[str | None] = None
    weight_state: ClassVar[bool] = False
    state_names: tuple[str, ...]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "state_names" not in cls.__dict__:
            cls.state_names = tuple(cls.State._fields)  # type: ignore[attr-defined]

    @property
    def n_scalars(self) -> int:
        """How many scalars :meth:`scalars` returns (the fields of `Scalars`)."""
        return len(self.Scalars._fields)  # type: ignore[attr-defined]

    def check_args(self, **values: Any) -> None:
        """Validate constructor arguments against `schema`; the error names this transform
        and the argument. A group reference (:class:`Hyper`) passes where the argument is
        `schedulable` (a per-step value; the optimizer checks the group); structural
        arguments (`amsgrad`, `nesterov`, …) change the kernel and must be given."""
        for spec in self.schema:
            if spec.name in values and not (spec.schedulable and isinstance(values[spec.name], Hyper)):
                spec.check(values[spec.name], where=f"{self.name}: {spec.name}")

    def init(self, p: Tensor) -> dict[str, Tensor]:
        """Fresh state buffers shaped like `p` (default: zeros)."""
        return {k: torch.zeros_like(p, memory_format=torch.contiguous_format) for k in self.state_names}

    def scalars(self, ctx: StepContext) -> tuple:
        """This step's scalars, as a `Scalars` tuple."""
        return self.Scalars()

    def apply(self, u: Tensor, p: Tensor, state: Any, s: Any, norm: Tensor | None) -> Tensor:
        """Return the new update from `u`, the parameter `p`, the `State` tuple, the
        `Scalars` tuple and (for `needs_global_norm`) the norm of `u` over all parameters
        (for `reduces`: what :meth:`combine` made; `norm[j]` broadcasts against `u`)."""
        raise NotImplementedError

    def apply_into(self, u: Tensor, p: Tensor, state: Any, s: Any, norm: Tensor | None) -> None:
        """Add :meth:`apply`'s result to `p` (the chain's last stage calls this)."""
        p.add_(self.apply(u, p, state, s, norm))

    def statistics(self, u: Tensor, p: Tensor, state: Any, s: Any, total: Totals) -> Tensor:
        """For `reduces`: the sums this transform needs of its input `u`, `p` and its state,
        stacked, each made by `total.sum(x)` / `total.sumsq(x)` ((m,), or (m, k) per tensor).
        Read-only: state changes belong in :meth:`apply`."""
        raise NotImplementedError

    def combine(self, sums: Tensor, ctx: StepContext, shapes: Sequence[torch.Size]) -> Tensor:
        """For `reduces`: from the sums over the scope to `apply`'s `norm`: (m',) for a global
        reduction; (m', k) per tensor, whose column i the core spreads over tensor i's
        elements (`shapes` are the k tensors' shapes)."""
        return sums


P = ParamSpec("P")
T = TypeVar("T", bound=Transform)


def factory(cls: Callable[P, T], name: str) -> Callable[P, T]:
    """The lowercase, optax-style factory of a transform class (`scale_by_adam(...)` builds
    a `ScaleByAdam`): a function with the class's signature and docstring."""

    def make(*args: P.args, **kwargs: P.kwargs) -> T:
        return cls(*args, **kwargs)

    make.__name__ = make.__qualname__ = name
    make.__doc__ = cls.__doc__
    make.__wrapped__ = cls  # type: ignore[attr-defined]  # inspect.signature shows the class's
    return make


@dataclass(frozen=True)
class _Op:
    """One transform as the kernel runs it: where its state and scalars sit in the flat lists."""

    transform: Transform
    index: int
    state_at: int
    scalar_at: int


@dataclass(frozen=True)
class Pass:
    """Transforms run in one pass over memory; `needs_norm`: the first needs the global norm
    of the pass's input."""

    ops: tuple[_Op, ...]
    needs_norm: bool

    @property
    def reducer(self) -> _Op | None:
        """The op whose reduction (over this pass's input) is taken before the pass."""
        return self.ops[0] if self.ops and self.ops[0].transform.reduces else None


class Chain:
    """Transforms applied in order; the result `u` is added to the parameter.

    Pure scales (`scale_by_lr`, `scale`, `flip_sign`) right after a transform that
    `absorbs_scale` are folded into its scalars on the host (Adam's −lr/(1 − β₁ᵗ) is one
    factor, as in torch), so each transform has one meaning and the kernel does no extra
    multiply.
    """

    def __init__(self, transforms: Sequence[Transform]) -> None:
        for t in transforms:
            if not isinstance(t, Transform):
                raise TypeError(f"chain() takes Transform objects, got {type(t).__name__}")
        self.transforms = tuple(transforms)
        keys = [k for t in self.transforms for k in t.state_names]
        if len(set(keys)) != len(keys):
            raise ValueError(f"two transforms in the chain use the same state name: {keys}")
        for t in self.transforms:
            required = [f for f in t.State._fields if f not in t.State._field_defaults]  # type: ignore[attr-defined]
            if not set(required) <= set(t.state_names) <= set(t.State._fields):  # type: ignore[attr-defined]
                raise ValueError(f"{t.name}: state_names {t.state_names} do not fit State {t.State._fields}")  # type: ignore[attr-defined]
        self.state_keys = tuple(keys)
        self.counts_steps = any(t.counts_steps for t in self.transforms)
        # fold pure scales into the absorbing transform right before them
        self._folds: dict[int, list[int]] = {}  # absorbing index → the scales folded into it
        kept: list[int] = []
        host: int | None = None
        for k, t in enumerate(self.transforms):
            if t.is_scale and host is not None:
                self._folds.setdefault(host, []).append(k)
                continue
            kept.append(k)
            host = k if t.absorbs_scale else None
        state_at = [0]
        for t in self.transforms:
            state_at.append(state_at[-1] + len(t.state_names))
        passes: list[list[_Op]] = [[]]
        norms = [False]
        hi = 0
        for k in kept:
            t = self.transforms[k]
            if t.reduces not in (None, "global", "tensor"):
                raise ValueError(f"{t.name}: reduces must be None, 'global' or 'tensor', got {t.reduces!r}")
            if t.needs_global_norm or t.reduces:
                if passes[-1]:  # a reduction of the update so far: a new pass starts here
                    passes.append([])
                    norms.append(False)
                norms[-1] = t.needs_global_norm
            passes[-1].append(_Op(t, k, state_at[k], hi))
            hi += t.n_scalars
        self.n_scalars = hi
        self.passes = tuple(Pass(tuple(ops), n) for ops, n in zip(passes, norms, strict=True))
        self.needs_global_norm = any(ps.needs_norm for ps in self.passes)
        self.reduces = any(ps.reducer is not None for ps in self.passes)
        last = self.passes[-1].ops
        #: eagerly this chain is already one pass over memory (plain SGD: p.add_(g, alpha=−lr)),
        #: so compiling it buys nothing
        self.single_pass = len(self.passes) == 1 and len(last) == 1 and last[0].transform.is_scale

    def init(self, p: Tensor) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for t in self.transforms:
            out.update(t.init(p))
        return out

    def scalars(self, group: Mapping[str, Any], step: int) -> list[float]:
        """The flat list of this step's scalars (folded scales multiplied into their host)."""
        vals: list[float] = []
        for ps in self.passes:
            for op in ps.ops:
                t = op.transform
                scale = 1.0
                for j in self._folds.get(op.index, ()):
                    (factor,) = self.transforms[j].scalars(StepContext(group, step))
                    scale *= factor
                s = t.scalars(StepContext(group, step, scale))
                if len(s) != t.n_scalars:
                    raise ValueError(f"{t.name}.scalars() returned {len(s)} values, its Scalars has {t.n_scalars}")
                vals.extend(float(x) for x in s)
        return vals

    def update(self, p: Tensor, g: Tensor, state: Sequence[Tensor], hp: Any, norm: Tensor | tuple[Tensor, Tensor] | None,
               part: int = 0, out: Tensor | None = None) -> None:
        """Run pass `part` in place: `state` (and `p`, for decoupled decay) change, `g` does
        not. The result is added to `p`, or written to `out` when more passes follow. `hp`
        holds all the chain's scalars (floats when eager, a 1-D tensor when compiled)."""
        u = g
        eager = not isinstance(hp, Tensor)
        ops = self.passes[part].ops
        if isinstance(norm, tuple):  # a per-tensor reduction over a flat buffer: (values, element → tensor)
            norm = norm[0][:, norm[1]]
        for k, op in enumerate(ops):
            t = op.transform
            s = t.Scalars(*[hp[op.scalar_at + j] for j in range(t.n_scalars)])
            last = k == len(ops) - 1 and out is None
            if last and eager and t.is_scale:
                # p ← p + s·u as one pass (torch's `add_(u, alpha=−lr)`), not a product then a sum
                p.add_(u, alpha=s[0])
                return
            n = len(t.state_names)
            st = t.State(**dict(zip(t.state_names, state[op.state_at : op.state_at + n], strict=True)))
            if last:
                t.apply_into(u, p, st, s, norm if k == 0 else None)
                return
            u = t.apply(u, p, st, s, norm if k == 0 else None)
        if out is None:
            p.add_(u)
        else:
            out.copy_(u)

    def statistics(self, p: Tensor, g: Tensor, state: Sequence[Tensor], hp: Any, part: int,
                   total: Totals) -> Tensor:
        """The sums pass `part`'s reducing transform asks for, over this piece of memory (`g`
        is the pass's input: the gradient, or the update so far)."""
        op = self.passes[part].reducer
        assert op is not None, f"pass {part} does not reduce"
        t = op.transform
        s = t.Scalars(*[hp[op.scalar_at + j] for j in range(t.n_scalars)])
        n = len(t.state_names)
        st = t.State(**dict(zip(t.state_names, state[op.state_at : op.state_at + n], strict=True)))
        return t.statistics(g, p, st, s, total)


def chain(*transforms: Transform) -> Chain:
    """Compose transforms into one update rule (pass the result to `FlatOptimizer`)."""
    return Chain(transforms)


def global_norm(grads: Sequence[Tensor]) -> Tensor:
    """Euclidean norm over several flat gradient buffers, as a 0-d float32+ tensor."""
    sq = [g.float().pow(2).sum() if g.dtype in (torch.float16, torch.bfloat16) else g.pow(2).sum() for g in grads]
    return torch.stack([x.to(sq[0].device) for x in sq]).sum().sqrt()
