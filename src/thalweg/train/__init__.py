"""The trainer: a config-driven run that keeps the best weights and survives a power cut.

`fit(config) -> RunResult` trains; `build_run(config) -> RunParts` assembles a run (model,
data, losses, optimizer, schedule) for anyone who needs one; `load_run(path) -> LoadedRun`
rebuilds a trained run for analysis.
"""

from thalweg.losses import TaskLoss  # the loss for a task lives in the library (thalweg.losses)
from thalweg.train.api import LoadedRun, fit, load_run
from thalweg.train.build import RunParts, build_run
from thalweg.train.config import DEFAULT_TOML, ConfigError, RunConfig, load_config, parse_config
from thalweg.train.guard import NonFiniteError
from thalweg.train.rundir.checkpoint import (
    CheckpointError,
    CheckpointManager,
    load_checkpoint,
    save_checkpoint,
)
from thalweg.train.rundir.lock import RunLock, RunLockedError
from thalweg.train.rundir.resume import ConfigChangedError
from thalweg.train.rundir.runs import RunResult, read_metrics

__all__ = [
    "DEFAULT_TOML",
    "CheckpointError",
    "CheckpointManager",
    "ConfigChangedError",
    "ConfigError",
    "LoadedRun",
    "NonFiniteError",
    "RunConfig",
    "RunLock",
    "RunLockedError",
    "RunParts",
    "RunResult",
    "TaskLoss",
    "build_run",
    "fit",
    "load_checkpoint",
    "load_config",
    "load_run",
    "parse_config",
    "read_metrics",
    "save_checkpoint",
]
