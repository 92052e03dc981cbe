"""`thalweg meta [CONFIG.toml]`: meta-train each method of a config on one task distribution,
keep each method's best weights on meta-validation tasks, and write the adaptation table.

The run directory is the trainer's, with its rules: a lock while a process owns it (a second
one fails at once naming the holder), a fresh `<name>-2` rather than a replaced run unless
`--overwrite`, `config.toml`, `metrics.jsonl` (strict JSON), `checkpoints/` (atomic,
checksummed), `best.pt` (every method's best weights so far) and `best.prev.pt` (the
generation before), `figures/`, `report.html`, `summary.json`. Methods train one after another
from the same initialization on the same episodes (each a pure function of (seed, iteration));
a checkpoint holds the phase, the learner, the outer optimizer, every RNG and the metrics
position, so a run killed at any moment resumes bitwise identically.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.markup import escape

from thalweg import meta as M
from thalweg.meta import budget
from thalweg.meta.config import (
    MetaRunConfig,
    build_tasks,
    dump_meta_config,
    load_meta_config,
    make_learner,
    parse_meta_config,
)
from thalweg.meta.report import finish
from thalweg.train.config import ConfigError
from thalweg.train.progress import ProgressView
from thalweg.train.rundir.checkpoint import (
    BackgroundWriter,
    CheckpointError,
    CheckpointManager,
    kill_point,
    load_checkpoint,
    save_checkpoint,
    save_generation,
    snapshot,
)
from thalweg.train.rundir.lock import RunLock, claim_run_dir, clear_run, holds_run
from thalweg.train.rundir.resume import ConfigChangedError, config_diff
from thalweg.train.rundir.runs import (
    MetricsLog,
    RunPaths,
    config_to_resume,
    write_atomic,
)
from thalweg.train.rundir.state import capture_rng, restore_rng, seed_everything

__all__ = ["MetaResult", "MetaRun", "run_meta"]

_STREAM_TRAIN, _STREAM_VAL = 0, 1  # episode streams; report.STREAM_TEST is 2


@dataclass
class MetaResult:
    """Where the run is, and its summary (the adaptation table)."""

    run_dir: Path
    summary: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


class MetaRun:
    """One `thalweg meta` run: its phases (one per method), checkpoints and report."""

    def __init__(self, cfg: MetaRunConfig, *, resume: bool = False, quiet: bool = False,
                 overwrite: bool = False) -> None:
        m = cfg.meta
        self.view = ProgressView(enabled=not quiet)
        self.warnings: list[str] = []
        self.writer = BackgroundWriter()
        self.lock: RunLock | None = None
        self.log = MetricsLog(RunPaths(cfg.run_dir()).metrics)  # opened once the run is claimed
        dev = m.device if m.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        if dev == "cuda" and not torch.cuda.is_available():
            raise ConfigError("meta", "device", "cuda", "no CUDA device is available")
        self.device = torch.device(dev)
        self.tasks = build_tasks(cfg)
        learners = [make_learner(cfg, method, self.tasks) for method in m.methods]  # every bad setting first
        costs = budget.estimate(cfg, self.tasks, learners[0].model, self.device)
        if (refused := budget.check(costs, self.device)) is not None:
            section, name, why = refused
            owner = cfg.overrides[section.split(".", 1)[1]] if section.startswith("overrides.") else getattr(cfg, section)
            raise ConfigError(section, name, getattr(owner, name), why)
        self.view.print(f"estimate: {budget.describe(costs)}")
        self.regression = self.tasks["train"].task == "regression"
        self.measure = None if self.regression else M.accuracy
        self.val = self.tasks["val"].sample(m.val_tasks, M.episode_seed(m.seed, _STREAM_VAL, 0)).to(dev)
        self.s: dict[str, Any] = {"phase": 0, "iteration": 0, "step": 0, "best": {}, "window": [0.0, 0],
                                  "skipped": 0, "streak": 0, "seconds": {}}
        self.best_weights: dict[str, Any] = {}
        self.final_weights: dict[str, Any] = {}
        self.best_ok = False  # best.pt on disk is known to be this run's (so it may become best.prev.pt)
        self.learner: M.MetaLearner | None = None
        self.opt: Any = None
        try:  # the trainer's rules: one process per run, a fresh name rather than a replaced run
            self.lock, note = claim_run_dir(cfg.run_dir(), overwrite=overwrite, resume=resume)
            if (took := self.lock.takeover_note()) is not None:
                self.view.notice(took)
            self.cfg = cfg.model_copy(update={"name": self.lock.root.name})
            self.paths = RunPaths(self.lock.root)
            self.ckpts = CheckpointManager(self.paths.checkpoints, keep=m.keep_checkpoints)
            self.log = MetricsLog(self.paths.metrics)
            if note:
                self.warn(note)
            if resume:
                self._resume()
            else:
                self._fresh(overwrite)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Finish the disk writes, close the log, release the run directory."""
        self.writer.close()
        self.log.close()
        if self.lock is not None:
            self.lock.release()

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)
        self.view.notice(f"[yellow]warning:[/] {escape(msg)}")  # "[train] …" is text, not markup

    # ----- run directory -----------------------------------------------------------------
    def _fresh(self, overwrite: bool) -> None:
        root = self.paths.root
        if overwrite and holds_run(root):
            self.view.notice(f"replacing the run in {root} (--overwrite)")
            clear_run(root)
        write_atomic(self.paths.config, dump_meta_config(self.cfg))
        self.log.open()

    def _resume(self) -> None:
        """Continue from the newest checkpoint that verifies and was written with this config;
        damaged ones are set aside with a warning, as the trainer does."""
        self.ckpts.remove_stale_temps()
        for tmp in self.paths.root.glob(".best*.pt.tmp-*"):  # a best.pt write that was killed
            tmp.unlink(missing_ok=True)
        latest = self.ckpts.load_latest()
        for path, why in self.ckpts.skipped:
            where = self.ckpts.set_aside(path).relative_to(self.paths.root)
            self.warn(f"skipped damaged checkpoint {path.name}: {why} (moved to {where})")
        if latest is None:
            self.warn(f"no usable checkpoint in {self.paths.checkpoints}; starting from scratch")
            old = self.paths.metrics
            if old.is_file() and old.stat().st_size:
                old.replace(old.with_name("metrics.before-restart.jsonl"))
            self.log.open()
            return
        path, st = latest
        changes = config_diff(st["config"], self.cfg.model_dump(mode="json"))
        if changes:
            raise ConfigChangedError(str(self.paths.config), path.name, changes, hint=(
                "Put the old values back to continue, or start a new run (another --name)"))
        self.s, self.best_weights = dict(st["meta"]), dict(st["best_weights"])
        self.final_weights = dict(st["final_weights"])
        if st["learner"] is not None:
            self.begin(self.method(), quiet=True)
            assert self.learner is not None
            self.learner.load_state_dict(st["learner"])
            self.opt.load_state_dict(st["optimizer"])
        restore_rng(st["rng"])
        self.log.open(keep_lines=st["metrics_lines"])
        self.view.notice(f"resumed {self.paths.root} from {path.name} (step {self.s['step']})")
        self._check_best()

    def _best_state(self) -> dict[str, Any]:
        return {"methods": self.best_weights, "best": self.s["best"], "config": self.cfg.model_dump(mode="json")}

    def _check_best(self) -> None:
        """best.pt after a resume: one that verifies and holds the checkpoint's best may become
        best.prev.pt at the next write; a damaged or missing one is rewritten from the
        checkpoint (a newer one, written after it, is rewritten by the same evaluation)."""
        try:
            on_disk = load_checkpoint(self.paths.best) if self.paths.best.is_file() else None
        except CheckpointError as e:
            self.warn(f"best.pt is damaged: {e}")
            on_disk = None
        if on_disk is None and self.best_weights:
            save_checkpoint(snapshot(self._best_state()), self.paths.best)
            self.warn(f"rebuilt best.pt from the checkpoint (step {self.s['step']})")
            on_disk = {"best": self.s["best"]}
        self.best_ok = on_disk is not None and on_disk.get("best") == self.s["best"]

    def _state(self) -> dict[str, Any]:
        lr = self.learner
        return {"meta": self.s, "learner": lr.state_dict() if lr is not None else None,
                "optimizer": self.opt.state_dict() if lr is not None else None,
                "best_weights": self.best_weights, "final_weights": self.final_weights, "rng": capture_rng(),
                "metrics_lines": self.log.lines, "config": self.cfg.model_dump(mode="json")}

    def _save(self) -> None:
        self.log.sync()
        self.writer.submit(self.ckpts.save, snapshot(self._state()), self.s["step"])

    # ----- phases ------------------------------------------------------------------------
    def method(self) -> str:
        return self.cfg.meta.methods[self.s["phase"]]

    def iterations(self, method: str) -> int:
        return 0 if method == "scratch" else int(self.cfg.setting(method, "iterations"))

    def begin(self, method: str, quiet: bool = False) -> None:
        """Fresh learner and outer optimizer for `method`, from the run's one initialization."""
        from thalweg.optim import registry

        seed_everything(self.cfg.meta.seed)
        self.learner = make_learner(self.cfg, method, self.tasks)
        self.learner.model.to(self.device)
        if self.learner.inner_lrs is not None:
            self.learner.inner_lrs.to(self.device)
        hp = {**self.cfg.outer.hyperparameters(), "lr": self.cfg.setting(method, "outer_lr")}
        hp = {k: v for k, v in hp.items() if v is not None}
        try:
            self.opt = registry.create(self.cfg.outer.name, self.learner.parameters(), **hp)
        except (ValueError, TypeError) as e:
            raise ConfigError("outer", "name", self.cfg.outer.name, str(e)) from None
        if not quiet:
            n = len(self.cfg.meta.methods)
            self.view.print(f"meta-training {method} ({self.s['phase'] + 1}/{n}): "
                            f"{self.iterations(method)} meta-updates of {self.cfg.meta.meta_batch} tasks")

    def _episode(self, split: str, method: str, n: int, seed: int) -> M.Episode:
        ep = self.tasks[split].sample(n, seed, shuffle_labels=method != "pretrained" or split != "train")
        return (M.Sinusoid.with_descriptors(ep) if method == "oracle" else ep).to(self.device)

    def _val_metric(self, method: str) -> float:
        assert self.learner is not None
        ep = M.Sinusoid.with_descriptors(self.val) if method == "oracle" else self.val
        steps = 0 if method == "oracle" else self.cfg.meta.val_steps
        return float(self.learner.evaluate(ep, steps, self.measure)[:, -1].mean())

    def _finite(self, loss: torch.Tensor) -> bool:
        grads = [p.grad for p in self.learner.parameters() if p.grad is not None]  # type: ignore[union-attr]
        return bool(torch.isfinite(loss)) and bool(torch.isfinite(torch.nn.utils.get_total_norm(grads)))

    def _iteration(self, method: str, n: int) -> None:
        m, s = self.cfg.meta, self.s
        assert self.learner is not None
        t0 = time.perf_counter()
        i = s["iteration"]
        ep = self._episode("train", method, m.meta_batch, M.episode_seed(m.seed, _STREAM_TRAIN, i))
        self.opt.zero_grad()
        loss = self.learner.meta_backward(ep)
        if self._finite(loss):
            self.opt.step()
            s["streak"] = 0
            s["window"] = [s["window"][0] + float(loss), s["window"][1] + 1]
        else:
            s["skipped"] += 1
            s["streak"] += 1
            self.log.write({"event": "nonfinite", "method": method, "iteration": i + 1, "step": s["step"] + 1})
            if s["streak"] >= 10:
                raise FloatingPointError(f"{method}: the meta-loss or meta-gradient was non-finite 10 "
                                         f"times in a row (iteration {i + 1}); lower [outer] lr or [inner] lr")
        s["iteration"], s["step"] = i + 1, s["step"] + 1
        it = i + 1
        rec: dict[str, Any] | None = None
        if it % m.log_every == 0 or it % m.eval_every == 0 or it == n:
            total, count = s["window"]
            rec = {"method": method, "iteration": it, "step": s["step"],
                   "meta_loss": total / count if count else None}
            s["window"] = [0.0, 0]
        if it % m.eval_every == 0 or it == n:
            assert rec is not None
            value = self._val_metric(method)
            key = "val_mse" if self.regression else "val_accuracy"
            rec[key] = value
            best = s["best"].get(method)
            better = best is None or (value < best["value"] if self.regression else value > best["value"])
            if math.isfinite(value) and better:
                s["best"] = {**s["best"], method: {"value": value, "iteration": it, "metric": key}}
                self.best_weights = {**self.best_weights, method: snapshot(self.learner.state_dict())}
                self.writer.submit(save_generation, snapshot(self._best_state()), self.paths.best,
                                   self.paths.best_prev, rotate=self.best_ok)
                self.best_ok = True
        s["seconds"] = {**s["seconds"], method: s["seconds"].get(method, 0.0) + time.perf_counter() - t0}
        if rec is not None:
            rec["seconds"] = round(sum(s["seconds"].values()), 3)
            self.log.write(rec)
            lr = self.opt.param_groups[0]["lr"]
            self.view.update({"step": s["step"], "lr": float(lr) if not callable(lr) else lr(i),
                              "train_loss": rec["meta_loss"] if rec["meta_loss"] is not None else float("nan"),
                              **({"val_accuracy": rec["val_accuracy"]} if "val_accuracy" in rec else {})})
        else:
            self.view.advance()
        if it == n:  # the phase is over: its checkpoint keeps the final weights, starts the next
            self.final_weights = {**self.final_weights, method: snapshot(self.learner.state_dict())}
            s["phase"], s["iteration"] = s["phase"] + 1, 0
            self.learner = self.opt = None
            self._save()
        elif it % m.checkpoint_every == 0:
            self._save()
        kill_point(s["step"], self.writer)

    def train(self) -> None:
        methods = self.cfg.meta.methods
        total = sum(self.iterations(x) for x in methods)
        self.view.start(total, self.s["step"], len(methods))
        try:
            if self.s["step"] == 0 and not self.ckpts.paths():
                self._save()
            while self.s["phase"] < len(methods):
                method = self.method()
                if self.learner is None:
                    self.begin(method)
                n = self.iterations(method)
                if n == 0:  # scratch: the initialization is its best and final weights
                    assert self.learner is not None
                    w = snapshot(self.learner.state_dict())
                    self.best_weights = {**self.best_weights, method: w}
                    self.final_weights = {**self.final_weights, method: w}
                    self.s["phase"], self.learner, self.opt = self.s["phase"] + 1, None, None
                    self._save()
                while self.learner is not None:
                    self._iteration(method, n)
            self.writer.wait()
        finally:
            self.view.stop()


def run_meta(config: MetaRunConfig | dict[str, Any] | str | Path | None = None, *,
             resume: str | Path | None = None, quiet: bool = False, overwrite: bool = False) -> MetaResult:
    """Run `thalweg meta` from a config (object, dict, TOML path or None for the default), or
    continue the run directory `resume` from its newest good checkpoint."""
    if resume is not None:
        cfg = config_to_resume(resume, parse_meta_config)
    elif isinstance(config, MetaRunConfig):
        cfg = config
    else:
        cfg = parse_meta_config(config) if isinstance(config, dict) else load_meta_config(config)
    threads = torch.get_num_threads()
    if cfg.meta.num_threads:
        torch.set_num_threads(cfg.meta.num_threads)
    run = None
    try:
        run = MetaRun(cfg, resume=resume is not None, quiet=quiet, overwrite=overwrite)
        run.train()
        summary = finish(run)
        return MetaResult(run.paths.root, summary, run.warnings)
    finally:
        if run is not None:
            run.close()
        torch.set_num_threads(threads)
