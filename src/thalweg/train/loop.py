"""The training loop of seed 002 as a product: `fit(config) -> RunResult`.

Per step: set lr from the schedule → zero grad → forward → loss (+ penalties) → backward →
clip → non-finite guard → step. Per eval: validate, keep the best weights, early stopping.
Per checkpoint: everything needed to continue bitwise identically (weights, optimizer, loader
position, every RNG, counters). Non-finite steps are skipped; K in a row roll back to the last
good checkpoint with a lower lr; if that fails too, the run stops naming what blew up. The
run's state is one object, :class:`~thalweg.train.run.Run` (assembled by
:func:`~thalweg.train.build.build_run`, saved and restored whole); starting and resuming
(locks, checkpoint choice, best.pt recovery) live in :mod:`thalweg.train.session`, each record
(train window, validation, best.pt, early stopping) in :mod:`thalweg.train.validation`; both
take the `Run`, not the trainer.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from thalweg import regularize as R
from thalweg.diagnose.curves import surviving
from thalweg.integrations import board
from thalweg.train import distributed, session, validation
from thalweg.train.config import RunConfig
from thalweg.train.guard import Action, NonFiniteError, advice, first_nonfinite_grad, on_nonfinite
from thalweg.train.progress import ProgressView
from thalweg.train.run import Run
from thalweg.train.rundir.checkpoint import kill_point
from thalweg.train.rundir.resume import config_fields
from thalweg.train.rundir.runs import RunPaths, read_metrics

__all__ = ["NonFiniteError", "Trainer"]


class Trainer(Run):
    """One run trained: `Trainer(cfg)` claims and locks the run directory (a new name if
    `cfg`'s holds a run and not `overwrite`), builds the run (:class:`~thalweg.train.run.Run`,
    the state the loop works on) and starts it or, with `resume`, continues it; `train()` is
    the loop.
    """

    def __init__(self, cfg: RunConfig, *, resume: bool = False, quiet: bool = False,
                 overwrite: bool = False, allow_config_change: bool = False) -> None:
        ctx = distributed.setup(cfg.train.device)
        super().__init__(cfg, ctx, ProgressView(enabled=ctx.is_main and not quiet, notices=ctx.is_main))
        try:
            session.check_parallel(self)
            self.paths = RunPaths(session.claim(self, overwrite=overwrite, resume=resume))
            self.cfg = cfg.model_copy(update={"name": self.paths.root.name})
            self._build()
            session.start(self, resume=resume, overwrite=overwrite,
                          allow_config_change=allow_config_change)
        except BaseException:
            self.close()
            distributed.teardown(self.ctx)
            raise

    # ----- the loop ----------------------------------------------------------------------
    def train(self) -> None:
        t, s = self.cfg.train, self.state
        if self.main:
            d = self.cfg.diagnostics
            self.board = board.open_board(self.paths.root, tensorboard=d.tensorboard, mlflow=d.mlflow,
                                          name=self.cfg.name, step=s.step, params=config_fields(self.cfg))
        if s.step == 0 and not self.ckpts.paths():
            self.save()  # step 0: the last good state to roll back to
        self.view.start(self.total_steps, s.step, t.epochs)
        try:
            while self.state.stopped is None and self.loader.epoch < t.epochs:
                self._epoch()  # False after a rollback: iterate again from the restored position
            s = self.state
            if s.stopped is None:
                s.stopped = "completed"
            if s.last_eval_step != s.step:
                validation.record(self, evaluate=True)
            self.save()
            self.sync_writes()
            if self.model_broken:  # the last step reached, the model it left broken
                msg = (f"the run reached step {s.step} with a non-finite model (validation loss inf/NaN; "
                       f"{s.skipped} step(s) skipped, {s.rollbacks} rollback(s)); best.pt holds the best finite "
                       f"model{f' (step {s.best_step})' if s.best_step >= 0 else ''}; {advice(self.cfg)}")
                self.log.write({"event": "stopped", "step": s.step, "reason": msg})
                raise NonFiniteError(msg, what="validation loss", step=s.step)
        finally:
            self.view.stop()

    def _epoch(self) -> bool:
        t = self.cfg.train
        for xb, yb in self.loader:
            if self._step(xb, yb) is Action.ROLLBACK:
                return False
            step = self.state.step
            end = self.loader.position == self.steps_per_epoch
            ev = (step % t.eval_every == 0) if t.eval_every else end
            if ev or step % t.log_every == 0:
                validation.record(self, evaluate=ev)
            else:
                self.view.advance()
            if self.state.stopped is not None:
                return True
            if end:
                break  # the epoch's checkpoint holds the start of the next epoch
            if t.checkpoint_every and step % t.checkpoint_every == 0:
                self.save()
            kill_point(step, self.writer)
        self.loader.set_epoch(self.loader.epoch + 1)
        step = self.state.step
        if not t.checkpoint_every or step % t.checkpoint_every == 0:
            self.save()
        kill_point(step, self.writer)
        return True

    # ----- one step: called by the loop above ---------------------------------------------
    def _step(self, xb: torch.Tensor, yb: torch.Tensor) -> Action | None:
        """One optimizer step; None when it was taken, else the guard's action."""
        r, step = self.cfg.regularization, self.state.step
        lr = self.schedule(step) * self.state.lr_scale
        for g in self.opt.param_groups:
            g["lr"] = lr
        watch = self.monitor is not None and (step + 1) % self.cfg.train.log_every == 0
        if self.info.needs_closure:  # clipping is refused by the config, DDP by the trainer
            box: dict[str, Any] = {}

            def closure() -> torch.Tensor:
                self.opt.zero_grad()
                loss, box["per"], box["out"] = self._loss(xb, yb)
                loss.backward()
                return loss

            if watch:
                self.monitor.snapshot()
            loss = self.opt.step(closure)
            per, out = box["per"], box["out"]
            gnorm = torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
            ok = math.isfinite(loss.detach().item()) and math.isfinite(gnorm.item())
        else:
            self.opt.zero_grad()
            loss, per, out = self._loss(xb, yb)
            loss.backward()
            if r.clip_value is not None:
                R.clip_grad_value(self.params, r.clip_value)
            # torch's clip_grad_norm_ in its two halves: check the norm before clipping, which
            # would otherwise scale an overflowing gradient to zeros and hide the culprit
            grads = [p.grad for p in self.params if p.grad is not None]
            gnorm = torch.nn.utils.get_total_norm(grads, foreach=True)
            ok = math.isfinite(loss.detach().item()) and math.isfinite(gnorm.item())
            if ok and r.clip_norm is not None:
                torch.nn.utils.clip_grads_with_norm_(self.params, r.clip_norm, gnorm, foreach=True)
            if self.ctx.enabled:  # every rank must agree to step or skip
                flag = self.ctx.all_reduce_sum(torch.tensor([float(ok)], device=self.ctx.device))
                ok = int(flag.item()) == self.ctx.world_size
            if ok and watch:
                self.monitor.snapshot()
            if ok:
                self.opt.step()
        if ok and watch:
            m = self.monitor.measure(loss=loss.detach(), step=step + 1)
            self.mon_log.write(m)
            if self.board is not None:
                self.board.monitors(m, step + 1)
        self.state.step = step + 1
        if not ok:
            return self._on_nonfinite(loss.detach(), lr)
        self.state.streak = 0
        self._buf.append((per, gnorm.detach(), out if self.classify else None, yb))
        return None

    def _loss(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Any]:
        r = self.cfg.regularization
        if r.mixup_alpha > 0:
            mixed = R.mixup(xb, yb, r.mixup_alpha, self.mixup_gen)
            out = self.net(mixed.x)
            per = mixed.loss(self.train_loss.per_sample, out)
        else:
            out = self.net(xb)
            per = self.train_loss.per_sample(out, yb)
        loss = per.mean()
        if r.l1:
            loss = loss + R.l1_penalty(self.params, r.l1, weights_only=True)
        if r.l2:
            loss = loss + R.l2_penalty(self.params, r.l2, weights_only=True)
        return loss, per.detach(), out.detach()

    def _on_nonfinite(self, loss: torch.Tensor, lr: float) -> Action:
        """Carry out the guard's decision: skip, roll back, or stop."""
        s = self.state
        what = "loss" if not torch.isfinite(loss) else first_nonfinite_grad(self.names, self.params)
        self.opt.zero_grad()
        d = on_nonfinite(s, self.cfg, what)
        self.log.write({"event": "nonfinite", "step": s.step, "what": what, "loss": float(loss),
                        "lr": lr, "streak": s.streak})
        if self.board is not None:
            self.board.scalars({"nonfinite_steps": s.skipped}, s.step)
        self.view.print(f"[yellow]step {s.step}: non-finite {what}; step skipped[/]")
        if d.action is Action.STOP:
            self.log.write({"event": "stopped", "step": s.step, "reason": d.message})
            raise NonFiniteError(d.message, what=what, step=s.step)
        if d.action is Action.ROLLBACK:
            self._rollback(what)
        return d.action

    def _healthy(self, state: dict[str, Any]) -> str | None:
        """Why a checkpoint is no place to roll back to (None: it is one): its weights are not
        finite, or the validation of that model (the last one logged at or before its step, in
        the surviving history) had gone inf/NaN — rolling back there would only skip steps."""
        bad = [k for k, v in state["model"].items() if torch.is_floating_point(v) and not bool(torch.isfinite(v).all())]
        if bad:
            return f"non-finite weights in {bad[0]}"
        step = int(state["trainer"]["step"])
        vals = [r["val_loss"] for r in surviving(read_metrics(self.paths.metrics)) if "val_loss" in r and r["step"] <= step]
        finite = [isinstance(v, int | float) and math.isfinite(v) for v in vals]
        if vals and not finite[-1] and any(finite):  # it had been finite: the model broke (not the data)
            return f"its validation loss was {vals[-1]}"
        return None

    def _rollback(self, what: str) -> None:
        """Back to the newest good checkpoint with lr × rollback_lr_factor; the guard's counts
        and the best model so far survive it (best.pt is never replaced by a worse model)."""
        t, s = self.cfg.train, self.state
        keep = (s.rollbacks, s.lr_scale, s.skipped, s.best_value, s.best_step)
        self.sync_writes()
        latest = self.ckpts.load_latest(self.ctx.device, accept=self._healthy)
        if latest is None:
            passed = "; ".join(f"{p.name}: {why}" for p, why in self.ckpts.passed_over[-3:])
            raise NonFiniteError(f"non-finite {what} at step {s.step} and no checkpoint with a finite model to "
                                 f"roll back to{f' ({passed})' if passed else ''}; {advice(self.cfg)}",
                                 what=what, step=s.step)
        self.load_state_dict(latest[1])
        s = self.state
        s.rollbacks, s.lr_scale, s.skipped = keep[0] + 1, keep[1] * t.rollback_lr_factor, keep[2]
        s.best_value, s.best_step, s.streak = keep[3], keep[4], 0
        self.log.write({"event": "rollback", "step": s.step, "what": what, "lr_scale": s.lr_scale})
        if self.board is not None:  # the abandoned steps leave TensorBoard too
            self.board.restart(purge_step=s.step + 1)
        self.warn(f"{t.nonfinite_patience} non-finite steps in a row ({what}): rolled back to "
                  f"step {s.step} with lr x{s.lr_scale:g}")
        self.save()
