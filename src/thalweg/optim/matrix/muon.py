"""Muon (Jordan et al. 2024): momentum whose update is orthogonalized by a Newton–Schulz
iteration (≈ U Vᵀ of the momentum's SVD) for hidden weight matrices; AdamW for the rest.

On 2-D parameters the trajectory is torch.optim.Muon's (same iteration, same bfloat16
arithmetic, bitwise on CPU); the iteration runs as one batched matmul chain over every
stack of equal-shape matrices. Which parameters Muon takes is decided per parameter:
a group's `use_muon` key decides for its parameters; otherwise, with `split="auto"`, tensors
of ≥ 2 dimensions are Muon's (convolution kernels flattened to (out, in·k)) except, when the
names are known (a module or `named_parameters()` was passed), embeddings and the output
head (the last ≥2-D parameter); 0-/1-D tensors (biases, norm gains) go to AdamW.
`split="all"` orthogonalizes every tensor (a vector as a 1×n row: normalized momentum).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from thalweg.optim import registry
from thalweg.optim.registry import Hyperparameter as H
from thalweg.optim.rules.twins import AdamW

from .stacked import Stack, StackedOptimizer, resolve_params

__all__ = ["MUON_SCHEMA", "Muon", "newton_schulz"]

#: the quintic's coefficients from Keller Jordan's Muon (as torch.optim.Muon)
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}

MUON_SCHEMA = (
    H("lr", 1e-3, low=0.0, help="learning rate of the orthogonalized update"),
    H("weight_decay", 0.1, low=0.0, help="decoupled decay p ← p(1 − lr·λ) of Muon's matrices"),
    H("momentum", 0.95, low=0.0, high=1.0, high_inclusive=False, help="momentum (an EMA of gradients)"),
    H("nesterov", True, kind="bool", help="orthogonalize g + μ·(buffer − g) instead of the buffer"),
    H("eps", 1e-7, low=0.0, help="floor of the Frobenius norm the iteration starts by dividing by"),
    H("ns_steps", 5, kind="int", low=1, high=99, help="Newton–Schulz iterations"),
    H("adjust_lr_fn", None, kind="choice", choices=("original", "match_rms_adamw"),
      help="lr scale per shape: √max(1, m/n) (original, None) or 0.2·√max(m, n) (match AdamW's RMS)"),
    H("ns_dtype", "bfloat16", kind="choice", choices=tuple(_DTYPES),
      help="dtype of the iteration (torch.optim.Muon: bfloat16)"),
    H("split", "auto", kind="choice", choices=("auto", "all"),
      help="auto: hidden ≥2-D weights to Muon, the rest to AdamW; all: every tensor to Muon"),
    H("adamw_lr_ratio", 1.0, low=0.0, help="AdamW's lr as a multiple of lr (a schedule scales both)"),
    H("adamw_betas", (0.9, 0.95), kind="betas", low=0.0, high=1.0, high_inclusive=False,
      help="AdamW's (β₁, β₂) for the parameters Muon does not take"),
    H("adamw_eps", 1e-8, low=0.0, help="AdamW's ε"),
    H("adamw_weight_decay", 0.01, low=0.0, help="AdamW's decoupled weight decay"),
)


def newton_schulz(g: Tensor, coefficients: tuple[float, float, float] = NS_COEFFICIENTS, steps: int = 5,
                  eps: float = 1e-7, dtype: torch.dtype = torch.bfloat16) -> Tensor:
    """Orthogonalize each matrix of a stack (b, m, n) by the quintic Newton–Schulz iteration
    X ← aX + (bA + cA²)X, A = XXᵀ, from X = G/‖G‖_F (torch.optim.Muon's, batched)."""
    a, b, c = coefficients
    x = g.to(dtype)
    wide = g.shape[-2] > g.shape[-1]
    if wide:
        x = x.mT
    x = x / torch.linalg.vector_norm(x, dim=(-2, -1), keepdim=True).clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.mT
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.baddbmm(x, poly, x, beta=a)
    return x.mT if wide else x


def _check_coefficients(c: Any) -> tuple[float, float, float]:
    ok = isinstance(c, (tuple, list)) and len(c) == 3 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in c)
    if not ok:
        raise ValueError(f"ns_coefficients must be three finite numbers (a, b, c), got {c!r}")
    return tuple(c)  # type: ignore[return-value]


class Muon(StackedOptimizer):
    """Muon for hidden weight matrices, AdamW for the other parameters, in one optimizer
    (torch.optim.Muon's signature and state on the matrices)."""

    schema = MUON_SCHEMA
    counts_steps = False  # torch.optim.Muon keeps only the momentum buffer

    def __init__(self, params: Any, lr: float = 1e-3, weight_decay: float = 0.1, momentum: float = 0.95,
                 nesterov: bool = True, ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
                 eps: float = 1e-7, ns_steps: int = 5, adjust_lr_fn: str | None = None, *,
                 ns_dtype: str = "bfloat16", split: str = "auto", adamw_lr_ratio: float = 1.0,
                 adamw_betas: tuple[float, float] = (0.9, 0.95), adamw_eps: float = 1e-8,
                 adamw_weight_decay: float = 0.01, compile: bool | str = "auto") -> None:
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                        ns_coefficients=ns_coefficients, eps=eps, ns_steps=ns_steps,
                        adjust_lr_fn=adjust_lr_fn, ns_dtype=ns_dtype, split=split,
                        adamw_lr_ratio=adamw_lr_ratio, adamw_betas=adamw_betas, adamw_eps=adamw_eps,
                        adamw_weight_decay=adamw_weight_decay)
        registry.check_values(defaults, self.schema)
        _check_coefficients(ns_coefficients)
        embeddings = set()
        if isinstance(params, torch.nn.Module):
            embeddings = {id(m.weight) for m in params.modules()
                          if isinstance(m, (torch.nn.Embedding, torch.nn.EmbeddingBag))}
        items, names = resolve_params(params)
        self._roles = self._auto_roles(items, names, embeddings)
        self._compile = compile
        self._adamw: AdamW | None = None
        self._adamw_groups: dict[int, int] = {}
        super().__init__(items, defaults)
        for gi in range(len(self.param_groups)):
            self._add_adamw_group(gi)

    # ------------------------------------------------------------------ the split
    @staticmethod
    def _auto_roles(items: list[Any], names: dict[int, str], embeddings: set[int]) -> dict[int, bool]:
        """id(param) → False for the embeddings and the output head (names known only)."""
        if not names:
            return {}
        flat = [p for x in items for p in (x["params"] if isinstance(x, dict) else [x])]
        mats = [p for p in flat if isinstance(p, Tensor) and p.ndim >= 2]
        roles = {id(p): False for p in mats
                 if id(p) in embeddings or "embed" in names.get(id(p), "").lower()}
        if mats:
            roles[id(mats[-1])] = False  # the output head
        return roles

    def _stacked(self, p: Tensor, group: Mapping[str, Any]) -> bool:
        if "use_muon" in group:
            return bool(group["use_muon"])
        if group["split"] == "all":
            return True
        return p.ndim >= 2 and self._roles.get(id(p), True)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        registry.check_values(param_group, self.schema, "param group: ")
        if "ns_coefficients" in param_group:
            _check_coefficients(param_group["ns_coefficients"])
        super().add_param_group(param_group)
        if self._built:
            self._add_adamw_group(len(self.param_groups) - 1)

    def _add_adamw_group(self, gi: int) -> None:
        group = self.param_groups[gi]
        rest = [p for p in group["params"] if not self._stacked(p, group)]  # frozen matrices stay Muon's
        if not rest:
            return
        spec = {"params": rest, **self._adamw_hparams(group)}
        if self._adamw is None:
            self._adamw = AdamW([spec], compile=self._compile)
        else:
            self._adamw.add_param_group(spec)
        self._adamw_groups[gi] = len(self._adamw.param_groups) - 1

    @staticmethod
    def _adamw_hparams(group: Mapping[str, Any]) -> dict[str, Any]:
        return {"lr": group["lr"] * group["adamw_lr_ratio"], "betas": tuple(group["adamw_betas"]),
                "eps": group["adamw_eps"], "weight_decay": group["adamw_weight_decay"]}

    @property
    def adamw_params(self) -> list[Tensor]:
        """The parameters this optimizer hands to AdamW."""
        return [p for g in (self._adamw.param_groups if self._adamw else []) for p in g["params"]]

    # ------------------------------------------------------------------ the rule
    def _init_state(self, st: Stack, group: Mapping[str, Any]) -> None:
        st.state["momentum_buffer"] = torch.zeros_like(st.grads)

    def _param_state(self, st: Stack, i: int) -> dict[str, Tensor]:
        return {"momentum_buffer": st.state["momentum_buffer"][i]}

    def _update(self, st: Stack, sl: slice, group: Mapping[str, Any], step: int) -> None:
        p, g, buf = st.params[sl], st.grads[sl], st.state["momentum_buffer"][sl]
        mu, lr = group["momentum"], float(group["lr"])
        buf.lerp_(g, 1 - mu)
        update = g.lerp(buf, mu) if group["nesterov"] else buf
        rows = st.shape[0] if len(st.shape) >= 2 else 1  # a vector is a 1×n row
        mat = update.reshape(p.shape[0], rows, -1)
        ortho = newton_schulz(mat, group["ns_coefficients"], group["ns_steps"], group["eps"],
                              _DTYPES[group["ns_dtype"]])
        m, n = mat.shape[-2:]
        fn = group["adjust_lr_fn"]
        if fn is None or fn == "original":
            ratio = math.sqrt(max(1, m / n))
        else:
            ratio = 0.2 * math.sqrt(max(m, n))
        p.mul_(1 - lr * group["weight_decay"])
        p.add_(ortho.view_as(p), alpha=-lr * ratio)

    def _after_step(self) -> None:
        if self._adamw is None:
            return
        for gi, ai in self._adamw_groups.items():
            self._adamw.param_groups[ai].update(self._adamw_hparams(self.param_groups[gi]))
        self._adamw.step()
        self._share_adamw_state()

    def _share_adamw_state(self) -> None:
        """The AdamW parameters' state appears in this optimizer's `state` (and state_dict)."""
        assert self._adamw is not None
        for p in self.adamw_params:
            if p in self._adamw.state:
                self.state[p] = self._adamw.state[p]

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none)
        if self._adamw is not None:
            self._adamw.zero_grad(set_to_none)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if self._adamw is None:
            return
        index = {id(p): i for i, p in enumerate(self.adamw_params)}
        sub = {index[id(p)]: dict(self.state[p]) for p in self.adamw_params if self.state.get(p)}
        for p in self.adamw_params:
            self.state.pop(p, None)
        for gi, ai in self._adamw_groups.items():
            self._adamw.param_groups[ai].update(self._adamw_hparams(self.param_groups[gi]))
        self._adamw.load_state_dict({"state": sub, "param_groups": self._adamw.state_dict()["param_groups"]})
        self._share_adamw_state()
