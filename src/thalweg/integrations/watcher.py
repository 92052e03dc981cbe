"""The one core behind `thalweg.watch`, the Lightning callback and the Hugging Face callback:
thalweg's monitors every N steps, the non-finite guard, the curvature probe, TensorBoard/MLflow
logging and, at the end, the doctor with the report a `thalweg train` run gets.

A framework tells the watcher three things: the gradients are ready and the optimizer is about
to step (`before_step`), the step was taken (`after_step`), and here are some metrics
(`log`: validation results, or the framework's own windowed train loss). Everything else —
what to measure when, what a non-finite value means, what the doctor reads — lives here once.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from thalweg.integrations.held import (
    HeldBatch,
    hessian,
    measure,
    top_eigenvalues,
)
from thalweg.integrations.loggers import Board, curvature_scalars
from thalweg.integrations.report import claim, write_report

__all__ = ["Watcher"]

class Watcher:
    """Monitors, guard, curvature probe and loggers for one training run (see the module doc).

    every: steps per log window and between monitor measurements (`[train] log_every`).
    monitors: per-layer gradient norms, update/weight ratios, dead/saturated units every N steps.
    curvature_every: run the curvature probe (top `curvature_k` Hessian eigenvalues on `probe`)
      every that many steps; 0 = never. `probe` is a held batch (see `HeldBatch`); without one
      the end-of-run measurement and curvature are left out of the diagnosis.
    end_curvature: the doctor's λ_max/λ_min certificate at the end (up to 80 Hessian-vector
      products on the held batch); turn it off for large models.
    patience: this many non-finite steps in a row stop the run (`should_stop`); None = never.
    out_dir: where the report and the TensorBoard files (`tensorboard/`) go; a directory that
      holds an earlier run or report is not replaced unless `overwrite` (`<out_dir>-2` is used).
    config: what the doctor should know that the optimizer cannot tell (thalweg config sections,
      e.g. {"model": {"norm": "batch"}, "train": {"batch_size": 16}}).
    data: the training and validation data for the data findings and the chance level:
      a thalweg `Splits` or (x_train, y_train, x_val, y_val).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, *,
                 every: int = 50, monitors: bool = True, curvature_every: int = 0, curvature_k: int = 1,
                 curvature_iters: int = 30, probe: Any = None, loss_fn: Callable[..., Tensor] | None = None,
                 patience: int | None = 3, out_dir: str | Path | None = None,
                 tensorboard: bool | str = "auto", mlflow: str | None = None, name: str = "watched",
                 config: Mapping[str, Any] | None = None, data: Any = None, window: bool = True,
                 overwrite: bool = False, end_curvature: bool = True) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        for key, v, low in (("every", every, 1), ("curvature_every", curvature_every, 0),
                            ("curvature_k", curvature_k, 1), ("curvature_iters", curvature_iters, 2)):
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ValueError(f"{key} must be an integer >= {low}, got {v!r}")
        if patience is not None and (not isinstance(patience, int) or patience < 1):
            raise ValueError(f"patience must be a positive integer or None, got {patience!r}")
        self.model, self.optimizer = model, optimizer
        self.every, self.curvature_every, self.curvature_k = every, curvature_every, curvature_k
        self.curvature_iters, self.patience, self.name = curvature_iters, patience, name
        self.held = HeldBatch(probe, loss_fn) if probe is not None else None
        self.user_config = dict(config or {})
        self.data, self.window_records, self.end_curvature = data, window, end_curvature
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self._tb, self._mlflow, self.overwrite = tensorboard, mlflow, overwrite
        self.board: Board | None = None
        self.lock: Any = None
        self.names, self.params = [], []
        self.monitor: Any = None
        if monitors:
            from thalweg.monitors import Monitor

            self.monitor = Monitor(model).attach(record=every == 1)
        self.step = 0
        self.records: list[dict[str, Any]] = []
        # the loss of every step (thinned to ≤ 4096 points by doubling the stride): the report's
        # loss curve is not just the few window means of a short loop
        self.step_losses: list[tuple[int, float]] = []
        self._stride = 1
        self.monitor_records: list[dict[str, Any]] = []
        self.curvature_records: list[dict[str, Any]] = []
        self.skipped = self.streak = 0
        self.should_stop = False
        self.stop_reason: str | None = None
        self.last_nonfinite: str | None = None
        self.initial: dict[str, Tensor] | None = None
        self.init_measurement: dict[str, Any] | None = None
        self._win = {"loss": 0.0, "losses": 0, "gnorm": 0.0, "gnorms": 0}
        self._bad: str | None = None
        self._gnorm: float | None = None
        self._lr_used: float | None = None
        self._snap = False
        self.started = False

    # ------------------------------------------------------------------ lifecycle
    def start(self, out_dir: str | Path | None = None) -> Watcher:
        """Before the first step (model on its device): keep the initial weights, measure them,
        open the loggers. Called by the callbacks at the start of training; idempotent."""
        if self.started:
            return self
        self.started = True
        if out_dir is not None and self.out_dir is None:
            self.out_dir = Path(out_dir)
        self.names, self.params = map(list, zip(*self.model.named_parameters(), strict=True))
        self.initial = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        self._measure_init()
        if self.out_dir is not None:
            self.lock, note = claim(self.out_dir, overwrite=self.overwrite)
            self.out_dir = self.lock.root
            if note:
                warnings.warn(note, stacklevel=3)
            self.board = Board(self.out_dir / "tensorboard", tensorboard=self._tb, mlflow=self._mlflow,
                               run_name=self.name, params=self._params())
        return self

    def set_probe(self, batch: Any, loss_fn: Callable[..., Tensor] | None = None) -> None:
        """Hold `batch` from now on (e.g. the first batch a framework fed the model); measured as
        the initialization if no step has been taken yet."""
        self.held = HeldBatch(batch, loss_fn)

    def _measure_init(self) -> None:
        if self.held is None or self.init_measurement is not None or self.step > 0:
            return
        rec = self.monitor.record if self.monitor is not None else False
        if self.monitor is not None:
            self.monitor.record = False  # the measurement's own pass is not a training step
        try:
            self.init_measurement = measure(self.model, self.held)
        finally:
            if self.monitor is not None:
                self.monitor.record = rec

    def close(self) -> None:
        """Remove the hooks, close the loggers, release the output directory."""
        if self.monitor is not None:
            self.monitor.detach()
        if self.board is not None:
            self.board.close()
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def _params(self) -> dict[str, Any]:
        o = self.optimizer_config()
        return {f"optimizer.{k}": v for k, v in o.items()}

    # ------------------------------------------------------------------ the step
    def _measuring(self, step: int) -> bool:
        return self.monitor is not None and step % self.every == 0

    def before_step(self, *, snapshot: bool = True) -> bool:
        """Gradients are ready, the optimizer is about to step: read the gradient norm, check it
        is finite (the guard), copy the weights if this step is measured (for update ratios;
        `snapshot=False` when the step was already taken). False = non-finite."""
        if not self.started:
            self.start()
        self._measure_init()  # a batch held since start(): the weights are still the initial ones
        grads = [p.grad for p in self.params if p.grad is not None]
        gnorm = float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0
        self._gnorm, self._lr_used = gnorm, self.lr()  # the lr this step runs with
        self._bad = None
        if not math.isfinite(gnorm):
            from thalweg.train.guard import first_nonfinite_grad

            self._bad = first_nonfinite_grad(self.names, self.params)
        self._snap = snapshot and self._bad is None and self._measuring(self.step + 1)
        if self._snap:
            self.monitor.snapshot()
        return self._bad is None

    def after_step(self, loss: float | Tensor | None = None, *, lr: float | None = None,
                   epoch: float | None = None, skipped: bool = False) -> None:
        """The step was taken (or skipped): count it, check the loss, measure, probe, log."""
        if not self.started:
            self.start()
        self.step += 1
        step = self.step
        lv = None if loss is None else float(loss.detach() if isinstance(loss, Tensor) else loss)
        lr = (self._lr_used if self._lr_used is not None else self.lr()) if lr is None else lr
        bad = "loss" if lv is not None and not math.isfinite(lv) else self._bad
        if bad is not None:
            self._nonfinite(bad, lv, lr, step)
        else:
            self.streak = 0
            if lv is not None:
                self._win["loss"] += lv
                self._win["losses"] += 1
                self._keep_loss(step, lv)
            if self._gnorm is not None:
                self._win["gnorm"] += self._gnorm
                self._win["gnorms"] += 1
            if self._measuring(step):  # a skipped finite step measures an update of zero
                m = self.monitor.measure(loss=lv, step=step)
                self.monitor_records.append(m)
                if self.board is not None:
                    self.board.monitors(m, step)
        if self.monitor is not None:
            self.monitor.record = self._measuring(step + 1)
        self._gnorm, self._bad, self._snap, self._lr_used = None, None, False, None
        if self.window_records and step % self.every == 0:
            self._flush_window(step, lr, epoch)
        if self.held is not None and self.curvature_every and step % self.curvature_every == 0 and bad is None:
            self.probe_curvature(step)

    def _keep_loss(self, step: int, loss: float) -> None:
        if step % self._stride:
            return
        self.step_losses.append((step, loss))
        if len(self.step_losses) > 4096:
            self._stride *= 2
            self.step_losses = [p for p in self.step_losses if p[0] % self._stride == 0]

    def _flush_window(self, step: int, lr: float | None, epoch: float | None) -> None:
        w = self._win
        if not (w["losses"] or w["gnorms"]):
            return
        rec: dict[str, Any] = {"step": step, "lr": lr}
        if epoch is not None:
            rec["epoch"] = round(float(epoch), 4)
        if w["losses"]:
            rec["train_loss"] = w["loss"] / w["losses"]
        if w["gnorms"]:
            rec["grad_norm"] = w["gnorm"] / w["gnorms"]
        self._win = {"loss": 0.0, "losses": 0, "gnorm": 0.0, "gnorms": 0}
        self.log(rec)

    def _nonfinite(self, what: str, loss: float | None, lr: float | None, step: int) -> None:
        """The guard: record the event as the trainer does; `patience` in a row → should_stop."""
        self.skipped += 1
        self.streak += 1
        self.last_nonfinite = what
        self.log({"event": "nonfinite", "step": step, "what": what, "loss": loss, "lr": lr,
                  "streak": self.streak})
        if self.board is not None:
            self.board.scalars({"nonfinite_steps": self.skipped}, step)
        if self.patience is not None and self.streak >= self.patience and not self.should_stop:
            self.should_stop = True
            self.stop_reason = (f"training stopped at step {step}: {self.streak} non-finite steps in a row "
                                f"(last: {what}); lower the learning rate or clip the gradient norm")
            self.log({"event": "stopped", "step": step, "reason": self.stop_reason})

    def log(self, metrics: Mapping[str, Any], *, step: int | None = None) -> None:
        """Add a record (validation results, a framework's own train-loss window, an event)."""
        rec = dict(metrics)
        rec.setdefault("step", self.step if step is None else step)
        self.records.append(rec)
        if self.board is not None and "event" not in rec:
            self.board.scalars(rec, int(rec["step"]))

    def probe_curvature(self, step: int | None = None) -> dict[str, Any] | None:
        """The top Hessian eigenvalues on the held batch now (Lanczos, residuals kept)."""
        if self.held is None:
            return None
        try:
            rec = top_eigenvalues(hessian(self.model, self.held), k=self.curvature_k, iters=self.curvature_iters)
        except (FloatingPointError, RuntimeError, ValueError) as e:
            warnings.warn(f"curvature probe at step {self.step} failed: {e}", stacklevel=2)
            return None
        rec = {"step": self.step if step is None else step, "lr": self.lr(), **rec}
        self.curvature_records.append(rec)
        if self.board is not None:
            self.board.scalars(curvature_scalars(rec["eigenvalues"], rec["residuals"]), rec["step"])
        return rec

    # ------------------------------------------------------------------ what the doctor reads
    def lr(self) -> float | None:
        """The learning rate of the first parameter group now."""
        if self.optimizer is None or not self.optimizer.param_groups:
            return None
        lr = self.optimizer.param_groups[0].get("lr")
        return float(lr) if isinstance(lr, int | float | Tensor) else None

    def optimizer_config(self) -> dict[str, Any]:
        """The optimizer as a thalweg `[optimizer]` section: name, lr, momentum, weight decay."""
        if self.optimizer is None:
            return {}
        g = self.optimizer.param_groups[0]
        out: dict[str, Any] = {"name": type(self.optimizer).__name__.lower()}
        for k in ("lr", "momentum", "weight_decay", "nesterov", "betas", "eps"):
            v = g.get(k)
            if isinstance(v, Tensor):
                v = float(v)
            if isinstance(v, int | float | bool | tuple | list):
                out[k] = list(v) if isinstance(v, tuple) else v
        return out

    def report(self, out_dir: str | Path | None = None, *, overwrite: bool = False,
               curvature: bool | None = None) -> Any:
        """Run the doctor and write findings.json, report.html, figures/ and the records into
        `out_dir` (default: the watcher's); returns a `thalweg.integrations.report.Report`."""
        target = Path(out_dir) if out_dir is not None else self.out_dir
        if target is None:
            raise ValueError("report() needs a directory: report('runs/mine'), or out_dir= when watching")
        if not self.started:
            self.start()
        return write_report(self, target, overwrite=overwrite,
                            curvature=self.end_curvature if curvature is None else curvature)
