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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from pydantic import BaseModel
from torch import nn

from thalweg.train.config import RunConfig, read_config_file
from thalweg.train.rundir.checkpoint import (
    disk_error,
)

__all__ = [
    "MetricsLog", "RunPaths", "RunResult", "config_to_resume", "dumps", "jsonable", "read_metrics",
    "write_atomic",
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
