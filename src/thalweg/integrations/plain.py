"""`thalweg.watch(model, optimizer)`: thalweg's monitors, non-finite guard, curvature probe,
TensorBoard logging and doctor for a hand-written training loop.

    w = thalweg.watch(model, opt, out_dir="runs/mine", probe=(x_val, y_val), loss_fn=F.cross_entropy)
    for x, y in loader:
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        if w.step(loss):          # False: the loss or a gradient is NaN/inf — skip this step
            opt.step()
    w.log(val_loss=..., val_accuracy=...)   # whenever you validate
    print(w.report())             # findings.json, report.html, figures/ in runs/mine

`step(loss)` reads the gradients, so call it after `backward()` and before `zero_grad()`;
called before `optimizer.step()` it can also stop a non-finite step from being taken.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from thalweg.integrations.watcher import Watcher

__all__ = ["Watch", "watch"]


class Watch:
    """The handle `watch` returns: `.step(loss)`, `.log(**metrics)`, `.report(dir)`, `.close()`.

    With an optimizer, its step hooks tell the watcher when a step was really taken (update
    ratios are measured across it); a step you skip is counted as skipped.
    """

    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher
        self._pending: float | None = None
        self._waiting = False  # step() was called and the optimizer has not stepped yet
        self._late = False  # the optimizer stepped before step(loss) was called
        self._ignore = False
        self._handles: list[Any] = []
        opt = watcher.optimizer
        if opt is not None:
            self._handles.append(opt.register_step_post_hook(self._after_optimizer_step))

    @property
    def steps(self) -> int:
        """Steps counted so far (taken or skipped)."""
        return self.watcher.step

    def _flush(self, *, skipped: bool) -> None:
        if self._waiting:
            self._waiting = False
            self.watcher.after_step(self._pending, skipped=skipped)

    def _after_optimizer_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self._waiting:
            self._flush(skipped=False)
        elif self._ignore:  # a non-finite step the guard already counted, taken anyway
            self._ignore = False
        else:  # this loop calls step(loss) after optimizer.step(): it counts the step then
            self._late = True

    def step(self, loss: float | Tensor | None = None) -> bool:
        """This step's gradients are ready: record the loss and gradient norm, check them (the
        guard), measure every `every` steps. False = the loss or a gradient is NaN/inf and the
        step should be skipped; `patience` of them in a row raise `NonFiniteError`."""
        from thalweg.train.guard import NonFiniteError

        self._flush(skipped=True)  # the previous step(loss) was not followed by optimizer.step()
        self._ignore = False
        w = self.watcher
        lv = None if loss is None else float(loss.detach() if isinstance(loss, Tensor) else loss)
        late = self._late or w.optimizer is None
        self._late = False
        ok = w.before_step(snapshot=not late) and (lv is None or math.isfinite(lv))
        if late or not ok:
            w.after_step(lv, skipped=not ok)
            self._ignore = not ok and not late
        else:
            self._pending, self._waiting = lv, True
        if w.should_stop:
            raise NonFiniteError(w.stop_reason or "training stopped: non-finite steps", what=w.last_nonfinite or "loss",
                                 step=w.step)
        return ok

    def log(self, metrics: dict[str, Any] | None = None, /, **values: Any) -> None:
        """Validation (or any) numbers at the current step: `w.log(val_loss=0.3, val_accuracy=0.9)`."""
        self.watcher.log({**(metrics or {}), **values})

    def report(self, out_dir: Any = None, **kw: Any) -> Any:
        """Run the doctor; write findings.json, report.html, figures/ (see `Watcher.report`)."""
        self._flush(skipped=True)
        return self.watcher.report(out_dir, **kw)

    def close(self) -> None:
        """Remove the optimizer and monitor hooks, close the loggers."""
        self._flush(skipped=True)
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.watcher.close()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def watch(model: nn.Module, optimizer: torch.optim.Optimizer | None = None, **options: Any) -> Watch:
    """Watch a hand-written loop; `options` are `Watcher`'s (every, curvature_every, probe,
    loss_fn, out_dir, tensorboard, mlflow, patience, config, data, name, overwrite)."""
    w = Watcher(model, optimizer, **options)
    w.start()
    return Watch(w)
