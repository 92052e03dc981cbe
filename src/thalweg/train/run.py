"""One run's state, in one object: the config and the process context, what `build_run`
assembled (model, optimizer, loader, schedule, data splits), the run directory's files and
logs, the counters (`TrainState`), the training window, and how all of it is saved into and
restored from one checkpoint (`state_dict` / `load_state_dict`).

The trainer (:mod:`thalweg.train.loop`) runs its loop over a `Run`; the helpers it calls —
starting and resuming (:mod:`.session`), records and best.pt (:mod:`.validation`), the
result (:mod:`.api`) — take the `Run`, never the trainer.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import torch
from rich.markup import escape
from torch import nn

from thalweg import regularize as R
from thalweg.train.build import build_run
from thalweg.train.components import evaluate
from thalweg.train.config import RunConfig
from thalweg.train.distributed import DistContext
from thalweg.train.progress import ProgressView
from thalweg.train.rundir.checkpoint import BackgroundWriter, CheckpointManager, snapshot
from thalweg.train.rundir.resume import config_hash
from thalweg.train.rundir.runs import MetricsLog, RunPaths
from thalweg.train.rundir.state import TrainState, capture_rng, restore_rng

__all__ = ["Run"]


class Run:
    """Everything one run holds. `Run(cfg, ctx, view)` opens nothing; `paths` is set once the
    run directory is claimed, then `_build()` assembles the rest from the config."""

    paths: RunPaths

    def __init__(self, cfg: RunConfig, ctx: DistContext, view: ProgressView) -> None:
        self.cfg, self.ctx, self.view = cfg, ctx, view
        self.main = ctx.is_main
        self.warnings: list[str] = []
        self.lock: Any = None
        self.claim_note: str | None = None
        self.writer = BackgroundWriter()  # checkpoints are fsynced while training goes on
        self.log = MetricsLog(RunPaths(cfg.run_dir()).metrics, enabled=False)
        self.mon_log = self.log
        self.monitor: Any = None
        self.board: Any = None  # TensorBoard / MLflow (rank 0, while training)

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
        self.model_broken = False  # the last validation found inf/NaN weights, or a loss gone inf/NaN
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

    def evaluate(self, x: torch.Tensor, y: torch.Tensor, model: nn.Module | None = None) -> dict[str, float]:
        return evaluate(model or self.model, x, y, self.eval_loss.per_sample, self.classify,
                        self.cfg.train.eval_batch_size)

    def better(self, value: float, than: float | None) -> bool:
        sign = 1.0 if self.best_metric == "val_accuracy" else -1.0
        return than is None or sign * (value - than) > 0
