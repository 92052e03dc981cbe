"""K-FAC (Martens & Grosse 2015; KFC for convolutions, Grosse & Martens 2016).

Each ``Linear``/``Conv1d``/``Conv2d`` layer's Fisher block is approximated by A ⊗ G, with
A = E[a aᵀ] over its inputs (bias folded in as a column of ones, conv inputs unfolded into
patches) and G = E[g gᵀ] over the per-example gradients of its outputs. Forward hooks capture
both; factors are running averages; their damped inverses are refreshed periodically; the
preconditioned step is clipped so its predicted KL change stays below ``kl_clip``; momentum
SGD applies it. Every other parameter (norm layers, embeddings, grouped convs) falls back to
plain momentum SGD with the same learning rate. Under ``torch.distributed`` the factor
statistics are averaged across ranks before they enter the running averages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from thalweg.optim import registry

__all__ = ["KFAC"]


@dataclass(eq=False)
class _Layer:
    """Bookkeeping for one preconditioned layer (transient: not part of the state)."""

    name: str
    module: nn.Module
    a_stat: Tensor | None = None
    g_stat: Tensor | None = None
    batch: int = 0


def _supported(m: nn.Module) -> bool:
    if isinstance(m, nn.Linear):
        return m.weight.requires_grad
    if isinstance(m, (nn.Conv1d, nn.Conv2d)):
        pad_ok = not isinstance(m.padding, str) or m.padding == "valid"
        return (m.weight.requires_grad and m.groups == 1 and pad_ok
                and m.padding_mode == "zeros")
    return False


def _has_bias(m: nn.Module) -> bool:
    return getattr(m, "bias", None) is not None and m.bias.requires_grad


def _input_rows(m: nn.Module, x: Tensor) -> Tensor:
    """The layer's input as rows a (one per example and spatial position), bias column last."""
    if isinstance(m, nn.Linear):
        a = x.reshape(-1, x.shape[-1])
    else:
        two_d = isinstance(m, nn.Conv2d)
        pad = (0,) * len(m.kernel_size) if isinstance(m.padding, str) else tuple(m.padding)
        if two_d:
            k, s, p, d = m.kernel_size, m.stride, pad, m.dilation
        else:
            x = x.unsqueeze(2)
            k, s, p, d = (1, *m.kernel_size), (1, *m.stride), (0, *pad), (1, *m.dilation)
        cols = F.unfold(x, kernel_size=k, dilation=d, padding=p, stride=s)  # (B, C·k, L)
        a = cols.transpose(1, 2).reshape(-1, cols.shape[1])
    if _has_bias(m):
        a = torch.cat([a, a.new_ones(a.shape[0], 1)], dim=1)
    return a


def _output_rows(m: nn.Module, g: Tensor) -> Tensor:
    """Output gradients as rows (one per example and position), channels last."""
    if isinstance(m, nn.Linear):
        return g.reshape(-1, g.shape[-1])
    return g.movedim(1, -1).reshape(-1, g.shape[1])


class KFAC(torch.optim.Optimizer):
    """Kronecker-factored natural-gradient descent with momentum for the layers of ``model``.

    Cost per step: one ordinary forward/backward (no extra passes; the hooks add an a·aᵀ and
    a g·gᵀ product per layer on factor-update steps), two small matrix products per layer to
    precondition, and every ``inverse_update_every`` steps one eigendecomposition (or Cholesky
    inverse) of each factor — O(d_in³ + d_out³) per layer. Memory: the two factors, their
    decompositions and a momentum buffer per layer. The loss is assumed to be a mean over the
    batch; the model must run its forward in training mode for the factors to update.
    """

    def __init__(
        self,
        model: nn.Module,
        lr: float = 0.05,
        damping: float = 1e-3,
        factor_decay: float = 0.95,
        factor_update_every: int = 1,
        inverse_update_every: int = 10,
        kl_clip: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        inverse: Literal["eigen", "cholesky"] = "eigen",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        registry.get("kfac").check(locals())  # the schema's bounds (second_order.py)
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("model has no trainable parameters")
        defaults = dict(lr=lr, damping=damping, factor_decay=factor_decay, kl_clip=kl_clip,
                        momentum=momentum, weight_decay=weight_decay, inverse=inverse)
        super().__init__(params, defaults)
        self.factor_update_every = factor_update_every
        self.inverse_update_every = inverse_update_every
        self._step = 0
        self._layers: list[_Layer] = []
        self._handles: list[Any] = []
        for name, m in model.named_modules():
            if _supported(m):
                layer = _Layer(name, m)
                self._layers.append(layer)
                self._handles.append(m.register_forward_hook(self._make_hook(layer)))
        kfac_ids = {id(p) for lay in self._layers for p in self._layer_params(lay)}
        #: names of the parameters updated by plain momentum SGD instead of K-FAC.
        self.fallback_names = [n for n, p in model.named_parameters()
                               if p.requires_grad and id(p) not in kfac_ids]

    # -- capture -----------------------------------------------------------------------
    @staticmethod
    def _layer_params(layer: _Layer) -> list[Tensor]:
        m = layer.module
        return [m.weight, m.bias] if _has_bias(m) else [m.weight]

    def _capturing(self, m: nn.Module) -> bool:
        return (m.training and torch.is_grad_enabled()
                and self._step % self.factor_update_every == 0)

    def _make_hook(self, layer: _Layer) -> Any:
        def forward_hook(m: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            if not self._capturing(m) or not output.requires_grad:
                return
            with torch.no_grad():
                a = _input_rows(m, inputs[0].detach())
                layer.a_stat = a.T @ a / a.shape[0]
            layer.batch = output.shape[0]

            def grad_hook(g: Tensor) -> None:
                with torch.no_grad():
                    gs = _output_rows(m, g.detach()) * layer.batch  # per-example gradients
                    layer.g_stat = gs.T @ gs / layer.batch

            output.register_hook(grad_hook)

        return forward_hook

    def remove_hooks(self) -> None:
        """Detach the optimizer from the model (it then updates every layer by plain SGD)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    # -- state -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """torch's per-parameter state (factors and decompositions live under each layer's
        weight) plus the step counter and update intervals."""
        sd = super().state_dict()
        sd["kfac"] = {"step": self._step, "factor_update_every": self.factor_update_every,
                      "inverse_update_every": self.inverse_update_every}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore factors, decompositions, momentum and the step counter (bitwise resume)."""
        state_dict = dict(state_dict)
        extra = state_dict.pop("kfac", None)
        super().load_state_dict(state_dict)
        if extra is not None:
            self._step = int(extra["step"])
            self.factor_update_every = int(extra["factor_update_every"])
            self.inverse_update_every = int(extra["inverse_update_every"])

    # -- factors -------------------------------------------------------------------------
    def _ready(self) -> list[_Layer]:
        return [lay for lay in self._layers if lay.a_stat is not None and lay.g_stat is not None]

    def _update_factors(self) -> None:
        fresh = self._ready()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # Every rank has the same layers; all-reduce whatever each one captured in one buffer.
            flat = torch.cat([torch.cat([lay.a_stat.reshape(-1), lay.g_stat.reshape(-1)])
                              for lay in fresh]) if fresh else torch.zeros(0)
            dist.all_reduce(flat)
            flat /= dist.get_world_size()
            i = 0
            for lay in fresh:
                for attr in ("a_stat", "g_stat"):
                    t = getattr(lay, attr)
                    setattr(lay, attr, flat[i : i + t.numel()].view_as(t))
                    i += t.numel()
        decay = self.param_groups[0]["factor_decay"]
        for lay in fresh:
            st = self.state[lay.module.weight]
            for key, new in (("A", lay.a_stat), ("G", lay.g_stat)):
                if key in st:
                    st[key].mul_(decay).add_(new, alpha=1 - decay)
                else:
                    st[key] = new.clone()
            lay.a_stat = lay.g_stat = None

    def _update_inverses(self, damping: float, inverse: str) -> None:
        for lay in self._layers:
            st = self.state[lay.module.weight]
            if "A" not in st:
                continue
            a, g = st["A"], st["G"]
            if not (torch.isfinite(a).all() and torch.isfinite(g).all()):
                raise FloatingPointError(
                    f"K-FAC factors of layer {lay.name!r} are not finite: training diverged "
                    f"(lower lr or kl_clip, or raise damping)"
                )
            if inverse == "eigen":
                da, qa = torch.linalg.eigh(a)
                dg, qg = torch.linalg.eigh(g)
                st["dA"], st["QA"] = da.clamp_min(0), qa
                st["dG"], st["QG"] = dg.clamp_min(0), qg
            else:  # factored Tikhonov damping (Martens & Grosse §6.3)
                pi = math.sqrt(max(float(a.trace()) / a.shape[0], 1e-30)
                               / max(float(g.trace()) / g.shape[0], 1e-30))
                root = math.sqrt(damping)
                ia = torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
                ig = torch.eye(g.shape[0], dtype=g.dtype, device=g.device)
                st["A_inv"] = torch.cholesky_inverse(torch.linalg.cholesky(a + pi * root * ia))
                st["G_inv"] = torch.cholesky_inverse(torch.linalg.cholesky(g + root / pi * ig))

    def _precondition(self, lay: _Layer, damping: float, inverse: str) -> tuple[Tensor, ...] | None:
        m = lay.module
        st = self.state[m.weight]
        if m.weight.grad is None or ("QA" not in st and "A_inv" not in st):
            return None
        gw = m.weight.grad.reshape(m.weight.shape[0], -1)
        bias = _has_bias(m)
        if bias:
            gb = m.bias.grad if m.bias.grad is not None else torch.zeros_like(m.bias)
            gw = torch.cat([gw, gb.unsqueeze(1)], dim=1)
        if inverse == "eigen" and "QA" in st:
            v = st["QG"].T @ gw @ st["QA"]
            v = v / (st["dG"].unsqueeze(1) * st["dA"].unsqueeze(0) + damping)
            v = st["QG"] @ v @ st["QA"].T
        elif "A_inv" in st:
            v = st["G_inv"] @ gw @ st["A_inv"]
        else:
            return None
        if bias:
            return v[:, :-1].reshape_as(m.weight), v[:, -1]
        return (v.reshape_as(m.weight),)

    # -- step ----------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Any = None) -> Tensor | None:  # type: ignore[override]
        """Update factors (on factor steps), inverses (on inverse steps), then take a
        KL-clipped, preconditioned momentum-SGD step using the gradients in ``p.grad``."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        group = self.param_groups[0]
        lr, damping, inverse = group["lr"], group["damping"], group["inverse"]
        if self._step % self.factor_update_every == 0:
            self._update_factors()
        needs_inverse = any(
            "A" in self.state[lay.module.weight]
            and "QA" not in self.state[lay.module.weight]
            and "A_inv" not in self.state[lay.module.weight] for lay in self._layers)
        if self._step % self.inverse_update_every == 0 or needs_inverse:
            self._update_inverses(damping, inverse)
        updates: dict[int, Tensor] = {}
        vg = 0.0
        for lay in self._layers:
            v = self._precondition(lay, damping, inverse)
            if v is None:
                continue
            for p, vp in zip(self._layer_params(lay), v, strict=True):
                updates[id(p)] = vp
                if p.grad is not None:
                    vg += float((vp * p.grad).sum())
        nu = 1.0
        if group["kl_clip"] > 0 and vg * lr * lr > 0:
            nu = min(1.0, math.sqrt(group["kl_clip"] / (vg * lr * lr)))
        for grp in self.param_groups:
            for p in grp["params"]:
                if p.grad is None:
                    continue
                d = updates[id(p)] * nu if id(p) in updates else p.grad.clone()
                if grp["weight_decay"]:
                    d.add_(p, alpha=grp["weight_decay"])
                if grp["momentum"]:
                    st = self.state[p]
                    if "momentum_buffer" not in st:
                        st["momentum_buffer"] = d.clone()
                    else:
                        st["momentum_buffer"].mul_(grp["momentum"]).add_(d)
                    d = st["momentum_buffer"]
                p.add_(d, alpha=-grp["lr"])
        self._step += 1
        return loss
