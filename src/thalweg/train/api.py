"""`fit(config) -> RunResult`: the Python entry point, the same behaviour as `thalweg train`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from thalweg.optim.engine.modes import set_mode
from thalweg.train import distributed
from thalweg.train.build import as_config
from thalweg.train.checkpoint import CheckpointError, load_checkpoint
from thalweg.train.components import build_model
from thalweg.train.config import RunConfig, parse_config
from thalweg.train.loop import Trainer
from thalweg.train.resume import model_mismatch
from thalweg.train.runs import RunResult, config_to_resume, dumps, write_atomic

__all__ = ["finish", "fit"]


def _best_model(tr: Trainer) -> nn.Module | None:
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


def finish(tr: Trainer) -> RunResult:
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
