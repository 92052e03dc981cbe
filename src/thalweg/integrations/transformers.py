"""Hugging Face: `ThalwegTrainerCallback` gives a `transformers.Trainer` thalweg's monitors,
non-finite guard, curvature probe, TensorBoard/MLflow logging and the doctor's report.

    trainer = Trainer(model, args, train_dataset=..., eval_dataset=...,
                      callbacks=[ThalwegTrainerCallback(curvature_every=100, probe=collator(examples[:16]))])
    trainer.train()              # → <args.output_dir>/thalweg/{findings.json, report.html, …}

The train-loss curve is the Trainer's own (`logs["loss"]`, every `logging_steps`), the
validation curve its `eval_loss` / `eval_accuracy`; the monitors read the gradients after the
Trainer has clipped them (`max_grad_norm`), just before `optimizer.step()`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import Tensor
from transformers import TrainerCallback

from thalweg.integrations.watcher import Watcher

__all__ = ["ThalwegTrainerCallback"]


class ThalwegTrainerCallback(TrainerCallback):
    """thalweg's instruments in a Hugging Face Trainer run (main process only).

    out_dir: default `<args.output_dir>/thalweg` (an earlier report there is kept: `-2`, …).
    every: steps between monitor measurements (default: `args.logging_steps`).
    probe: a batch of model inputs with labels (the model computes its loss), or any
      `HeldBatch` form; default: the first training batch the Trainer feeds the model.
    The other options are `Watcher`'s. After `train()`, `.report` holds the findings.
    """

    def __init__(self, out_dir: str | Path | None = None, *, every: int | None = None, monitors: bool = True,
                 curvature_every: int = 0, curvature_k: int = 1, curvature_iters: int = 30,
                 probe: Any = None,
                 loss_fn: Callable[..., Tensor] | None = None, patience: int | None = 3,
                 tensorboard: bool | str = "auto", mlflow: str | None = None,
                 config: Mapping[str, Any] | None = None, data: Any = None, name: str | None = None,
                 overwrite: bool = False, end_curvature: bool = True) -> None:
        self.out_dir, self.every, self.probe, self.loss_fn = out_dir, every, probe, loss_fn
        self.options = dict(monitors=monitors, curvature_every=curvature_every, curvature_k=curvature_k,
                            curvature_iters=curvature_iters,
                            patience=patience, tensorboard=tensorboard, mlflow=mlflow, config=config,
                            data=data, overwrite=overwrite, end_curvature=end_curvature)
        self.name = name
        self.watcher: Watcher | None = None
        self.report: Any = None
        self._hook: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, optimizer: Any = None,
                       **kwargs: Any) -> None:
        if not state.is_world_process_zero or model is None:
            return
        probe = self.probe
        opt = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the torch optimizer
        cfg = {"train": {"batch_size": args.per_device_train_batch_size},
               "regularization": {"clip_norm": args.max_grad_norm or None}}
        opts = dict(self.options)
        cfg.update(opts.pop("config") or {})
        out = Path(self.out_dir) if self.out_dir is not None else Path(args.output_dir) / "thalweg"
        steps = getattr(state, "logging_steps", None) or args.logging_steps  # a ratio of max_steps resolved
        self.watcher = Watcher(model, opt, every=self.every or max(int(steps), 1), probe=probe,
                               loss_fn=self.loss_fn, out_dir=out, name=self.name or type(model).__name__,
                               window=False, config=cfg, **opts)
        self.watcher.start()
        if probe is None:  # hold the first batch the Trainer feeds the model
            self._hook = model.register_forward_pre_hook(self._hold, with_kwargs=True)

    def _hold(self, module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        self._hook.remove()
        batch = {k: v.detach().clone() for k, v in kwargs.items() if isinstance(v, Tensor)}
        if self.watcher is not None and "labels" in batch and not args:
            self.watcher.set_probe(batch, self.loss_fn)
        else:
            warnings.warn("ThalwegTrainerCallback could not hold a batch with labels: the curvature probe "
                          "and the end-of-run measurement are off (give probe=)", stacklevel=2)

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.watcher is not None:
            self.watcher.before_step()

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        w = self.watcher
        if w is None:
            return None
        w.after_step(None, epoch=state.epoch)
        if w.should_stop:
            control.should_training_stop = True
        return control

    def on_log(self, args: Any, state: Any, control: Any, logs: Mapping[str, Any] | None = None,
               **kwargs: Any) -> None:
        if self.watcher is None or not logs or "loss" not in logs:
            return
        rec = {"step": state.global_step, "epoch": state.epoch, "train_loss": logs["loss"],
               "lr": logs.get("learning_rate"), "grad_norm": logs.get("grad_norm")}
        self.watcher.log({k: float(v) if isinstance(v, Tensor) else v for k, v in rec.items() if v is not None})

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Mapping[str, Any] | None = None,
                    **kwargs: Any) -> None:
        if self.watcher is None or not metrics or "eval_loss" not in metrics:
            return
        rec = {"step": state.global_step, "epoch": state.epoch, "val_loss": float(metrics["eval_loss"])}
        if "eval_accuracy" in metrics:
            rec["val_accuracy"] = float(metrics["eval_accuracy"])
        self.watcher.log(rec)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.watcher is not None:
            try:
                self.report = self.watcher.report()
            finally:
                self.watcher.close()
