"""Hessian-vector products for a model + loss + data (many batches, train or eval mode) —
`HessianOperator` — or for a plain function f(x) at a point — `FunctionHessian` — as the
`thalweg.linalg.LinearOperator`s that Lanczos, trace and SLQ use.

Two autodiff backends compute the same product: double-backward (grad of ⟨∇L, v⟩, from
`thalweg.linalg.hvp_from_graph`) and forward-over-reverse (`torch.func.jvp` of
`torch.func.grad`). `backend="auto"` uses double-backward when the gradient graph is cached
(one batch), else times both once and caches the faster per model shape for the process.
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

from thalweg.curvature.weight_norm import composite_weight_norm, uses_weight_norm
from thalweg.linalg import (
    OperatorBase,
    dense_hessian,
    flatten,
    grad_graph,
    hvp_from_graph,
    rademacher,
    unflatten,
)

__all__ = ["FunctionHessian", "HessianOperator", "hvp"]

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


class _HessianBase(OperatorBase):
    """What both Hessians share: the product counters, the backend choice, vector checks,
    `matvec`/`matmat` and the SciPy view. Subclasses supply `_products(rows, backend)`."""

    def __init__(self, backend: Backend) -> None:
        if backend not in ("auto", *_BACKENDS):
            raise ValueError(f"backend must be 'auto', 'double_backward' or 'forward_over_reverse'; got {backend!r}")
        self.selection_hvps = 0  # products spent timing the backends (not in num_matvecs)
        self._backend_choice: str | None = None if backend == "auto" else backend

    @property
    def backend(self) -> str:
        """The backend in use (measured on first use when constructed with ``backend="auto"``)."""
        if self._backend_choice is None:
            self._backend_choice = self._select_backend()
        return self._backend_choice

    @classmethod
    def for_function(cls, function: Callable[[Tensor], Tensor], point: Tensor | Sequence[float],
                     **kw: Any) -> FunctionHessian:
        """The Hessian of a plain scalar function ``f(x)`` at ``point``."""
        return FunctionHessian(function, point, **kw)

    def _matvec(self, v: Tensor) -> Tensor:
        return self._products(v, self.backend)

    def _matmat(self, V: Tensor) -> Tensor:
        return self._products(V.T, self.backend).T  # batched over the block where the backend can

    def to_scipy(self) -> Any:
        """This operator as a `scipy.sparse.linalg.LinearOperator` (float64, symmetric)."""
        from scipy.sparse.linalg import LinearOperator

        def mv(x: np.ndarray) -> np.ndarray:
            v = torch.as_tensor(np.ascontiguousarray(x).reshape(-1), device=self.device)
            return self.matvec(v).detach().to(torch.float64).cpu().numpy()

        return LinearOperator((self.dim, self.dim), matvec=mv, rmatvec=mv, dtype=np.float64)

    def _check_dense(self, max_dim: int) -> None:
        if self.dim > max_dim:
            raise ValueError(f"dense Hessian of dim={self.dim} exceeds max_dim={max_dim}; use eigs/trace instead")

    def _products(self, rows: Tensor, backend: str) -> Tensor:
        raise NotImplementedError

    def _select_backend(self) -> str:
        raise NotImplementedError


class FunctionHessian(_HessianBase):
    """The Hessian of a scalar function f(x) of a 1-D point: `matvec`, `dense`, `gradient`."""

    def __init__(self, function: Callable[[Tensor], Tensor], point: Tensor | Sequence[float] | None, *,
                 backend: Backend = "auto") -> None:
        super().__init__(backend)
        if not callable(function):
            raise TypeError(f"function must be callable, got {type(function).__name__}")
        if point is None:
            raise ValueError("point is required with function")
        x = point if isinstance(point, Tensor) else torch.as_tensor(point, dtype=torch.float64)
        x = x.to(torch.float64) if not x.is_floating_point() else x
        if x.ndim != 1:
            raise ValueError(f"point must be a 1-D vector, got shape {tuple(x.shape)}")
        self.function, self.point = function, x.detach().clone()
        OperatorBase.__init__(self, int(x.numel()), x.dtype, x.device)

    def gradient(self) -> Tensor:
        """∇f at the point."""
        x = self.point.clone().requires_grad_(True)
        with torch.enable_grad():
            return grad_graph(self.function(x), [x], create_graph=False)[0].detach()

    def loss(self) -> float:
        """f at the point."""
        with torch.no_grad():
            return float(self.function(self.point))

    def dense(self, max_dim: int = 6000) -> Tensor:
        """The full Hessian (`torch.autograd.functional.hessian`)."""
        self._check_dense(max_dim)
        return torch.autograd.functional.hessian(self.function, self.point).reshape(self.dim, self.dim)

    def unflatten(self, v: Tensor) -> dict[str, Tensor]:
        """The vector as {"x": v} shaped like the point."""
        return {"x": v.reshape(self.point.shape)}

    def _products(self, rows: Tensor, backend: str) -> Tensor:
        if backend == "forward_over_reverse":
            if rows.ndim == 2:
                return torch.stack([self._products(r, backend) for r in rows]) if len(rows) else rows.clone()
            return jvp(grad(self.function), (self.point,), (rows,))[1].detach()
        x = self.point.clone().requires_grad_(True)
        with torch.enable_grad():
            grads = grad_graph(self.function(x), [x])
        return hvp_from_graph(grads, [x], rows, retain_graph=False)

    def _select_backend(self) -> str:
        return "double_backward"  # one tiny graph: nothing to measure


class HessianOperator(_HessianBase):
    """The Hessian of a dataset-mean loss w.r.t. a model's parameters.

    `matvec(v)` takes and returns a flat vector of length `dim`; `num_matvecs` counts full-data
    Hessian-vector products. In ``mode="train"`` dropout masks are fixed by reseeding the RNG for
    every product (so H is one fixed symmetric matrix) and BatchNorm uses batch statistics
    without touching its running buffers. With one batch the gradient graph is cached, and
    rebuilt when the weights change in place (tracked by their version counters). For a plain
    function use `HessianOperator.for_function(f, point)` (a `FunctionHessian`).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
        data: Any = None,
        *,
        mode: Literal["train", "eval"] = "eval",
        backend: Backend = "auto",
        reduction: Literal["mean", "sum"] = "mean",
        seed: int = 0,
        cache_graph: bool | None = None,
    ) -> None:
        super().__init__(backend)
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be 'train' or 'eval'; got {mode!r}")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum'; got {reduction!r}")
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if loss_fn is None or not callable(loss_fn):
            raise TypeError("loss_fn must be a callable (output, target) -> scalar loss")
        self.mode, self.reduction, self.seed = mode, reduction, int(seed)
        self.model, self.loss_fn = model, loss_fn
        self._graph_cache: dict[int, list[Tensor]] = {}
        self._cache_versions: tuple[int, ...] = ()
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("model has no parameters with requires_grad=True")
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.shapes = [p.shape for p in self.params]
        self.numels = [p.numel() for p in self.params]
        OperatorBase.__init__(self, sum(self.numels), self.params[0].dtype, self.params[0].device)
        self.batches = [(x.to(self.device), y.to(self.device)) for x, y in _as_batches(data)]
        total = sum(len(x) for x, _ in self.batches)
        self.num_samples = total
        self.weights = [len(x) / total if reduction == "mean" else 1.0 for x, _ in self.batches]
        self.cache_graph = len(self.batches) == 1 if cache_graph is None else bool(cache_graph)
        self._weight_norm = uses_weight_norm(model)

    def gradient(self) -> Tensor:
        """The full-data gradient ∇L as a flat vector."""
        out = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        with self._context():
            for i, (x, y) in enumerate(self.batches):
                with self._rng(i), torch.enable_grad():
                    g = grad_graph(self.loss_fn(self.model(x), y), self.params, create_graph=False)
                out += self.weights[i] * flatten(g)
        return out

    def loss(self) -> float:
        """The full-data loss at the current parameters."""
        total = 0.0
        with self._context(), torch.no_grad():
            for i, (x, y) in enumerate(self.batches):
                with self._rng(i):
                    total += self.weights[i] * float(self.loss_fn(self.model(x), y))
        return total

    def dense(self, max_dim: int = 6000) -> Tensor:
        """The full Hessian as a dim×dim matrix, one product per column (for checks on small models)."""
        self._check_dense(max_dim)
        self.num_matvecs += self.dim
        out = torch.zeros(self.dim, self.dim, dtype=self.dtype, device=self.device)
        with self._context():
            for i in range(len(self.batches)):
                out += self.weights[i] * dense_hessian(self._graph(i), self.params, chunk=128, symmetrize=False)
        return out

    def unflatten(self, v: Tensor) -> dict[str, Tensor]:
        """Split a flat vector into a {parameter name: tensor} dict shaped like the parameters."""
        return dict(zip(self.names, unflatten(self._check_vector(v), self.params), strict=True))

    # ---------------------------------------------------------------- internals
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

    def _graph(self, i: int) -> list[Tensor]:
        """∇L of batch i with its graph; cached with `cache_graph` until the weights change."""
        versions = tuple(p._version for p in self.params)  # bumped by any in-place weight update
        if self._graph_cache and self._cache_versions != versions:
            self._graph_cache.clear()  # the weights changed since the graph was built
        self._cache_versions = versions
        grads = self._graph_cache.get(i) if self.cache_graph else None
        if grads is None:
            x, y = self.batches[i]
            with self._rng(i), torch.enable_grad():
                grads = grad_graph(self.loss_fn(self.model(x), y), self.params)
            if self.cache_graph:
                self._graph_cache[i] = grads
        return grads

    def _products(self, rows: Tensor, backend: str) -> Tensor:
        """Σ_batches weight · H_batch·v for a flat vector (or each row of a block)."""
        out = torch.zeros(rows.shape, dtype=self.dtype, device=self.device)
        with self._context():
            for i in range(len(self.batches)):
                if backend == "forward_over_reverse":
                    hv = self._forward_over_reverse(i, rows)
                else:
                    hv = hvp_from_graph(self._graph(i), self.params, rows, retain_graph=self.cache_graph, chunk=128)
                out += self.weights[i] * hv
        return out

    def _forward_over_reverse(self, i: int, v: Tensor) -> Tensor:
        if v.ndim == 2:
            return torch.stack([self._forward_over_reverse(i, r) for r in v]) if len(v) else v.clone()
        x, y = self.batches[i]
        names = self.names

        def loss_of(*ps: Tensor) -> Tensor:
            out = functional_call(self.model, dict(zip(names, ps, strict=True)), (x,))
            return self.loss_fn(out, y)

        primals = tuple(p.detach() for p in self.params)
        with self._rng(i):
            _, hv = jvp(grad(loss_of, argnums=tuple(range(len(primals)))), primals, tuple(unflatten(v, self.params)))
        return flatten([t.detach() for t in hv])

    def _select_backend(self) -> str:
        if self.cache_graph:
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
                self._products(v, name)  # warm-up (and builds the cached graph)
                t0 = time.perf_counter()
                self._products(v, name)
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
        op: _HessianBase = HessianOperator(target, loss_fn, data, mode=mode, backend=backend)  # type: ignore[arg-type]
    else:
        op = FunctionHessian(target, point, backend=backend)
    return op.matvec(v)
