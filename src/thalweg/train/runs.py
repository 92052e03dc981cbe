"""The run directory `runs/<name>/`: its layout, the metrics log, and loading a finished run.

Layout: `config.toml` (resolved), `metrics.jsonl`, `checkpoints/step_*.pt`, `best.pt`,
`figures/*.png`, `report.html`, `summary.json`, and `monitors.jsonl` when
`[diagnostics] monitors = true`.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from thalweg.train.checkpoint import CheckpointManager, load_checkpoint
from thalweg.train.config import RunConfig, parse_config

__all__ = [
    "LoadedRun", "MetricsLog", "RunPaths", "RunResult", "load_run", "read_metrics", "write_atomic",
]


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` all at once (temp file, fsync, rename): never half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"


class MetricsLog:
    """Append-only `metrics.jsonl`; `truncate(n)` drops lines written after a checkpoint."""

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path, self.enabled, self.lines = path, enabled, 0
        self._fh: Any = None

    def open(self, keep_lines: int | None = None) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if keep_lines is None:
            self.path.write_text("")
            self.lines = 0
        else:
            kept = self.path.read_text().splitlines(keepends=True)[:keep_lines] if self.path.exists() else []
            kept = [ln for ln in kept if ln.endswith("\n")]  # a line cut by a crash is dropped
            write_atomic(self.path, "".join(kept))
            self.lines = len(kept)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def write(self, record: dict[str, Any]) -> None:
        if self._fh is None:
            return
        self._fh.write(json.dumps(record, allow_nan=True) + "\n")
        self._fh.flush()
        self.lines += 1

    def sync(self) -> None:
        if self._fh is not None:
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
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
    checkpoint: Path


def _find_run_dir(path: Path) -> Path:
    for cand in (path, *path.parents):
        if (cand / "config.toml").is_file():
            return cand
    raise FileNotFoundError(f"{path} is not inside a thalweg run directory (no config.toml found)")


def load_run(path: str | Path, map_location: str | torch.device = "cpu") -> LoadedRun:
    """Rebuild a run from its directory (best weights) or from a checkpoint file inside one."""
    from thalweg.train.components import build_model, loss_function, prepare_data

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such run directory or checkpoint: {p}")
    run_dir = _find_run_dir(p if p.is_dir() else p.parent)
    paths = RunPaths(run_dir)
    cfg = parse_config(tomllib.loads(paths.config.read_text()), check_optimizer=False)
    if p.is_file():
        ckpt, state = p, load_checkpoint(p, map_location)
    elif paths.best.is_file():
        ckpt, state = paths.best, load_checkpoint(paths.best, map_location)
    else:
        latest = CheckpointManager(paths.checkpoints).load_latest(map_location)
        if latest is None:
            raise FileNotFoundError(f"run {run_dir} has neither best.pt nor a readable checkpoint")
        ckpt, state = latest
    splits = prepare_data(cfg)
    model = build_model(cfg, splits)
    model.load_state_dict(state["model"])
    model.eval()
    train_loss, _ = loss_function(cfg, splits)

    def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return train_loss(out, y).mean()

    return LoadedRun(model=model, splits=splits, loss_fn=loss_fn, config=cfg, run_dir=run_dir,
                     checkpoint=ckpt)
