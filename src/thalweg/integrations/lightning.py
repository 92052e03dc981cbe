"""PyTorch Lightning: `ThalwegCallback` gives a `Trainer` thalweg's monitors, non-finite guard,
curvature probe, TensorBoard/MLflow logging and the doctor's report at the end; `optimizers`
builds any registry optimizer (and a thalweg schedule) for `configure_optimizers`.

    trainer = L.Trainer(callbacks=[ThalwegCallback(every=20, curvature_every=100,
                                                   probe=(x_val, y_val), loss_fn=F.cross_entropy)])
    trainer.fit(module)          # → <trainer.log_dir>/thalweg/{findings.json, report.html, …}

    def configure_optimizers(self):
        return optimizers(self.parameters(), "adamw", lr=3e-3,
                          schedule=thalweg.schedules.warmup(thalweg.schedules.Cosine(3e-3, 1000), 50))
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from thalweg.integrations.watcher import Watcher

__all__ = ["ThalwegCallback", "optimizers"]


def optimizers(params: Iterable[Any] | torch.nn.Module, name: str = "adamw", *, schedule: Any = None,
               **hparams: Any) -> dict[str, Any]:
    """What `configure_optimizers` returns for a thalweg registry optimizer: `{"optimizer": …}`,
    with `"lr_scheduler"` stepping a thalweg schedule (absolute lr per step) when given."""
    from thalweg.optim import registry
    from thalweg.schedules import to_torch

    opt = registry.create(name, params, **hparams)
    out: dict[str, Any] = {"optimizer": opt}
    if schedule is not None:
        out["lr_scheduler"] = {"scheduler": to_torch(schedule, opt), "interval": "step", "frequency": 1}
    return out


def _loss_of(outputs: Any) -> Tensor | None:
    if isinstance(outputs, Tensor):
        return outputs
    if isinstance(outputs, Mapping):
        return outputs.get("loss")
    return None


class ThalwegCallback(pl.Callback):
    """thalweg's instruments in a Lightning run (rank 0 only).

    out_dir: default `<trainer.log_dir>/thalweg` (never replaces an earlier report: `-2`, …).
    probe / loss_fn: the held batch for the curvature probe and the doctor's measurements (see
      `thalweg.integrations.HeldBatch`); with no probe the first training batch is held when
      it is an (x, y) pair and a loss is known (`loss_fn`, or the module's `loss_fn`/`criterion`).
    val_loss / val_accuracy: the `self.log` names the validation results are read from.
    The other options are `Watcher`'s. After `fit`, `.report` holds the findings.
    """

    def __init__(self, out_dir: str | Path | None = None, *, every: int = 50, monitors: bool = True,
                 curvature_every: int = 0, curvature_k: int = 1, curvature_iters: int = 30,
                 probe: Any = None,
                 loss_fn: Callable[..., Tensor] | None = None, patience: int | None = 3,
                 tensorboard: bool | str = "auto", mlflow: str | None = None,
                 config: Mapping[str, Any] | None = None, data: Any = None, name: str | None = None,
                 val_loss: str = "val_loss", val_accuracy: str = "val_accuracy",
                 overwrite: bool = False, end_curvature: bool = True) -> None:
        super().__init__()
        self.out_dir, self.probe, self.loss_fn = out_dir, probe, loss_fn
        self.options = dict(every=every, monitors=monitors, curvature_every=curvature_every,
                            curvature_k=curvature_k, curvature_iters=curvature_iters, patience=patience, tensorboard=tensorboard,
                            mlflow=mlflow, config=config, data=data, overwrite=overwrite, end_curvature=end_curvature)
        self.name, self.val_keys = name, (val_loss, val_accuracy)
        self.watcher: Watcher | None = None
        self.report: Any = None
        self._stepped = False
        self._losses: list[float] = []
        self._recording = False
        self._epoch: float | None = None

    # ------------------------------------------------------------------ set-up
    def _open(self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any) -> None:
        probe, loss_fn = self.probe, self.loss_fn or getattr(module, "loss_fn", None) or getattr(module, "criterion", None)
        if probe is None and isinstance(batch, tuple | list) and len(batch) == 2 and callable(loss_fn) \
                and all(isinstance(t, Tensor) for t in batch):
            probe = (batch[0].detach().clone(), batch[1].detach().clone())
        if probe is None:
            warnings.warn("ThalwegCallback has no held batch: the curvature probe and the end-of-run "
                          "measurement are off (give probe= and loss_fn=)", stacklevel=2)
        opt = trainer.optimizers[0] if trainer.optimizers else None
        out = Path(self.out_dir) if self.out_dir is not None else Path(trainer.log_dir or trainer.default_root_dir) / "thalweg"
        self.watcher = Watcher(module, opt, probe=probe, loss_fn=loss_fn if probe is not None else None,
                               out_dir=out, name=self.name or type(module).__name__, **self.options)
        self.watcher.start()

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self.watcher is None and trainer.is_global_zero:
            self._open(trainer, pl_module, batch)

    # ------------------------------------------------------------------ the step
    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        if self.watcher is not None:
            self.watcher.before_step()  # before Lightning clips: the norm the trainer logs too
            self._stepped = True

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        w = self.watcher
        if w is None:
            return
        loss = _loss_of(outputs)
        if loss is not None:
            self._losses.append(float(loss.detach()))
        if not self._stepped:  # accumulating gradients: the optimizer steps later
            return
        self._stepped = False
        mean = sum(self._losses) / len(self._losses) if self._losses else None
        self._losses = []
        n = trainer.num_training_batches
        epoch = trainer.current_epoch + (batch_idx + 1) / n if isinstance(n, int) and n > 0 else None
        self._epoch = epoch
        w.after_step(mean, epoch=epoch)
        if w.should_stop:
            trainer.should_stop = True

    # ------------------------------------------------------------------ validation
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.watcher is not None and self.watcher.monitor is not None:  # keep eval passes out of the stats
            self._recording, self.watcher.monitor.record = self.watcher.monitor.record, False

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        w = self.watcher
        if w is None or trainer.sanity_checking:
            return
        if w.monitor is not None:
            w.monitor.record = self._recording
        rec: dict[str, Any] = {}
        for key, name in zip(("val_loss", "val_accuracy"), self.val_keys, strict=True):
            v = trainer.callback_metrics.get(name)
            if v is not None:
                rec[key] = float(v)
        if rec:
            if self._epoch is not None:
                rec["epoch"] = round(self._epoch, 4)
            w.log(rec)

    # ------------------------------------------------------------------ the end
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.watcher is not None:
            try:
                self.report = self.watcher.report()
            finally:
                self.watcher.close()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self.watcher is not None:
            self.watcher.close()
