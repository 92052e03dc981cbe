"""The run directory `runs/<name>/`: its layout, its lock, the metrics log, and loading a run.

Layout: `config.toml` (resolved), `metrics.jsonl` (strict JSON), `checkpoints/step_*.pt`,
`best.pt` and `best.prev.pt` (the best weights and the generation before), `figures/*.png`,
`report.html`, `summary.json`, `monitors.jsonl` when `[diagnostics] monitors = true`, and
`.lock` while a process owns the run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from pydantic import BaseModel
from torch import nn

from thalweg.train.config import RunConfig, parse_config, read_config_file
from thalweg.train.rundir.checkpoint import (
    CheckpointError,
    CheckpointManager,
    disk_error,
    load_checkpoint,
)

__all__ = [
    "LoadedRun", "MetricsLog", "RunPaths", "RunResult", "config_to_resume", "dumps", "jsonable",
    "load_run", "read_metrics", "write_atomic",
]

C = TypeVar("C", bound=BaseModel)


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` all at once (temp file, fsync, rename): never half a file.
    A disk fault raises OSError naming `path`; the old file stays."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise disk_error(e, path, path.name) from None


def jsonable(obj: Any) -> Any:
    """`obj` with every NaN/inf float (and 0-d tensor) replaced by None, for strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return jsonable(obj.item())
    return obj


def dumps(obj: Any, **kw: Any) -> str:
    """Strict JSON (RFC 8259): non-finite numbers are written as null."""
    return json.dumps(jsonable(obj), allow_nan=False, **kw)


@dataclass(frozen=True)
class RunPaths:
    """Where each artefact of a run lives."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def monitors(self) -> Path:
        return self.root / "monitors.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def best(self) -> Path:
        return self.root / "best.pt"

    @property
    def best_prev(self) -> Path:
        return self.root / "best.prev.pt"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"


def config_to_resume(run_dir: str | Path, parse: Callable[[dict[str, Any]], C]) -> C:
    """The config.toml of the run in `run_dir`, validated by `parse` and placed where the run is
    now (a moved or renamed run resumes in place): how `thalweg train` and `thalweg meta` resume."""
    root = Path(run_dir)
    path = RunPaths(root).config
    if not path.is_file():
        raise FileNotFoundError(f"cannot resume {root}: no config.toml there")
    return parse(read_config_file(path)).model_copy(update={"out_dir": str(root.parent), "name": root.name})


class MetricsLog:
    """Append-only `metrics.jsonl` in strict JSON; `open(keep_lines=n)` drops the lines written
    after a checkpoint. A disk fault raises OSError naming the file."""

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path, self.enabled, self.lines = path, enabled, 0
        self._fh: Any = None

    def open(self, keep_lines: int | None = None) -> None:
        if not self.enabled:
            return
        kept: list[str] = []
        if keep_lines is not None and self.path.exists():
            kept = self.path.read_text().splitlines(keepends=True)[:keep_lines]
            kept = [ln for ln in kept if ln.endswith("\n")]  # a line cut by a crash is dropped
        write_atomic(self.path, "".join(kept))
        self.lines = len(kept)
        try:
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        except OSError as e:
            raise disk_error(e, self.path, self.path.name) from None

    def write(self, record: dict[str, Any]) -> None:
        if self._fh is None:
            return
        try:
            self._fh.write(dumps(record) + "\n")
            self._fh.flush()
        except OSError as e:
            raise disk_error(e, self.path, self.path.name) from None
        self.lines += 1

    def sync(self) -> None:
        if self._fh is not None:
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):  # a failed flush was reported by write()
                self._fh.close()
            self._fh = None


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a `metrics.jsonl` (a run directory or the file itself)."""
    p = Path(path)
    if p.is_dir():
        p = RunPaths(p).metrics
    return [json.loads(ln) for ln in p.read_text().splitlines() if ln.strip()]


@dataclass
class RunResult:
    """What :func:`thalweg.train.fit` returns: where the run is and how it ended."""

    run_dir: Path
    config: RunConfig
    model: nn.Module  # final weights (best weights are in best.pt)
    steps: int
    epochs: float
    stopped: str  # "completed" | "early_stopping"
    best_metric: str
    best_value: float
    best_step: int
    test_loss: float | None
    test_accuracy: float | None
    seconds: float
    skipped_steps: int = 0
    rollbacks: int = 0
    warnings: list[str] = field(default_factory=list)


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
    from thalweg.train.build import build_run
    from thalweg.train.rundir.resume import model_mismatch
    from thalweg.train.rundir.state import capture_rng, restore_rng

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
