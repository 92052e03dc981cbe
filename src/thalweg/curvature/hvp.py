"""Hessian-vector products for a model + loss + data (many batches, train or eval mode) or for
a plain function f(x) at a point, wrapped as a `HessianOperator` that Lanczos, trace and SLQ use.

Two autodiff backends compute the same product: double-backward (grad of ⟨∇L, v⟩) and
forward-over-reverse (`torch.func.jvp` of `torch.func.grad`). `backend="auto"` uses double-backward
when the gradient graph is cached (one batch), else times both once and caches the faster per
model shape for the process.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp

from thalweg.curvature.linops import (
    MatrixOperator,
    as_operator,
    composite_weight_norm,
    rademacher,
    uses_weight_norm,
)

__all__ = ["HessianOperator", "MatrixOperator", "as_operator", "composite_weight_norm", "hvp", "rademacher"]

Backend = Literal["auto", "double_backward", "forward_over_reverse"]
_BACKENDS = ("double_backward", "forward_over_reverse")
# (model class, #params, batch shapes, mode) -> fastest backend, measured once per process.
_BACKEND_CACHE: dict[tuple[Any, ...], str] = {}


def _as_batches(data: Any) -> list[tuple[Tensor, Tensor]]:
    if isinstance(data, tuple | list) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        batches = [(data[0], data[1])]
    elif isinstance(data, Iterable):
        batches = [tuple(b) for b in data]  # type: ignore[misc]
    else:
        raise TypeError(f"data must be an (x, y) pair or an iterable of (x, y) batches; got {type(data).__name__}")
    if not batches:
        raise ValueError("data is empty: need at least one (x, y) batch")
    for i, b in enumerate(batches):
        if len(b) != 2 or not all(isinstance(t, Tensor) for t in b):
            raise TypeError(f"data batch {i} must be an (x, y) pair of tensors")
        if len(b[0]) == 0 or len(b[0]) != len(b[1]):
            raise ValueError(f"data batch {i}: x has {len(b[0])} rows and y has {len(b[1])}")
    return batches  # type: ignore[return-value]


class HessianOperator:
    """The Hessian of a dataset-mean loss w.r.t. a model's parameters (or of f at a point).

    `matvec(v)` takes and returns a flat vector of length `dim`; `num_matvecs` counts full-data
    Hessian-vector products. In ``mode="train"`` dropout masks are fixed by reseeding the RNG for
    every product (so H is one fixed symmetric matrix) and BatchNorm uses batch statistics
    without touching its running buffers. With one batch the gradient graph is cached, and
    rebuilt when the weights change in place (tracked by their version counters).
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
        data: Any = None,
        *,
        function: Callable[[Tensor], Tensor] | None = None,
        point: Tensor | Sequence[float] | None = None,
        mode: Literal["train", "eval"] = "eval",
        backend: Backend = "auto",
        reduction: Literal["mean", "sum"] = "mean",
        seed: int = 0,
        cache_graph: bool | None = None,
    ) -> None:
        if backend not in ("auto", *_BACKENDS):
            raise ValueError(f"backend must be 'auto', 'double_backward' or 'forward_over_reverse'; got {backend!r}")
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be 'train' or 'eval'; got {mode!r}")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum'; got {reduction!r}")
        self.mode, self.reduction, self.seed, self.num_matvecs = mode, reduction, int(seed), 0
        self.selection_hvps = 0  # products spent timing the backends (not in num_matvecs)
        self._backend_choice: str | None = None if backend == "auto" else backend
        self._graph_cache: dict[int, tuple[Tensor, ...]] = {}
        self._cache_versions: tuple[int, ...] = ()
        if function is not None:
            if model is not None:
                raise ValueError("give either model (+ loss_fn, data) or function (+ point), not both")
            if not callable(function):
                raise TypeError(f"function must be callable, got {type(function).__name__}")
            if point is None:
                raise ValueError("point is required with function")
            x = point if isinstance(point, Tensor) else torch.as_tensor(point, dtype=torch.float64)
            x = x.to(torch.float64) if not x.is_floating_point() else x
            if x.ndim != 1:
                raise ValueError(f"point must be a 1-D vector, got shape {tuple(x.shape)}")
            self.function, self.point, self.model = function, x.detach().clone(), None
            self.dim, self.dtype, self.device = int(x.numel()), x.dtype, x.device
            self.cache_graph = False
            return
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if loss_fn is None or not callable(loss_fn):
            raise TypeError("loss_fn must be a callable (output, target) -> scalar loss")
        self.function, self.model, self.loss_fn = None, model, loss_fn
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("model has no parameters with requires_grad=True")
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.shapes = [p.shape for p in self.params]
        self.numels = [p.numel() for p in self.params]
        self.dim = sum(self.numels)
        self.dtype, self.device = self.params[0].dtype, self.params[0].device
        self.batches = [(x.to(self.device), y.to(self.device)) for x, y in _as_batches(data)]
        total = sum(len(x) for x, _ in self.batches)
        self.num_samples = total
        self.weights = [len(x) / total if reduction == "mean" else 1.0 for x, _ in self.batches]
        self.cache_graph = len(self.batches) == 1 if cache_graph is None else bool(cache_graph)
        self._weight_norm = uses_weight_norm(model)

    # ------------------------------------------------------------------ public
    @property
    def shape(self) -> tuple[int, int]:
        return (self.dim, self.dim)

    @property
    def backend(self) -> str:
        """The backend in use (measured on first use when constructed with ``backend="auto"``)."""
        if self._backend_choice is None:
            self._backend_choice = self._select_backend()
        return self._backend_choice

    @classmethod
    def for_function(cls, function: Callable[[Tensor], Tensor], point: Tensor | Sequence[float], **kw: Any) -> HessianOperator:
        """The Hessian of a plain scalar function ``f(x)`` at ``point``."""
        return cls(function=function, point=point, **kw)

    def matvec(self, v: Tensor) -> Tensor:
        """H @ v for a flat vector v of length `dim` (returned in the operator's dtype)."""
        v = self._check_vector(v)
        self.num_matvecs += 1
        return self._matvec(v, self.backend)

    def gradient(self) -> Tensor:
        """The full-data gradient ∇L as a flat vector (or ∇f at the point)."""
        if self.function is not None:
            x = self.point.clone().requires_grad_(True)
            with torch.enable_grad():
                return torch.autograd.grad(self.function(x), x)[0].detach()
        out = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        with self._context():
            for i, (x, y) in enumerate(self.batches):
                with self._rng(i), torch.enable_grad():
                    loss = self.loss_fn(self.model(x), y)
                    g = torch.autograd.grad(loss, self.params, allow_unused=True)
                out += self.weights[i] * self._flat(g)
        return out

    def loss(self) -> float:
        """The full-data loss (or f at the point) at the current parameters."""
        if self.function is not None:
            with torch.no_grad():
                return float(self.function(self.point))
        total = 0.0
        with self._context(), torch.no_grad():
            for i, (x, y) in enumerate(self.batches):
                with self._rng(i):
                    total += self.weights[i] * float(self.loss_fn(self.model(x), y))
        return total

    def dense(self, max_dim: int = 6000) -> Tensor:
        """The full Hessian as a dim×dim matrix, one product per column (for checks on small models)."""
        if self.dim > max_dim:
            raise ValueError(f"dense Hessian of dim={self.dim} exceeds max_dim={max_dim}; use eigs/trace instead")
        if self.function is not None:
            return torch.autograd.functional.hessian(self.function, self.point).reshape(self.dim, self.dim)
        eye = torch.eye(self.dim, dtype=self.dtype, device=self.device)
        self.num_matvecs += self.dim
        try:  # all columns at once: batched double-backward (vmap over grad_outputs)
            return self._dense_batched(eye)
        except RuntimeError:
            return torch.stack([self._matvec(eye[j], "double_backward") for j in range(self.dim)], dim=1)

    def _dense_batched(self, eye: Tensor, chunk: int = 128) -> Tensor:
        out = torch.zeros(len(eye), self.dim, dtype=self.dtype, device=self.device)
        with self._context():
            for i, (x, y) in enumerate(self.batches):
                with self._rng(i), torch.enable_grad():
                    loss = self.loss_fn(self.model(x), y)
                    grads = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True)
                live = [k for k, g in enumerate(grads) if g is not None and g.requires_grad]
                offsets = [sum(self.numels[:k]) for k in range(len(self.numels))]
                for s in range(0, len(eye), chunk):
                    rows = eye[s : s + chunk]
                    outs = [rows[:, offsets[k] : offsets[k] + self.numels[k]].reshape(len(rows), *self.shapes[k])
                            for k in live]
                    hv = torch.autograd.grad([grads[k] for k in live], self.params, grad_outputs=outs,
                                             retain_graph=True, is_grads_batched=True, allow_unused=True)
                    flat = torch.cat([
                        (t if t is not None else torch.zeros(len(rows), *sh, dtype=self.dtype, device=self.device))
                        .reshape(len(rows), -1) for t, sh in zip(hv, self.shapes, strict=True)
                    ], dim=1)
                    out[s : s + len(rows)] += self.weights[i] * flat.detach()
        return out.T.contiguous()

    def to_scipy(self) -> Any:
        """This operator as a `scipy.sparse.linalg.LinearOperator` (float64, symmetric)."""
        from scipy.sparse.linalg import LinearOperator

        def mv(x: np.ndarray) -> np.ndarray:
            v = torch.as_tensor(np.ascontiguousarray(x).reshape(-1), device=self.device)
            return self.matvec(v).detach().to(torch.float64).cpu().numpy()

        return LinearOperator((self.dim, self.dim), matvec=mv, rmatvec=mv, dtype=np.float64)

    def unflatten(self, v: Tensor) -> dict[str, Tensor]:
        """Split a flat vector into a {parameter name: tensor} dict shaped like the parameters."""
        if self.function is not None:
            return {"x": v.reshape(self.point.shape)}
        parts = torch.split(self._check_vector(v), self.numels)
        return {n: t.reshape(s) for n, t, s in zip(self.names, parts, self.shapes, strict=True)}

    # ---------------------------------------------------------------- internals
    def _check_vector(self, v: Tensor) -> Tensor:
        if not isinstance(v, Tensor):
            raise TypeError(f"v must be a torch.Tensor, got {type(v).__name__}")
        if v.numel() != self.dim:
            raise ValueError(f"v has {v.numel()} entries but the operator has dim={self.dim}")
        return v.reshape(-1).to(device=self.device, dtype=self.dtype)

    def _flat(self, parts: Sequence[Tensor | None]) -> Tensor:
        return torch.cat([
            (t if t is not None else torch.zeros(s, dtype=self.dtype, device=self.device)).reshape(-1)
            for t, s in zip(parts, self.shapes, strict=True)
        ])

    def _rng(self, batch_index: int) -> contextlib.AbstractContextManager[Any]:
        """Fork the RNG and seed it per batch, so dropout draws the same mask for every product."""
        if self.mode != "train":
            return contextlib.nullcontext()
        devices = [self.device] if self.device.type == "cuda" else []

        @contextlib.contextmanager
        def seeded() -> Iterator[None]:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.seed * 1_000_003 + batch_index)
                yield

        return seeded()

    @contextlib.contextmanager
    def _context(self) -> Iterator[None]:
        """Set train/eval mode; in train mode stop BatchNorm from updating its running stats
        (and restore every buffer afterwards, in case a custom module updates its own)."""
        if not hasattr(self, "_mods"):
            self._mods = list(self.model.modules())
            self._norms = [m for m in self._mods if isinstance(m, nn.modules.batchnorm._NormBase)]
        train = self.mode == "train"
        was_training = [m.training for m in self._mods]
        buffers = [(b, b.detach().clone()) for b in self.model.buffers()] if train else []
        tracking = [m.track_running_stats for m in self._norms]
        try:
            for m in self._mods:
                m.training = train
            if train:
                for m in self._norms:
                    m.track_running_stats = False
            with composite_weight_norm() if self._weight_norm else contextlib.nullcontext():
                yield
        finally:
            for m, t in zip(self._norms, tracking, strict=True):
                m.track_running_stats = t
            for m, t in zip(self._mods, was_training, strict=True):
                m.training = t
            with torch.no_grad():
                for b, saved in buffers:
                    b.copy_(saved)

    def _matvec(self, v: Tensor, backend: str) -> Tensor:
        if self.function is not None:
            return self._function_hvp(v, backend)
        parts = [t.reshape(s) for t, s in zip(torch.split(v, self.numels), self.shapes, strict=True)]
        out = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        with self._context():
            for i in range(len(self.batches)):
                hv = self._batch_hvp(i, parts, backend)
                out += self.weights[i] * self._flat(hv)
        return out

    def _function_hvp(self, v: Tensor, backend: str) -> Tensor:
        f = self.function
        if backend == "forward_over_reverse":
            return jvp(grad(f), (self.point,), (v,))[1].detach()
        x = self.point.clone().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(f(x), x, create_graph=True)
            if not g.requires_grad:  # f is linear in x: H = 0
                return torch.zeros_like(v)
            (hv,) = torch.autograd.grad(g, x, grad_outputs=v, allow_unused=True)
        return torch.zeros_like(v) if hv is None else hv.detach()

    def _batch_hvp(self, i: int, parts: list[Tensor], backend: str) -> Sequence[Tensor | None]:
        x, y = self.batches[i]
        if backend == "forward_over_reverse":
            names = self.names

            def loss_of(*ps: Tensor) -> Tensor:
                out = functional_call(self.model, dict(zip(names, ps, strict=True)), (x,))
                return self.loss_fn(out, y)

            primals = tuple(p.detach() for p in self.params)
            with self._rng(i):
                _, hv = jvp(grad(loss_of, argnums=tuple(range(len(primals)))), primals, tuple(parts))
            return [t.detach() for t in hv]
        versions = tuple(p._version for p in self.params)  # bumped by any in-place weight update
        if self._graph_cache and self._cache_versions != versions:
            self._graph_cache.clear()  # the weights changed since the graph was built
        self._cache_versions = versions
        grads = self._graph_cache.get(i) if self.cache_graph else None
        if grads is None:
            with self._rng(i), torch.enable_grad():
                loss = self.loss_fn(self.model(x), y)
                grads = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True)
            if self.cache_graph:
                self._graph_cache[i] = grads
        live = [(g, p) for g, p in zip(grads, parts, strict=True) if g is not None and g.requires_grad]
        if not live:
            return [None] * len(self.params)
        with torch.enable_grad():
            hv = torch.autograd.grad(
                [g for g, _ in live], self.params, grad_outputs=[p for _, p in live],
                retain_graph=self.cache_graph, allow_unused=True,
            )
        return [None if t is None else t.detach() for t in hv]

    def _select_backend(self) -> str:
        if self.function is not None or self.cache_graph:
            # A cached gradient graph makes double-backward one reverse pass per product, which
            # forward-over-reverse (forward + reverse + tangents every time) cannot beat.
            return "double_backward"
        key = (type(self.model).__qualname__, self.dim, tuple(tuple(x.shape) for x, _ in self.batches), self.mode,
               self.cache_graph, self.device.type)
        if key in _BACKEND_CACHE:
            return _BACKEND_CACHE[key]
        g = torch.Generator(device="cpu").manual_seed(12345)
        v = rademacher(self.dim, g, dtype=self.dtype).to(self.device)
        times: dict[str, float] = {}
        for name in _BACKENDS:
            try:
                self._matvec(v, name)  # warm-up (and builds the cached graph)
                t0 = time.perf_counter()
                self._matvec(v, name)
                times[name] = time.perf_counter() - t0
            except (RuntimeError, NotImplementedError):  # e.g. an op without forward-mode AD
                times[name] = float("inf")
            self.selection_hvps += 2
        best = min(times, key=lambda k: times[k])
        _BACKEND_CACHE[key] = best
        return best


def hvp(
    target: nn.Module | Callable[[Tensor], Tensor],
    v: Tensor,
    *,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    data: Any = None,
    point: Tensor | Sequence[float] | None = None,
    mode: Literal["train", "eval"] = "eval",
    backend: Backend = "auto",
) -> Tensor:
    """One Hessian-vector product: of a model's mean loss over `data`, or of f at `point`."""
    if isinstance(target, nn.Module):
        op = HessianOperator(target, loss_fn, data, mode=mode, backend=backend)
    else:
        op = HessianOperator(function=target, point=point, backend=backend)
    return op.matvec(v)
