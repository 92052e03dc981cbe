"""The training loop of seed 002 as a product: `fit(config) -> RunResult`.

Per step: set lr from the schedule → zero grad → forward → loss (+ penalties) → backward →
clip → non-finite guard → step. Per eval: validate, keep the best weights, early stopping.
Per checkpoint: everything needed to continue bitwise identically (weights, optimizer, loader
position, every RNG, counters). Non-finite steps are skipped; K in a row roll back to the last
good checkpoint with a lower lr; if that fails too, the run stops naming what blew up. The
run is assembled by :func:`~thalweg.train.build.build_run`; starting and resuming (locks,
checkpoint choice, best.pt recovery) live in :mod:`thalweg.train.session`, each record (train
window, validation, best.pt, early stopping) in :mod:`thalweg.train.validation`.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import torch
from rich.markup import escape
from torch import nn

from thalweg import regularize as R
from thalweg.integrations import board
from thalweg.train import distributed, validation
from thalweg.train.build import build_run
from thalweg.train.checkpoint import (
    BackgroundWriter,
    CheckpointManager,
    kill_point,
    snapshot,
)
from thalweg.train.components import evaluate
from thalweg.train.config import RunConfig
from thalweg.train.guard import Action, NonFiniteError, first_nonfinite_grad, on_nonfinite
from thalweg.train.progress import ProgressView
from thalweg.train.resume import config_hash
from thalweg.train.runs import MetricsLog, RunPaths
from thalweg.train.state import TrainState, capture_rng, restore_rng

__all__ = ["NonFiniteError", "Trainer"]


class Trainer:
    """One run: builds everything from the config, then trains, checkpoints and reports.

    `Trainer(cfg)` claims and locks the run directory (a new name if `cfg`'s holds a run and
    not `overwrite`), builds the run and starts it or, with `resume`, continues it.
    """

    def __init__(self, cfg: RunConfig, *, resume: bool = False, quiet: bool = False,
                 overwrite: bool = False, allow_config_change: bool = False) -> None:
        from thalweg.train import session

        self.cfg = cfg
        self.ctx = distributed.setup(cfg.train.device)
        self.main = self.ctx.is_main
        self.view = ProgressView(enabled=self.main and not quiet, notices=self.main)
        self.warnings: list[str] = []
        self.lock: Any = None
        self.claim_note: str | None = None
        self.writer = BackgroundWriter()  # checkpoints are fsynced while training goes on
        self.log = MetricsLog(RunPaths(cfg.run_dir()).metrics, enabled=False)
        self.mon_log = self.log
        self.monitor: Any = None
        self.board: Any = None  # TensorBoard / MLflow (rank 0, while training)
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

    def _build(self) -> None:
        """Everything from the config (again after a failed restore left things half-loaded)."""
        cfg, t = self.cfg, self.cfg.train
        if self.monitor is not None:
            self.monitor.detach()
        parts = build_run(cfg, device=self.ctx.device, rank=self.ctx.rank,
                          world_size=self.ctx.world_size)
        self.parts, self.splits, self.model = parts, parts.splits, parts.model
        self.opt, self.info, self.loader = parts.optimizer, parts.info, parts.loader
        self.schedule, self.steps_per_epoch = parts.schedule, parts.steps_per_epoch
        self.total_steps, self.best_metric = parts.total_steps, parts.best_metric
        self.train_loss, self.eval_loss = parts.loss_fn, parts.eval_loss_fn
        self.classify = parts.classify
        self.net: nn.Module = self.model
        if self.ctx.enabled:
            ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.mixup_gen = torch.Generator().manual_seed(t.seed + 7919)
        es = cfg.regularization.early_stopping
        self.early = R.EarlyStopping(es.patience, es.min_delta,
                                     mode="max" if self.best_metric == "val_accuracy" else "min")
        self.ckpts = CheckpointManager(self.paths.checkpoints, keep=t.keep_checkpoints)
        self.log = MetricsLog(self.paths.metrics, enabled=self.main)
        self.mon_log = MetricsLog(self.paths.monitors, enabled=self.main and cfg.diagnostics.monitors)
        self.monitor = None
        if cfg.diagnostics.monitors:  # per-layer gradient norms, dead units, update ratios
            from thalweg.monitors import Monitor

            self.monitor = Monitor(self.model).attach()
        self.names, self.params = map(list, zip(*self.model.named_parameters(), strict=True))
        torch.manual_seed(t.seed + 1 + self.ctx.rank)  # dropout masks differ per rank
        self.state = TrainState()
        self.best_ok = False  # best.pt on disk is known good (so it may become best.prev.pt)
        self._zero_window()
        self._start = time.perf_counter()

    def close(self) -> None:
        """Finish the disk writes, close the logs, release the run directory."""
        self.writer.close()
        self.log.close()
        self.mon_log.close()
        if self.board is not None:
            self.board.close()
        if self.lock is not None:
            self.lock.release()

    # ----- state -------------------------------------------------------------------------
    def _zero_window(self) -> None:
        self._buf: list[tuple[Any, ...]] = []
        z = torch.zeros((), dtype=torch.float64, device=self.ctx.device)
        self.w = {"loss": z.clone(), "correct": z.clone(), "count": z.clone(),
                  "gnorm": z.clone(), "steps": z.clone()}

    def state_dict(self) -> dict[str, Any]:
        """The one resumable state: everything a checkpoint holds (every rank must call it)."""
        self._fold()
        counters = self.state.state_dict()
        counters["elapsed"] = self.state.elapsed + time.perf_counter() - self._start
        return {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "loader": self.loader.state_dict(),
            # per rank: its random streams and its share of the running train metrics
            "ranks": self.ctx.gather({
                "rng": capture_rng({"mixup": self.mixup_gen}),
                "window": {k: float(v.item()) for k, v in self.w.items()},
            }),
            "trainer": counters,
            "early_stopping": self.early.state_dict(),
            "metrics_lines": self.log.lines,
            "monitor_lines": self.mon_log.lines,
            "world_size": self.ctx.world_size,
            "config": self.cfg.model_dump(mode="json"),
            "config_hash": config_hash(self.cfg),
        }

    def load_state_dict(self, st: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (check it with `resume.state_problem` first)."""
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["optimizer"])
        self.loader.load_state_dict(st["loader"])
        ranks = st["ranks"]
        mine = ranks[self.ctx.rank] if len(ranks) == self.ctx.world_size else ranks[0]
        restore_rng(mine["rng"], {"mixup": self.mixup_gen})
        self.w = {k: torch.tensor(v, dtype=torch.float64, device=self.ctx.device)
                  for k, v in mine["window"].items()}
        self._buf = []
        if len(ranks) != self.ctx.world_size:
            self.warn(f"checkpoint was written by {len(ranks)} processes, now {self.ctx.world_size}: "
                      "random streams are re-seeded, so the run is no longer bitwise reproducible")
            torch.manual_seed(self.cfg.train.seed + 1 + self.ctx.rank)
            if self.ctx.rank:
                self._zero_window()
        self.state.load_state_dict(st["trainer"])
        self.early.load_state_dict(st["early_stopping"])
        self._start = time.perf_counter()

    def save(self) -> None:
        state = self.state_dict()  # every rank joins the RNG gather
        if self.main:
            self.writer.submit(self._write, snapshot(state), self.state.step)

    def _write(self, state: dict[str, Any], step: int) -> None:
        with contextlib.suppress(OSError, ValueError):  # closed meanwhile: nothing to sync
            self.log.sync()
        self.ckpts.save(state, step)

    def sync_writes(self) -> None:
        """Every rank may read checkpoints after this: rank 0's writes are on disk."""
        self.writer.wait()
        self.ctx.barrier()

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)
        self.view.notice(f"[yellow]warning:[/] {escape(msg)}")  # "[train] …" is text, not markup

    # ----- one step ----------------------------------------------------------------------
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

    def _rollback(self, what: str) -> None:
        """Back to the newest good checkpoint with lr × rollback_lr_factor; the guard's counts
        and the best model so far survive it (best.pt is never replaced by a worse model)."""
        t, s = self.cfg.train, self.state
        keep = (s.rollbacks, s.lr_scale, s.skipped, s.best_value, s.best_step)
        self.sync_writes()
        latest = self.ckpts.load_latest(self.ctx.device)
        if latest is None:
            raise NonFiniteError(f"non-finite {what} at step {s.step} and no checkpoint to "
                                 "roll back to", what=what, step=s.step)
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

    @torch.no_grad()
    def _fold(self) -> None:
        """Reduce the buffered per-step values into the window sums (a few ops per log, not per
        step; folding happens at the same steps in a resumed run, so the sums are identical)."""
        if not self._buf:
            return
        pers, gnorms, outs, ys = zip(*self._buf, strict=True)
        w, per = self.w, torch.cat(pers)
        w["loss"] += per.double().sum()
        w["count"] += per.numel()
        w["gnorm"] += torch.stack(gnorms).double().sum()
        w["steps"] += len(gnorms)
        if self.classify:
            w["correct"] += (torch.cat(outs).argmax(dim=1) == torch.cat(ys)).sum()
        self._buf = []

    # ----- evaluation --------------------------------------------------------------------
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, model: nn.Module | None = None) -> dict[str, float]:
        return evaluate(model or self.model, x, y, self.eval_loss.per_sample, self.classify,
                        self.cfg.train.eval_batch_size)

    def better(self, value: float, than: float | None) -> bool:
        sign = 1.0 if self.best_metric == "val_accuracy" else -1.0
        return than is None or sign * (value - than) > 0

    # ----- the loop ----------------------------------------------------------------------
    def train(self) -> None:
        t, s = self.cfg.train, self.state
        self.board = board.open_board(self)
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
