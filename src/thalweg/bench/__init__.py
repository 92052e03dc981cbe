"""The bench: which optimizer descends fastest on a problem, how sensitive it is to its
learning rate, and which recipe to use — scored as AlgoPerf scores (time-to-target,
performance profiles, the score with r_max = 4). See docs/bench.md.

Names are imported on first use, so that `thalweg --help` does not load torch or Optuna.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "run_bench": "thalweg.bench.api", "calibrate": "thalweg.bench.api",
    "BenchResult": "thalweg.bench.api", "BenchConfig": "thalweg.bench.suites",
    "load_bench": "thalweg.bench.suites", "SUITES": "thalweg.bench.suites",
    "Workload": "thalweg.bench.tasks.workloads", "Problem": "thalweg.bench.tasks.workloads",
    "Submission": "thalweg.bench.submissions", "write_report": "thalweg.bench.report",
    "read_results": "thalweg.bench.results", "recipe_toml": "thalweg.bench.recipes",
}  # fmt: skip

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'thalweg.bench' has no attribute {name!r}")
