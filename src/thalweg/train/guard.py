"""The non-finite guard's vocabulary: the error a run stops with, and which layer blew up."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["NonFiniteError", "Restart", "first_nonfinite_grad", "on_nonfinite"]


class Restart(Exception):
    """Raised inside an epoch after a rollback: iterate again from the restored position."""


class NonFiniteError(RuntimeError):
    """Training produced NaN/inf too often; `what` names the loss or the parameter."""

    def __init__(self, message: str, *, what: str, step: int) -> None:
        super().__init__(message)
        self.what, self.step = what, step


def first_nonfinite_grad(names: list[str], params: list[torch.Tensor]) -> str:
    """'gradient of layer <name>' for the first parameter (in model order) with a NaN/inf
    gradient; if every entry is finite the norm itself overflowed: name the largest one."""
    largest, where = -1.0, "?"
    for name, p in zip(names, params, strict=True):
        if p.grad is None:
            continue
        if not bool(torch.isfinite(p.grad).all()):
            return f"gradient of layer {name!r}"
        m = float(p.grad.abs().max()) if p.grad.numel() else 0.0
        if m > largest:
            largest, where = m, name
    return f"gradient norm (overflow; largest entry {largest:.3g} in layer {where!r})"


def on_nonfinite(tr: Any, loss: torch.Tensor, lr: float) -> bool:
    """Skip and log a NaN/inf step; K in a row: roll back to the newest good checkpoint with a
    lower lr (raising :class:`Restart`), or stop with :class:`NonFiniteError` naming the culprit."""
    t = tr.cfg.train
    what = "loss" if not torch.isfinite(loss) else first_nonfinite_grad(tr.names, tr.params)
    tr.opt.zero_grad()
    tr.s["streak"] += 1
    tr.s["skipped"] += 1
    tr.log.write({"event": "nonfinite", "step": tr.s["step"], "what": what,
                  "loss": float(loss), "lr": lr, "streak": tr.s["streak"]})
    tr.view.print(f"[yellow]step {tr.s['step']}: non-finite {what}; step skipped[/]")
    if tr.s["streak"] < t.nonfinite_patience:
        return False
    if tr.s["rollbacks"] >= t.max_rollbacks:
        msg = (f"training stopped at step {tr.s['step']}: {tr.s['streak']} non-finite steps in "
               f"a row (last: {what}) after {tr.s['rollbacks']} rollback(s) with lr x"
               f"{t.rollback_lr_factor}; lower [optimizer] lr or set [regularization] clip_norm")
        tr.log.write({"event": "stopped", "step": tr.s["step"], "reason": msg})
        raise NonFiniteError(msg, what=what, step=tr.s["step"])
    tr._sync_writes()
    latest = tr.ckpts.load_latest(tr.ctx.device)
    st = latest[1] if latest else None
    if st is None:
        raise NonFiniteError(f"non-finite {what} at step {tr.s['step']} and no checkpoint to "
                             "roll back to", what=what, step=tr.s["step"])
    rollbacks, scale, skipped = tr.s["rollbacks"], tr.s["lr_scale"], tr.s["skipped"]
    tr._restore(st)
    tr.s.update(rollbacks=rollbacks + 1, lr_scale=scale * t.rollback_lr_factor,
                skipped=skipped, streak=0)
    tr.log.write({"event": "rollback", "step": tr.s["step"], "what": what,
                  "lr_scale": tr.s["lr_scale"]})
    tr._warn(f"{t.nonfinite_patience} non-finite steps in a row ({what}): rolled back to step "
             f"{tr.s['step']} with lr x{tr.s['lr_scale']:g}")
    tr._save()
    raise Restart
