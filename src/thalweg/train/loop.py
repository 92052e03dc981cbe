"""The training loop of seed 002 as a product: `fit(config) -> RunResult`.

Per step: set lr from the schedule → zero grad → forward → loss (+ penalties) → backward →
clip → non-finite guard → step. Per eval: validate, keep the best weights, early stopping.
Per checkpoint: everything needed to continue bitwise identically (weights, optimizer, loader
position, every RNG, counters). Non-finite steps are skipped; K in a row roll back to the last
good checkpoint with a lower lr; if that fails too, the run stops naming what blew up.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from typing import Any

import torch
from torch import nn

from thalweg import regularize as R
from thalweg.data import Loader
from thalweg.train import distributed
from thalweg.train.checkpoint import (
    BackgroundWriter,
    CheckpointManager,
    kill_point,
    save_checkpoint,
    snapshot,
)
from thalweg.train.components import (
    build_model,
    build_optimizer,
    build_schedule,
    evaluate,
    initialize,
    loss_function,
    prepare_data,
)
from thalweg.train.config import ConfigError, RunConfig, dump_config
from thalweg.train.guard import NonFiniteError, Restart, on_nonfinite
from thalweg.train.progress import ProgressView
from thalweg.train.runs import MetricsLog, RunPaths, write_atomic
from thalweg.train.state import capture_rng, restore_rng, seed_everything

__all__ = ["NonFiniteError", "Trainer"]


class Trainer:
    """One run: builds everything from the config, then trains, checkpoints and reports."""

    def __init__(self, cfg: RunConfig, *, resume: bool = False, quiet: bool = False) -> None:
        self.cfg, t = cfg, cfg.train
        self.ctx = distributed.setup(t.device)
        self.paths = RunPaths(cfg.run_dir())
        self.main = self.ctx.is_main
        self.view = ProgressView(enabled=self.main and not quiet, notices=self.main)
        self.warnings: list[str] = []
        if t.batch_size % self.ctx.world_size:
            raise ConfigError("train", "batch_size", t.batch_size,
                              f"must be divisible by the {self.ctx.world_size} data-parallel processes")
        seed_everything(t.seed)
        self.splits = prepare_data(cfg).to(self.ctx.device)
        self.model = build_model(cfg, self.splits).to(self.ctx.device)
        initialize(self.model, cfg, self.splits)
        self.net: nn.Module = self.model
        if self.ctx.enabled:
            ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.opt, self.info = build_optimizer(cfg, self.model)
        self.loader = Loader(self.splits.x_train, self.splits.y_train,
                             t.batch_size // self.ctx.world_size, shuffle=True, seed=t.seed,
                             rank=self.ctx.rank, world_size=self.ctx.world_size)
        self.steps_per_epoch = len(self.loader)
        self.total_steps = t.epochs * self.steps_per_epoch
        self.schedule = build_schedule(cfg, self.total_steps, self.steps_per_epoch)
        self.train_loss, self.eval_loss = loss_function(cfg, self.splits)
        self.classify = self.splits.task == "classification"
        bm = t.best_metric
        self.best_metric = bm if bm != "auto" else ("val_accuracy" if self.classify else "val_loss")
        if self.best_metric == "val_accuracy" and not self.classify:
            raise ConfigError("train", "best_metric", bm, "val_accuracy needs a classification task")
        self.mixup_gen = torch.Generator().manual_seed(t.seed + 7919)
        es = cfg.regularization.early_stopping
        self.early = R.EarlyStopping(es.patience, es.min_delta,
                                     mode="max" if self.best_metric == "val_accuracy" else "min")
        self.ckpts = CheckpointManager(self.paths.checkpoints, keep=t.keep_checkpoints)
        self.writer = BackgroundWriter()  # checkpoints are fsynced while training goes on
        self.log = MetricsLog(self.paths.metrics, enabled=self.main)
        self.mon_log = MetricsLog(self.paths.monitors, enabled=self.main and cfg.diagnostics.monitors)
        self.monitor: Any = None
        if cfg.diagnostics.monitors:  # per-layer gradient norms, dead units, update ratios
            from thalweg.monitors import Monitor

            self.monitor = Monitor(self.model).attach()
        self.names, self.params = map(list, zip(*self.model.named_parameters(), strict=True))
        torch.manual_seed(t.seed + 1 + self.ctx.rank)  # dropout masks differ per rank
        self.s: dict[str, Any] = {
            "step": 0, "lr_scale": 1.0, "rollbacks": 0, "streak": 0, "skipped": 0,
            "best_value": None, "best_step": -1, "stopped": None,
            "elapsed": 0.0, "last_eval_step": -1,
        }
        self._zero_window()
        self._start = time.perf_counter()
        if resume:
            self._resume()
        elif self.main:
            self.paths.root.mkdir(parents=True, exist_ok=True)
            if self.ckpts.paths():
                self.view.notice(f"starting over in {self.paths.root} (its old checkpoints are "
                                 "removed; `--resume` continues a run instead)")
            for p in self.ckpts.paths():
                p.unlink()
            self.paths.best.unlink(missing_ok=True)
            write_atomic(self.paths.config, dump_config(cfg))
            self.log.open()
            self.mon_log.open()
        self.ctx.barrier()

    # ----- state -------------------------------------------------------------------------
    def _zero_window(self) -> None:
        self._buf: list[tuple[Any, ...]] = []
        z = torch.zeros((), dtype=torch.float64, device=self.ctx.device)
        self.w = {"loss": z.clone(), "correct": z.clone(), "count": z.clone(),
                  "gnorm": z.clone(), "steps": z.clone()}

    def _state(self) -> dict[str, Any]:
        self._fold()
        s = dict(self.s)
        s["elapsed"] = self.s["elapsed"] + time.perf_counter() - self._start
        return {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "loader": self.loader.state_dict(),
            # per rank: its random streams and its share of the running train metrics
            "ranks": self.ctx.gather({
                "rng": capture_rng({"mixup": self.mixup_gen}),
                "window": {k: float(v.item()) for k, v in self.w.items()},
            }),
            "trainer": s,
            "early_stopping": self.early.state_dict(),
            "metrics_lines": self.log.lines,
            "monitor_lines": self.mon_log.lines,
            "world_size": self.ctx.world_size,
            "config": self.cfg.model_dump(mode="json"),
        }

    def _restore(self, st: dict[str, Any]) -> None:
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
            self._warn(f"checkpoint was written by {len(ranks)} processes, now {self.ctx.world_size}: "
                       "random streams are re-seeded, so the run is no longer bitwise reproducible")
            torch.manual_seed(self.cfg.train.seed + 1 + self.ctx.rank)
            if self.ctx.rank:
                self._zero_window()
        self.s = dict(st["trainer"])
        self.early.load_state_dict(st["early_stopping"])
        self._start = time.perf_counter()

    def _save(self) -> None:
        state = self._state()  # every rank joins the RNG gather
        if self.main:
            self.writer.submit(self._write, snapshot(state), self.s["step"])

    def _write(self, state: dict[str, Any], step: int) -> None:
        with contextlib.suppress(OSError, ValueError):  # closed meanwhile: nothing to sync
            self.log.sync()
        self.ckpts.save(state, step)

    def _sync_writes(self) -> None:
        """Every rank may read checkpoints after this: rank 0's writes are on disk."""
        self.writer.wait()
        self.ctx.barrier()

    def _resume(self) -> None:
        self.ctx.barrier()
        if self.main:
            self.ckpts.remove_stale_temps()
            for tmp in self.paths.root.glob(".best.pt.tmp-*"):
                tmp.unlink(missing_ok=True)
        with warnings.catch_warnings():  # reported below, once, by the trainer
            warnings.simplefilter("ignore")
            latest = self.ckpts.load_latest(self.ctx.device)
        for path, why in self.ckpts.skipped:
            self._warn(f"skipped damaged checkpoint {path.name}: {why}")
        if latest is None:
            self._warn(f"no usable checkpoint in {self.paths.checkpoints}; starting from scratch")
            if self.main:
                self.log.open()
                self.mon_log.open()
            return
        path, st = latest
        self._restore(st)
        self.view.notice(f"resumed {self.paths.root} from {path.name} (step {self.s['step']})")
        if self.main:
            self.log.open(keep_lines=st["metrics_lines"])
            self.mon_log.open(keep_lines=st.get("monitor_lines", 0))

    def _warn(self, msg: str) -> None:
        self.warnings.append(msg)
        self.view.notice(f"[yellow]warning:[/] {msg}")

    # ----- one step ----------------------------------------------------------------------
    def _loss(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Any]:
        r = self.cfg.regularization
        if r.mixup_alpha > 0:
            mixed = R.mixup(xb, yb, r.mixup_alpha, self.mixup_gen)
            out = self.net(mixed.x)
            per = mixed.loss(self.train_loss, out)
        else:
            out = self.net(xb)
            per = self.train_loss(out, yb)
        loss = per.mean()
        if r.l1:
            loss = loss + R.l1_penalty(self.params, r.l1, weights_only=True)
        if r.l2:
            loss = loss + R.l2_penalty(self.params, r.l2, weights_only=True)
        return loss, per.detach(), out.detach()

    def _step(self, xb: torch.Tensor, yb: torch.Tensor) -> bool:
        r, step = self.cfg.regularization, self.s["step"]
        lr = self.schedule(step) * self.s["lr_scale"]
        for g in self.opt.param_groups:
            g["lr"] = lr
        if self.info.needs_closure:
            box: dict[str, Any] = {}

            def closure() -> torch.Tensor:
                self.opt.zero_grad()
                loss, box["per"], box["out"] = self._loss(xb, yb)
                loss.backward()
                return loss

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
            watch = ok and self.monitor is not None and (step + 1) % self.cfg.train.log_every == 0
            if watch:
                self.monitor.snapshot()
            if ok:
                self.opt.step()
            if watch:
                self.mon_log.write(self.monitor.measure(loss=loss.detach(), step=step + 1))
        self.s["step"] = step + 1
        if not ok:
            return on_nonfinite(self, loss.detach(), lr)
        self.s["streak"] = 0
        self._buf.append((per, gnorm.detach(), out if self.classify else None, yb))
        return True

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
        return evaluate(model or self.model, x, y, self.eval_loss, self.classify,
                        self.cfg.train.eval_batch_size)

    def _log_train(self, lr: float) -> dict[str, Any]:
        self._fold()
        w = {k: v.item() for k, v in self.w.items()}
        rec: dict[str, Any] = {"step": self.s["step"],
                               "epoch": round(self.s["step"] / self.steps_per_epoch, 4), "lr": lr}
        if w["steps"]:
            if self.ctx.enabled:
                t = torch.tensor([w["loss"], w["correct"], w["count"]], dtype=torch.float64)
                w["loss"], w["correct"], w["count"] = self.ctx.all_reduce_sum(t).tolist()
            rec["train_loss"] = w["loss"] / w["count"]
            if self.classify:
                rec["train_accuracy"] = w["correct"] / w["count"]
            rec["grad_norm"] = w["gnorm"] / w["steps"]
        self._zero_window()
        return rec

    def _eval_and_keep_best(self, rec: dict[str, Any]) -> None:
        res = self.evaluate(self.splits.x_val, self.splits.y_val)
        res = self.ctx.broadcast(res)
        rec["val_loss"] = res["loss"]
        if "accuracy" in res:
            rec["val_accuracy"] = res["accuracy"]
        self.s["last_eval_step"] = self.s["step"]
        value, best = rec[self.best_metric], self.s["best_value"]
        sign = 1.0 if self.best_metric == "val_accuracy" else -1.0
        if math.isfinite(value) and (best is None or sign * (value - best) > 0):
            self.s["best_value"], self.s["best_step"] = value, self.s["step"]
            if self.main:
                best = snapshot({"model": self.model.state_dict(), "step": self.s["step"],
                                 "metric": self.best_metric, "value": value,
                                 "config": self.cfg.model_dump(mode="json")})
                self.writer.submit(save_checkpoint, best, self.paths.best)
        if self.early.step(value) and self.cfg.regularization.early_stopping.enabled:
            self.s["stopped"] = "early_stopping"

    def _record(self, evaluate: bool) -> None:
        lr = self.opt.param_groups[0]["lr"]
        rec = self._log_train(lr)
        if evaluate:
            self._eval_and_keep_best(rec)
        rec["seconds"] = round(self.s["elapsed"] + time.perf_counter() - self._start, 3)
        self.log.write(rec)
        self.view.update(rec)

    # ----- the loop ----------------------------------------------------------------------
    def train(self) -> None:
        t = self.cfg.train
        if self.s["step"] == 0 and not self.ckpts.paths():
            self._save()  # step 0: the last good state to roll back to
        self.view.start(self.total_steps, self.s["step"], t.epochs)
        try:
            while self.s["stopped"] is None and self.loader.epoch < t.epochs:
                try:
                    self._epoch()
                except Restart:
                    continue
            if self.s["stopped"] is None:
                self.s["stopped"] = "completed"
            if self.s["last_eval_step"] != self.s["step"]:
                self._record(evaluate=True)
            self._save()
            self._sync_writes()
        finally:
            self.view.stop()

    def _epoch(self) -> None:
        t = self.cfg.train
        for xb, yb in self.loader:
            self._step(xb, yb)
            step = self.s["step"]
            end = self.loader.position == self.steps_per_epoch
            ev = (step % t.eval_every == 0) if t.eval_every else end
            if ev or step % t.log_every == 0:
                self._record(evaluate=ev)
            else:
                self.view.advance()
            if self.s["stopped"] is not None:
                return
            if end:
                break  # the epoch's checkpoint holds the start of the next epoch
            if t.checkpoint_every and step % t.checkpoint_every == 0:
                self._save()
            kill_point(step, self.writer)
        self.loader.set_epoch(self.loader.epoch + 1)
        step = self.s["step"]
        if not t.checkpoint_every or step % t.checkpoint_every == 0:
            self._save()
        kill_point(step, self.writer)
