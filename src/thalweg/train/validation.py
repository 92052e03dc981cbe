"""Per evaluation: the training window's metrics, validation, best.pt kept (two generations,
never replaced by a worse or non-finite model) and early stopping counted; every `log_every`
steps the window alone. One record per call goes to metrics.jsonl and the progress view."""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from thalweg.integrations import board
from thalweg.optim.engine.modes import eval_mode
from thalweg.train.run import Run
from thalweg.train.rundir.checkpoint import save_generation, snapshot
from thalweg.train.rundir.resume import config_hash

__all__ = ["eval_and_keep_best", "record"]


def _train_metrics(tr: Run, lr: float) -> dict[str, Any]:
    """The window since the last record (summed over ranks), then a fresh window."""
    tr._fold()
    w = {k: v.item() for k, v in tr.w.items()}
    rec: dict[str, Any] = {"step": tr.state.step,
                           "epoch": round(tr.state.step / tr.steps_per_epoch, 4), "lr": lr}
    if w["steps"]:
        if tr.ctx.enabled:
            t = torch.tensor([w["loss"], w["correct"], w["count"]], dtype=torch.float64)
            w["loss"], w["correct"], w["count"] = tr.ctx.all_reduce_sum(t).tolist()
        rec["train_loss"] = w["loss"] / w["count"]
        if tr.classify:
            rec["train_accuracy"] = w["correct"] / w["count"]
        rec["grad_norm"] = w["gnorm"] / w["steps"]
    tr._zero_window()
    return rec


def eval_and_keep_best(tr: Run, rec: dict[str, Any]) -> None:
    """Validate into `rec`; a better finite model becomes best.pt (the old one best.prev.pt)."""
    res = tr.evaluate(tr.splits.x_val, tr.splits.y_val)
    res = tr.ctx.broadcast(res)
    rec["val_loss"] = res["loss"]
    if "accuracy" in res:
        rec["val_accuracy"] = res["accuracy"]
    s = tr.state
    s.last_eval_step = s.step
    value = rec[tr.best_metric]
    # a model whose val loss or weights are not finite is never best, whatever its accuracy
    weights_ok = all(bool(torch.isfinite(p).all()) for p in tr.params)
    finite = math.isfinite(value) and math.isfinite(res["loss"]) and weights_ok
    # a broken model (not data that overflows the loss from the start): its weights, or a
    # validation loss that was finite before (a best model exists) and no longer is
    tr.model_broken = not weights_ok or (not math.isfinite(res["loss"]) and s.best_value is not None)
    if finite and tr.better(value, s.best_value):
        s.best_value, s.best_step = value, s.step
        if tr.main:
            best = snapshot({"model": tr.model.state_dict(), "step": s.step,
                             "metric": tr.best_metric, "value": value,
                             "config": tr.cfg.model_dump(mode="json"),
                             "config_hash": config_hash(tr.cfg)})
            tr.writer.submit(save_generation, best, tr.paths.best, tr.paths.best_prev,
                             rotate=tr.best_ok)
            tr.best_ok = True
    if tr.early.step(value) and tr.cfg.regularization.early_stopping.enabled:
        s.stopped = "early_stopping"


def record(tr: Run, evaluate: bool) -> None:
    """Log the window (and, with `evaluate`, validate and keep the best) as one record."""
    lr = tr.opt.param_groups[0]["lr"]
    rec = _train_metrics(tr, lr)
    if evaluate:
        with eval_mode(tr.opt):  # validate and keep the weights to use (schedule-free: x)
            eval_and_keep_best(tr, rec)
    ce = tr.cfg.diagnostics.curvature_every
    if ce and tr.main and tr.state.step % ce == 0:
        rec.update(board.probe(tr.model, tr.train_loss, tr.splits.x_train, tr.splits.y_train))
    rec["seconds"] = round(tr.state.elapsed + time.perf_counter() - tr._start, 3)
    tr.log.write(rec)
    if tr.board is not None:
        tr.board.scalars(rec, rec["step"])
    tr.view.update(rec)
