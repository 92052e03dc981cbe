"""`fit(config) -> RunResult`: the Python entry point, the same behaviour as `thalweg train`."""

from __future__ import annotations

import json
import time
import tomllib
from pathlib import Path
from typing import Any

import torch

from thalweg.train import distributed
from thalweg.train.checkpoint import load_checkpoint
from thalweg.train.components import build_model
from thalweg.train.config import RunConfig, load_config, parse_config
from thalweg.train.loop import Trainer
from thalweg.train.runs import RunPaths, RunResult, write_atomic

__all__ = ["finish", "fit"]


def finish(tr: Trainer) -> RunResult:
    """Test metrics with the best weights, summary, figures and report (rank 0 writes)."""
    test: dict[str, float] = {}
    if tr.paths.best.is_file():
        best = load_checkpoint(tr.paths.best, tr.ctx.device)
        model = build_model(tr.cfg, tr.splits).to(tr.ctx.device)
        model.load_state_dict(best["model"])
        test = tr.evaluate(tr.splits.x_test, tr.splits.y_test, model)
    s = tr.s
    summary = {
        "event": "final", "step": s["step"], "stopped": s["stopped"],
        "best_metric": tr.best_metric, "best_value": s["best_value"], "best_step": s["best_step"],
        "test_loss": test.get("loss"), "test_accuracy": test.get("accuracy"),
        "skipped_steps": s["skipped"], "rollbacks": s["rollbacks"],
        "steps_per_epoch": tr.steps_per_epoch, "total_steps": tr.total_steps,
        "seconds": round(s["elapsed"] + time.perf_counter() - tr._start, 3),
    }
    if tr.main:
        tr.log.write(summary)
        tr.log.close()
        write_atomic(tr.paths.summary, json.dumps(summary, indent=2) + "\n")
        d = tr.cfg.diagnostics
        if d.figures or d.report:
            from thalweg.train.report import write_report

            write_report(tr.paths, tr.cfg, summary, figures=d.figures, html=d.report, splits=tr.splits)
    tr.ctx.barrier()
    return RunResult(
        run_dir=tr.paths.root, config=tr.cfg, model=tr.model, steps=s["step"],
        epochs=s["step"] / tr.steps_per_epoch, stopped=s["stopped"],
        best_metric=tr.best_metric, best_value=s["best_value"], best_step=s["best_step"],
        test_loss=test.get("loss"), test_accuracy=test.get("accuracy"),
        seconds=summary["seconds"], skipped_steps=s["skipped"], rollbacks=s["rollbacks"],
        warnings=tr.warnings,
    )


def _as_config(config: RunConfig | dict[str, Any] | str | Path | None) -> RunConfig:
    if isinstance(config, RunConfig):
        return config
    if isinstance(config, dict):
        return parse_config(config)
    return load_config(config)


def fit(config: RunConfig | dict[str, Any] | str | Path | None = None, *,
        resume: str | Path | None = None, quiet: bool = False) -> RunResult:
    """Train from a config (object, dict, TOML path, or None for the embedded default), or
    continue the run directory `resume` from its newest good checkpoint."""
    if resume is not None:
        run_dir = Path(resume)
        cfg_path = RunPaths(run_dir).config
        if not cfg_path.is_file():
            raise FileNotFoundError(f"cannot resume {run_dir}: no config.toml there")
        cfg = parse_config(tomllib.loads(cfg_path.read_text()))
        cfg = cfg.model_copy(update={"out_dir": str(run_dir.parent), "name": run_dir.name})
    else:
        cfg = _as_config(config).model_copy(deep=True)
        if isinstance(cfg.data.options.get("path"), str):  # config.toml must work from anywhere
            cfg.data.options["path"] = str(Path(cfg.data.options["path"]).resolve())
    threads = torch.get_num_threads()
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    trainer = None
    try:
        trainer = Trainer(cfg, resume=resume is not None, quiet=quiet)
        if trainer.s["stopped"] is None or trainer.s["last_eval_step"] != trainer.s["step"]:
            trainer.train()
        return finish(trainer)
    finally:
        if trainer is not None:
            trainer.writer.close()
            trainer.log.close()
            trainer.mon_log.close()
            distributed.teardown(trainer.ctx)
        torch.set_num_threads(threads)
