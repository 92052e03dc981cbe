"""Cheap training instruments, read every N steps: per-layer gradient norms, update/weight ratios,
dead ReLU units, tanh/sigmoid saturation and non-finite values.

Usage inside a loop::

    mon = Monitor(model).attach(record=False)   # forward hooks on activation modules
    mon.record = t % N == 0                     # gather activation stats on measured steps only
    loss = ...; loss.backward(); mon.snapshot() # weights before the step (for update ratios)
    opt.step()
    if t % N == 0: m = mon.measure(loss=loss, step=t)   # a JSON-ready dict
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["ACTIVATION_TYPES", "Monitor"]

#: modules whose outputs are watched: ReLU-like for dead units, squashing ones for saturation.
ACTIVATION_TYPES: dict[type[nn.Module], str] = {
    nn.ReLU: "relu", nn.ReLU6: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.Hardtanh: "tanh",
    nn.LeakyReLU: "leaky_relu", nn.GELU: "gelu", nn.ELU: "elu", nn.SiLU: "silu",
}


class _ActStats:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.alive: Tensor | None = None  # per unit: output > 0 for some sample since last reset
        self.saturated = 0
        self.total = 0
        self.nonfinite = 0
        self.calls = 0
        self.sq_sum = 0.0  # Σ out² and the element count: the output's root mean square
        self.count = 0


class Monitor:
    """Per-layer instruments on a model; `measure()` returns a dict `thalweg.diagnose` reads.

    Activation statistics accumulate over every forward pass since the last `measure()` while
    attached (each costs a couple of elementwise reductions per activation module).
    """

    def __init__(self, model: nn.Module, *, saturation: float = 0.99, activations: bool = True) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not 0.5 < saturation < 1.0:
            raise ValueError(f"saturation must be in (0.5, 1), got {saturation!r}")
        self.model = model
        self.saturation = float(saturation)
        self.watch_activations = bool(activations)
        self._handles: list[Any] = []
        self._stats: dict[str, _ActStats] = {}
        self._before: dict[str, Tensor] | None = None
        self.record = True  # hooks gather activation statistics only while this is True
        self._in_sq, self._in_n = 0.0, 0  # the model input's Σx² and count (signal propagation)
        # every module that owns parameters, frozen ones too (they show up with no gradient)
        self.layers = [(name, m) for name, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]

    # -------------------------------------------------------------- lifecycle
    def attach(self, record: bool = True) -> Monitor:
        """Register forward hooks on activation modules (idempotent); returns self. Hooks gather
        statistics only while `self.record` is True — set it for the steps you will measure."""
        self.record = bool(record)
        if self._handles or not self.watch_activations:
            return self
        self._handles.append(self.model.register_forward_pre_hook(self._input_hook))
        for name, m in self.model.named_modules():
            kind = ACTIVATION_TYPES.get(type(m))
            if kind is not None:
                self._stats[name] = _ActStats(kind)
                self._handles.append(m.register_forward_hook(self._hook(name)))
        return self

    def detach(self) -> None:
        """Remove every hook this monitor registered."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __enter__(self) -> Monitor:
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def reset(self) -> None:
        """Forget activation statistics gathered so far."""
        self._in_sq, self._in_n = 0.0, 0
        for name, st in self._stats.items():
            self._stats[name] = _ActStats(st.kind)

    def _input_hook(self, module: nn.Module, args: Any) -> None:
        x = args[0] if args else None
        if self.record and isinstance(x, Tensor) and x.is_floating_point() and x.numel():
            with torch.no_grad():
                ok = torch.isfinite(x)
                self._in_sq += float(torch.where(ok, x, 0).double().square().sum())
                self._in_n += int(ok.sum())

    def _hook(self, name: str) -> Any:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if not self.record or not isinstance(output, Tensor) or output.ndim == 0:
                return
            st = self._stats[name]
            with torch.no_grad():
                out = output.detach()
                st.calls += 1
                finite = torch.isfinite(out)
                st.nonfinite += int(out.numel() - finite.sum())
                st.sq_sum += float(torch.where(finite, out, 0).double().square().sum())
                st.count += int(finite.sum())
                if st.kind == "relu":
                    unit_axis = 1 if out.ndim > 1 else 0
                    dims = [d for d in range(out.ndim) if d != unit_axis]
                    alive = (out > 0).any(dim=dims) if dims else out > 0
                    st.alive = alive if st.alive is None or st.alive.shape != alive.shape else st.alive | alive
                elif st.kind in ("tanh", "sigmoid"):
                    if st.kind == "tanh":
                        sat = out.abs() > self.saturation
                    else:
                        sat = (out > self.saturation) | (out < 1 - self.saturation)
                    st.saturated += int(sat.sum())
                    st.total += out.numel()
        return hook

    # ------------------------------------------------------------ measuring
    def snapshot(self) -> None:
        """Copy the weights now (call just before `optimizer.step()`) so `measure` can report
        update/weight ratios ‖Δw‖/‖w‖ for the step in between."""
        self._before = {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}

    def measure(self, *, loss: float | Tensor | None = None, step: int | None = None, reset: bool = True) -> dict[str, Any]:
        """Read gradients (as left by the last backward), update ratios and activation stats."""
        named = dict(self.model.named_parameters())
        layers, total_sq = [], 0.0
        n_grad_bad = n_param_bad = 0
        with torch.no_grad():
            for lname, m in self.layers:
                ps = list(m.named_parameters(recurse=False))
                trainable = any(p.requires_grad for _, p in ps)
                g_sq = w_sq = d_sq = 0.0
                g_bad = p_bad = 0
                has_grad, has_delta = False, self._before is not None
                for pn, p in ps:
                    full = f"{lname}.{pn}" if lname else pn
                    w = p.detach()
                    p_bad += int(w.numel() - torch.isfinite(w).sum())
                    w_sq += float(torch.linalg.vector_norm(w.double())) ** 2
                    if p.grad is not None:
                        has_grad = True
                        gb = int(p.grad.numel() - torch.isfinite(p.grad).sum())
                        g_bad += gb
                        g_sq += float(torch.linalg.vector_norm(p.grad.detach().double())) ** 2
                    if not p.requires_grad:
                        continue
                    if self._before is not None and full in self._before and named.get(full) is p:
                        d_sq += float(torch.linalg.vector_norm((w - self._before[full]).double())) ** 2
                    else:
                        has_delta = False
                w_norm = math.sqrt(w_sq)
                layers.append({
                    "name": lname or "<root>", "type": type(m).__name__,
                    "matrix": any(p.ndim >= 2 for _, p in ps),
                    "numel": sum(p.numel() for _, p in ps),
                    "grad_norm": math.sqrt(g_sq) if has_grad else None,
                    "weight_norm": w_norm,
                    "update_ratio": (math.sqrt(d_sq) / w_norm if w_norm > 0 else math.inf)
                    if has_delta and trainable else None,
                    "grad_nonfinite": g_bad, "param_nonfinite": p_bad, "trainable": trainable,
                })
                total_sq += g_sq
                n_grad_bad += g_bad
                n_param_bad += p_bad
        acts, n_act_bad = [], 0
        for name, st in self._stats.items():
            entry: dict[str, Any] = {"name": name, "type": st.kind, "forward_calls": st.calls, "nonfinite": st.nonfinite,
                                     "dead_fraction": None, "saturation": None,
                                     "rms": math.sqrt(st.sq_sum / st.count) if st.count else None}
            if st.kind == "relu" and st.alive is not None and not st.nonfinite:  # NaN never fires: not "dead"
                entry["dead_fraction"] = float(1.0 - st.alive.float().mean())
                entry["units"] = int(st.alive.numel())
            if st.kind in ("tanh", "sigmoid") and st.total:
                entry["saturation"] = st.saturated / st.total
            n_act_bad += st.nonfinite
            acts.append(entry)
        loss_v = None if loss is None else float(loss.detach() if isinstance(loss, Tensor) else loss)
        out = {
            "step": step, "loss": loss_v, "grad_norm": math.sqrt(total_sq),
            "layers": layers, "activations": acts,
            "input_rms": math.sqrt(self._in_sq / self._in_n) if self._in_n else None,
            "nonfinite": {"grads": n_grad_bad, "params": n_param_bad, "activations": n_act_bad,
                          "loss": loss_v is not None and not math.isfinite(loss_v)},
        }
        self._before = None
        if reset:
            self.reset()
        return out
