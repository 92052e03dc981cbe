"""`fit(config) -> RunResult`: the Python entry point, the same behaviour as `thalweg train`;
and its inverse, `load_run(path) -> LoadedRun`: a run directory rebuilt for analysis."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from thalweg.optim.engine.modes import set_mode
from thalweg.train import distributed
from thalweg.train.build import as_config, build_run
from thalweg.train.components import build_model
from thalweg.train.config import RunConfig, parse_config, read_config_file
from thalweg.train.loop import Trainer
from thalweg.train.run import Run
from thalweg.train.rundir.checkpoint import CheckpointError, CheckpointManager, load_checkpoint
from thalweg.train.rundir.resume import model_mismatch
from thalweg.train.rundir.runs import RunPaths, RunResult, config_to_resume, dumps, write_atomic
from thalweg.train.rundir.state import capture_rng, restore_rng

__all__ = ["LoadedRun", "finish", "fit", "load_run"]


def _best_model(tr: Run) -> nn.Module | None:
    """The model in best.pt (best.prev.pt if best.pt fails to verify, with a warning)."""
    for path in (tr.paths.best, tr.paths.best_prev):
        if not path.is_file():
            continue
        try:
            best = load_checkpoint(path, tr.ctx.device)
        except CheckpointError as e:
            tr.warn(f"{e}; trying the previous generation")
            continue
        model = build_model(tr.cfg, tr.splits).to(tr.ctx.device)
        if model_mismatch(best.get("model"), model) is None:
            model.load_state_dict(best["model"])
            if path != tr.paths.best:
                tr.warn(f"test metrics are of {path.name} (step {best.get('step')})")
            return model
    return None


def finish(tr: Run) -> RunResult:
    """Test metrics with the best weights, summary, figures and report (rank 0 writes)."""
    test: dict[str, float] = {}
    s = tr.state
    set_mode(tr.opt, training=False)  # the test metrics and RunResult.model: the weights to use (schedule-free: x)
    model = _best_model(tr) if s.best_step >= 0 else None
    if model is None:
        tr.warn("no best model (best.pt is missing or no validation result was finite): the "
                "test metrics are of the final weights")
        model = tr.model
    test = tr.evaluate(tr.splits.x_test, tr.splits.y_test, model)
    summary = {
        "event": "final", "step": s.step, "stopped": s.stopped,
        "best_metric": tr.best_metric, "best_value": s.best_value, "best_step": s.best_step,
        "test_loss": test.get("loss"), "test_accuracy": test.get("accuracy"),
        "skipped_steps": s.skipped, "rollbacks": s.rollbacks,
        "steps_per_epoch": tr.steps_per_epoch, "total_steps": tr.total_steps,
        "seconds": round(s.elapsed + time.perf_counter() - tr._start, 3),
    }
    if tr.main:
        tr.log.write(summary)
        tr.log.close()
        write_atomic(tr.paths.summary, dumps(summary, indent=2) + "\n")
        d = tr.cfg.diagnostics
        if d.figures or d.report:
            from thalweg.train.report import write_report

            write_report(tr.paths, tr.cfg, summary, figures=d.figures, html=d.report, splits=tr.splits)
        if tr.board is not None:  # the test numbers, the figures and the report
            tr.board.scalars({"test_loss": summary["test_loss"], "test_accuracy": summary["test_accuracy"]}, s.step)
            tr.board.figures(sorted(tr.paths.figures.glob("*.png")), s.step)
            tr.board.artifact(tr.paths.report)
    tr.ctx.barrier()
    return RunResult(
        run_dir=tr.paths.root, config=tr.cfg, model=tr.model, steps=s.step,
        epochs=s.step / tr.steps_per_epoch, stopped=s.stopped,
        best_metric=tr.best_metric, best_value=s.best_value, best_step=s.best_step,
        test_loss=test.get("loss"), test_accuracy=test.get("accuracy"),
        seconds=summary["seconds"], skipped_steps=s.skipped, rollbacks=s.rollbacks,
        warnings=tr.warnings,
    )


def fit(config: RunConfig | dict[str, Any] | str | Path | None = None, *,
        resume: str | Path | None = None, quiet: bool = False, overwrite: bool = False,
        allow_config_change: bool = False) -> RunResult:
    """Train from a config (object, dict, TOML path, or None for the embedded default), or
    continue the run directory `resume` from its newest good checkpoint.

    A new run never replaces a run directory that holds a run: it takes `<name>-2`, … and says
    so, unless `overwrite`. A resumed run whose config.toml no longer matches its checkpoint
    is refused with the fields listed, unless `allow_config_change`.
    """
    if resume is not None:
        cfg = config_to_resume(resume, parse_config)
    else:
        cfg = as_config(config).model_copy(deep=True)
        if isinstance(cfg.data.options.get("path"), str):  # config.toml must work from anywhere
            cfg.data.options["path"] = str(Path(cfg.data.options["path"]).resolve())
    threads = torch.get_num_threads()
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    trainer = None
    try:
        trainer = Trainer(cfg, resume=resume is not None, quiet=quiet, overwrite=overwrite,
                          allow_config_change=allow_config_change)
        if trainer.state.stopped is None or trainer.state.last_eval_step != trainer.state.step:
            trainer.train()
        return finish(trainer)
    finally:
        if trainer is not None:
            trainer.close()
            distributed.teardown(trainer.ctx)
        torch.set_num_threads(threads)


@dataclass
class LoadedRun:
    """A finished (or interrupted) run, rebuilt for analysis: eval-ready model + its data."""

    model: nn.Module
    splits: Any
    loss_fn: Any  # (output, target) -> mean training loss (label smoothing included)
    config: RunConfig
    run_dir: Path
    checkpoint: Path  # the file the weights came from
    eval_loss_fn: Any = None  # (output, target) -> mean plain loss for the task
    warnings: list[str] = field(default_factory=list)  # damaged files skipped on the way


def _find_run_dir(path: Path) -> Path:
    for cand in (path, *path.parents):
        if (cand / "config.toml").is_file():
            return cand
    raise FileNotFoundError(f"{path} is not inside a thalweg run directory (no config.toml found)")


def _evaluation_weights(cfg: Any, model: torch.nn.Module, state: dict[str, Any]) -> None:
    """A training checkpoint of an optimizer with modes (schedule-free) holds the weights
    gradients were taken at: rebuild the optimizer from it and switch to eval, so the model
    holds the weights to use (best.pt holds them already)."""
    from thalweg.optim import has_modes, registry, set_mode
    from thalweg.train.components import build_optimizer

    if "optimizer" not in state:
        return
    try:
        if not has_modes(registry.get(cfg.optimizer.name).factory):
            return
    except ValueError:
        return
    opt, _ = build_optimizer(cfg, model)
    opt.load_state_dict(state["optimizer"])
    set_mode(opt, training=False)
    for p in model.parameters():  # the optimizer is dropped: no gradient buffers of its own stay attached
        p.grad = None


def load_run(path: str | Path, map_location: str | torch.device = "cpu") -> LoadedRun:
    """Rebuild a run from its directory (best weights) or from a checkpoint file inside one.

    From a directory: best.pt, else (with a warning naming what was wrong) the newest good
    checkpoint, else best.prev.pt. A damaged or foreign file is never loaded; if nothing
    loads, one :class:`CheckpointError` lists every file and why.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such run directory or checkpoint: {p}")
    run_dir = _find_run_dir(p if p.is_dir() else p.parent)
    paths = RunPaths(run_dir)
    cfg = parse_config(read_config_file(paths.config), check_optimizer=False)
    rng = capture_rng()  # loading a run leaves the caller's random streams as they were
    try:
        parts = build_run(cfg, device=map_location, optimizer=False, check_budget=False)
    finally:
        restore_rng(rng)
    model = parts.model
    if p.is_file():
        order = [p]
    else:
        order = [paths.best, *reversed(CheckpointManager(paths.checkpoints).paths()), paths.best_prev]
    problems: list[str] = []
    for cand in order:
        if not cand.is_file():
            if cand == paths.best:
                problems.append("best.pt is missing")
            continue
        try:
            state = load_checkpoint(cand, map_location)
            why = model_mismatch(state.get("model"), model)
        except CheckpointError as e:
            why = str(e)
        if why is None:
            model.load_state_dict(state["model"])
            _evaluation_weights(cfg, model, state)
            break
        problems.append(f"{cand.name}: {why}" if cand.name not in why else why)
    else:
        raise CheckpointError(f"run {run_dir} has no loadable model: " + "; ".join(problems or
                              ["no best.pt and no checkpoint"]))
    notes = [f"{run_dir}: {why}; using {cand.name} instead" for why in problems]
    for note in notes:
        warnings.warn(note, stacklevel=2)
    model.eval()
    return LoadedRun(model=model, splits=parts.splits, loss_fn=parts.loss_fn, config=cfg,
                     run_dir=run_dir, checkpoint=cand, eval_loss_fn=parts.eval_loss_fn,
                     warnings=notes)
