"""Shampoo (Gupta et al. 2018; Anil et al. 2020) and SOAP (Vyas et al. 2024): Kronecker-
factored preconditioners L = Σβ GGᵀ, R = Σβ GᵀG per block of each ≥2-D parameter.

- Shampoo steps along L^(−1/r) M R^(−1/r) (M: the momentum), rescaled block by block to the
  norm of a *grafted* direction (Adam's or momentum SGD's), so its step size is the graft's.
- SOAP runs Adam in the factors' eigenbasis: G' = Q_Lᵀ G Q_R, Adam on G', rotated back.

The elementwise parts are thalweg's own Adam / SGD (`thalweg.optim.rules.twins`), run over probe
tensors that hold the (rotated) gradient; the matrix work is batched per piece of a stack
(see :mod:`thalweg.optim.matrix.kronecker`). 0-/1-D parameters take the graft (Shampoo) or plain
Adam (SOAP). Conv kernels are preconditioned as (out, in·k) matrices.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from thalweg.optim import registry
from thalweg.optim.registry import Hyperparameter as H
from thalweg.optim.rules.twins import SGD, Adam

from . import kronecker as kr
from .stacked import Stack, StackedOptimizer

__all__ = ["SHAMPOO_SCHEMA", "SOAP", "SOAP_SCHEMA", "Shampoo"]

_BETAS = {"kind": "betas", "low": 0.0, "high": 1.0, "high_inclusive": False}


def _common(lr: float, betas: tuple[float, float], shampoo_beta: float | None, wd: float, freq: int,
            block: int) -> tuple[H, ...]:
    return (
        H("lr", lr, low=0.0, help="learning rate"),
        H("betas", betas, help="(β₁, β₂): momentum and second-moment decay of the Adam part", **_BETAS),
        H("shampoo_beta", shampoo_beta, low=0.0, high=1.0,
          help="decay of the Kronecker factors L, R (None: β₂)"),
        H("eps", 1e-8, low=0.0, help="Adam's ε"),
        H("weight_decay", wd, low=0.0, help="decoupled decay p ← p(1 − lr·λ)"),
        H("precondition_frequency", freq, kind="int", low=1,
          help="steps between refreshes of the inverse roots / eigenbases"),
        H("max_precond_dim", block, kind="int", low=1,
          help="block size: larger dimensions are cut into blocks of at most this many"),
    )


SHAMPOO_SCHEMA = (
    *_common(1e-3, (0.9, 0.999), 0.999, 0.0, 10, 1024),
    H("root", 4.0, low=1.0, help="inverse root r of each factor (L^(−1/r), R^(−1/r))"),
    H("matrix_eps", 1e-6, low=0.0, help="damping of each factor, relative to its largest eigenvalue"),
    H("graft", "adam", kind="choice", choices=("adam", "sgd"),
      help="whose per-block step norm Shampoo's direction takes"),
    H("nesterov", True, kind="bool", help="precondition β₁M + (1 − β₁)G (look-ahead) instead of M"),
)
SOAP_SCHEMA = _common(3e-3, (0.95, 0.95), None, 0.01, 10, 1024)


def _rows(sl: slice, per: int) -> slice:
    """The rows of a per-block stack (k·per, …) that belong to the parameters in `sl`."""
    if sl.start is None:
        return slice(None)
    return slice(sl.start * per, sl.stop * per)


class _Kronecker(StackedOptimizer):
    """Blocks, factors and the inner (elementwise) optimizer per stack; subclasses write the rule."""

    schema: tuple[H, ...] = ()

    def __init__(self, params: Any, defaults: dict[str, Any], compile: bool | str) -> None:
        registry.check_values(defaults, self.schema)
        self._compile = compile
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        registry.check_values(param_group, self.schema, "param group: ")
        super().add_param_group(param_group)

    # -- inner optimizer over probes: one probe per (piece, parameter), piece-major ----------
    def _probe_shapes(self, st: Stack) -> list[tuple[int, ...]]:
        return [tuple(st.shape)]

    def _inner(self, group: Mapping[str, Any], probes: list[Tensor]) -> torch.optim.Optimizer:
        raise NotImplementedError

    def _init_state(self, st: Stack, group: Mapping[str, Any]) -> None:
        matrix = len(st.shape) >= 2
        st.extra["pieces"] = kr.pieces(st.shape[0], math.prod(st.shape[1:]), group["max_precond_dim"]) if matrix else []
        for j, pc in enumerate(st.extra["pieces"]):
            z = st.params.new_zeros
            st.state[f"left_{j}"] = z(st.k * pc.blocks, pc.bm, pc.bm)
            st.state[f"right_{j}"] = z(st.k * pc.blocks, pc.bn, pc.bn)
            self._init_piece(st, j, pc)
        shapes = self._probe_shapes(st)
        probes = [torch.nn.Parameter(st.params.new_zeros(s)) for s in shapes for _ in range(st.k)]
        inner = self._inner(group, probes)
        st.extra.update(inner=inner, probes=probes)
        st.extra["dir"] = [kr.stack_view(probes[j * st.k:(j + 1) * st.k]) for j in range(len(shapes))]
        views = inner.grad_views(probes)  # the probes' gradients, set before each inner step
        st.extra["gviews"] = views
        st.extra["gin"] = [kr.stack_view(views[j * st.k:(j + 1) * st.k]) for j in range(len(shapes))]

    def _init_piece(self, st: Stack, j: int, pc: kr.Piece) -> None:
        """Extra per-piece state (inverse roots, eigenbases)."""

    #: one probe per piece (SOAP: Adam on rotated blocks) rather than one per parameter
    probes_per_piece = False

    def _suffix(self, st: Stack, j: int) -> str:
        """The state-key suffix of the inner optimizer's probe shape j ("" when param-shaped)."""
        return f"_{j}" if self.probes_per_piece and st.extra["pieces"] else ""

    def _param_state(self, st: Stack, i: int) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for name, v in st.state.items():
            j = int(name.rsplit("_", 1)[1])
            per = st.extra["pieces"][j].blocks
            out[name] = v[i * per:(i + 1) * per]
        inner, probes = st.extra["inner"], st.extra["probes"]
        for j in range(len(self._probe_shapes(st))):
            for key, v in inner.state.get(probes[j * st.k + i], {}).items():
                if key != "step":
                    out[f"{key}{self._suffix(st, j)}"] = v
        return out

    def _load_param_state(self, st: Stack, i: int, loaded: Mapping[str, Any]) -> None:
        for name, v in st.state.items():
            j = int(name.rsplit("_", 1)[1])
            per = st.extra["pieces"][j].blocks
            if name not in loaded:
                raise ValueError(f"state of parameter {i} lacks [{name!r}] needed by {type(self).__name__}")
            v[i * per:(i + 1) * per].copy_(loaded[name])
        st.extra.setdefault("pending", {})[i] = loaded

    def _loaded(self, st: Stack) -> None:
        """Hand the inner optimizer its part of the loaded state (as its own state dict)."""
        inner, pending = st.extra["inner"], st.extra.pop("pending", {})
        state: dict[int, dict[str, Any]] = {}
        for j in range(len(self._probe_shapes(st))):
            sfx = self._suffix(st, j)
            for i, loaded in pending.items():
                own = {k[: len(k) - len(sfx)]: v for k, v in loaded.items()
                       if k.endswith(sfx) and k != "step" and k not in self._param_factor_keys(st)}
                state[j * st.k + i] = {"step": loaded["step"], **own}
        inner.load_state_dict({"state": state, "param_groups": inner.state_dict()["param_groups"]})

    @staticmethod
    def _param_factor_keys(st: Stack) -> set[str]:
        return set(st.state)

    def _run_inner(self, st: Stack, sl: slice, group: Mapping[str, Any]) -> list[Tensor]:
        """Step the inner optimizer on the probes of `sl` (gradients already written);
        returns, per probe shape, its direction (what a step subtracts) for `sl`."""
        inner, probes = st.extra["inner"], st.extra["probes"]
        self._sync_inner(inner, group)
        dirs = [d[sl] for d in st.extra["dir"]]
        for d in dirs:
            d.zero_()
        idx = range(st.k) if sl.start is None else range(sl.start, sl.stop)
        for n, (p, view) in enumerate(zip(probes, st.extra["gviews"], strict=True)):
            p.grad = view if n % st.k in idx else None  # only the probes of `sl` step
        inner.step()
        return [d.neg() for d in dirs]

    def _sync_inner(self, inner: torch.optim.Optimizer, group: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def _apply(self, p: Tensor, direction: Tensor, group: Mapping[str, Any]) -> None:
        lr = float(group["lr"])
        if group["weight_decay"] != 0:
            p.mul_(1 - lr * group["weight_decay"])
        p.add_(direction.view_as(p), alpha=-lr)

    def _factor_beta(self, group: Mapping[str, Any]) -> float:
        b = group["shampoo_beta"]
        return group["betas"][1] if b is None else b

    def _accumulate(self, st: Stack, j: int, rows: slice, gb: Tensor, beta: float) -> tuple[Tensor, Tensor]:
        left, right = st.state[f"left_{j}"][rows], st.state[f"right_{j}"][rows]
        left.baddbmm_(gb, gb.mT, beta=beta, alpha=1 - beta)
        right.baddbmm_(gb.mT, gb, beta=beta, alpha=1 - beta)
        return left, right


class Shampoo(_Kronecker):
    """Shampoo with blocking, Adam/SGD grafting and a preconditioning frequency."""

    schema = SHAMPOO_SCHEMA

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 shampoo_beta: float | None = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
                 precondition_frequency: int = 10, max_precond_dim: int = 1024, root: float = 4.0,
                 matrix_eps: float = 1e-6, graft: str = "adam", nesterov: bool = True, *,
                 compile: bool | str = False) -> None:
        defaults = dict(lr=lr, betas=betas, shampoo_beta=shampoo_beta, eps=eps, weight_decay=weight_decay,
                        precondition_frequency=precondition_frequency, max_precond_dim=max_precond_dim,
                        root=root, matrix_eps=matrix_eps, graft=graft, nesterov=nesterov)
        super().__init__(params, defaults, compile)

    def _init_piece(self, st: Stack, j: int, pc: kr.Piece) -> None:
        eye = torch.eye
        st.state[f"root_left_{j}"] = eye(pc.bm, dtype=st.params.dtype, device=st.params.device).repeat(st.k * pc.blocks, 1, 1)
        st.state[f"root_right_{j}"] = eye(pc.bn, dtype=st.params.dtype, device=st.params.device).repeat(st.k * pc.blocks, 1, 1)

    def _inner(self, group: Mapping[str, Any], probes: list[Tensor]) -> torch.optim.Optimizer:
        b1, b2 = group["betas"]
        if group["graft"] == "adam":
            return Adam(probes, lr=1.0, betas=(b1, b2), eps=group["eps"], compile=self._compile)
        return SGD(probes, lr=1.0, momentum=b1, dampening=b1, compile=self._compile)

    def _sync_inner(self, inner: torch.optim.Optimizer, group: Mapping[str, Any]) -> None:
        g = inner.param_groups[0]
        if "betas" in g:
            g.update(betas=tuple(group["betas"]), eps=group["eps"])
        else:
            g.update(momentum=group["betas"][0], dampening=group["betas"][0])

    def _momentum(self, st: Stack, sl: slice, step: int, group: Mapping[str, Any]) -> Tensor:
        """M: the inner optimizer's first moment (bias-corrected), or the gradient; with
        Nesterov, β₁M + (1 − β₁)G (the scale is the graft's business)."""
        inner, probes = st.extra["inner"], st.extra["probes"]
        key = "exp_avg" if group["graft"] == "adam" else "momentum_buffer"
        g = st.grads[sl]
        bufs = [inner.state.get(p, {}).get(key) for p in probes[: st.k][sl]]
        if any(b is None for b in bufs):
            return g
        m = kr.stack_view(bufs)
        b1 = group["betas"][0]
        if key == "exp_avg":
            m = m / (1 - b1**step)
        return torch.lerp(g, m, b1) if group["nesterov"] else m

    def _update(self, st: Stack, sl: slice, group: Mapping[str, Any], step: int) -> None:
        p, g = st.params[sl], st.grads[sl]
        st.extra["gin"][0][sl].copy_(g)
        graft = self._run_inner(st, sl, group)[0]
        if not st.extra["pieces"]:
            self._apply(p, graft, group)
            return
        m = kr.as_matrices(self._momentum(st, sl, step, group))
        g2, graft2 = kr.as_matrices(g), kr.as_matrices(graft)
        out = torch.empty_like(g2)
        refresh = (step - 1) % group["precondition_frequency"] == 0
        beta = self._factor_beta(group)
        for j, pc in enumerate(st.extra["pieces"]):
            rows = _rows(sl, pc.blocks)
            left, right = self._accumulate(st, j, rows, kr.split(g2, pc), beta)
            rl, rr = st.state[f"root_left_{j}"][rows], st.state[f"root_right_{j}"][rows]
            if refresh:
                if pc.bm == pc.bn:  # one eigh call for both sides
                    both = kr.inverse_root(torch.cat([left, right]), group["root"], group["matrix_eps"])
                    rl.copy_(both[: len(left)])
                    rr.copy_(both[len(left):])
                else:
                    rl.copy_(kr.inverse_root(left, group["root"], group["matrix_eps"]))
                    rr.copy_(kr.inverse_root(right, group["root"], group["matrix_eps"]))
            pre = rl @ kr.split(m, pc) @ rr
            target = torch.linalg.vector_norm(kr.split(graft2, pc), dim=(-2, -1), keepdim=True)
            norm = torch.linalg.vector_norm(pre, dim=(-2, -1), keepdim=True)
            pre.mul_(target / norm.clamp(min=torch.finfo(norm.dtype).tiny))
            kr.merge(out, pre, pc)
        self._apply(p, out, group)


class SOAP(_Kronecker):
    """SOAP: Adam in the eigenbasis of Shampoo's factors (refreshed by a power iteration)."""

    schema = SOAP_SCHEMA
    probes_per_piece = True

    def __init__(self, params: Any, lr: float = 3e-3, betas: tuple[float, float] = (0.95, 0.95),
                 shampoo_beta: float | None = None, eps: float = 1e-8, weight_decay: float = 0.01,
                 precondition_frequency: int = 10, max_precond_dim: int = 1024, *,
                 compile: bool | str = False) -> None:
        defaults = dict(lr=lr, betas=betas, shampoo_beta=shampoo_beta, eps=eps, weight_decay=weight_decay,
                        precondition_frequency=precondition_frequency, max_precond_dim=max_precond_dim)
        super().__init__(params, defaults, compile)

    def _probe_shapes(self, st: Stack) -> list[tuple[int, ...]]:
        if not st.extra["pieces"]:
            return [tuple(st.shape)]
        return [(pc.blocks, pc.bm, pc.bn) for pc in st.extra["pieces"]]

    def _init_piece(self, st: Stack, j: int, pc: kr.Piece) -> None:
        st.state[f"basis_left_{j}"] = st.params.new_zeros(st.k * pc.blocks, pc.bm, pc.bm)
        st.state[f"basis_right_{j}"] = st.params.new_zeros(st.k * pc.blocks, pc.bn, pc.bn)

    def _inner(self, group: Mapping[str, Any], probes: list[Tensor]) -> torch.optim.Optimizer:
        return Adam(probes, lr=1.0, betas=tuple(group["betas"]), eps=group["eps"], compile=self._compile)

    def _sync_inner(self, inner: torch.optim.Optimizer, group: Mapping[str, Any]) -> None:
        inner.param_groups[0].update(betas=tuple(group["betas"]), eps=group["eps"])

    def _update(self, st: Stack, sl: slice, group: Mapping[str, Any], step: int) -> None:
        p, g = st.params[sl], st.grads[sl]
        if not st.extra["pieces"]:
            st.extra["gin"][0][sl].copy_(g)
            self._apply(p, self._run_inner(st, sl, group)[0], group)
            return
        g2 = kr.as_matrices(g)
        beta = self._factor_beta(group)
        refresh = step > 1 and (step - 1) % group["precondition_frequency"] == 0
        bases = []
        for j, pc in enumerate(st.extra["pieces"]):
            rows = _rows(sl, pc.blocks)
            gb = kr.split(g2, pc)
            left, right = self._accumulate(st, j, rows, gb, beta)
            ql, qr = st.state[f"basis_left_{j}"][rows], st.state[f"basis_right_{j}"][rows]
            if step == 1:
                ql.copy_(kr.eigenbasis(left))
                qr.copy_(kr.eigenbasis(right))
            elif refresh:
                self._rotate(st, j, sl, left, right, ql, qr)
            bases.append((ql, qr))
            st.extra["gin"][j][sl].copy_((ql.mT @ gb @ qr).view_as(st.extra["gin"][j][sl]))
        dirs = self._run_inner(st, sl, group)
        out = torch.empty_like(g2)
        for j, pc in enumerate(st.extra["pieces"]):
            ql, qr = bases[j]
            kr.merge(out, ql @ dirs[j].reshape(-1, pc.bm, pc.bn) @ qr.mT, pc)
        self._apply(p, out, group)

    def _rotate(self, st: Stack, j: int, sl: slice, left: Tensor, right: Tensor, ql: Tensor, qr: Tensor) -> None:
        """Refresh the bases; carry Adam's moments into them (the first exactly, by rotation;
        the second, elementwise, follows its eigenvalue's new position as in SOAP)."""
        nl, order_l = kr.power_iteration_basis(left, ql)
        nr, order_r = kr.power_iteration_basis(right, qr)
        inner, probes = st.extra["inner"], st.extra["probes"]
        mine = probes[j * st.k:(j + 1) * st.k][sl]
        if all(inner.state.get(p) for p in mine):
            pc = st.extra["pieces"][j]
            m = kr.stack_view([inner.state[p]["exp_avg"] for p in mine]).reshape(-1, pc.bm, pc.bn)
            v = kr.stack_view([inner.state[p]["exp_avg_sq"] for p in mine]).reshape(-1, pc.bm, pc.bn)
            m.copy_((nl.mT @ ql) @ m @ (qr.mT @ nr))
            v.copy_(torch.take_along_dim(v, order_l.unsqueeze(-1), dim=-2))
            v.copy_(torch.take_along_dim(v, order_r.unsqueeze(-2), dim=-1))
        ql.copy_(nl)
        qr.copy_(nr)
