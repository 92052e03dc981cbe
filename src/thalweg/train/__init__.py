"""The trainer: a config-driven run that keeps the best weights and survives a power cut.

`fit(config) -> RunResult` trains; `load_run(path) -> LoadedRun` rebuilds a run for analysis.
"""

from thalweg.train.api import fit
from thalweg.train.checkpoint import (
    CheckpointError,
    CheckpointManager,
    load_checkpoint,
    save_checkpoint,
)
from thalweg.train.config import DEFAULT_TOML, ConfigError, RunConfig, load_config, parse_config
from thalweg.train.guard import NonFiniteError
from thalweg.train.runs import LoadedRun, RunResult, load_run, read_metrics

__all__ = [
    "DEFAULT_TOML",
    "CheckpointError",
    "CheckpointManager",
    "ConfigError",
    "LoadedRun",
    "NonFiniteError",
    "RunConfig",
    "RunResult",
    "fit",
    "load_checkpoint",
    "load_config",
    "load_run",
    "parse_config",
    "read_metrics",
    "save_checkpoint",
]
