"""Stored targets of the built-in workloads, set as AlgoPerf does: tune the target-setting
baselines (AdamW and SGD with Nesterov momentum) with external tuning in the workload's
step budget, re-run each one's best configuration over seeds, and take the best (over the
baselines) of the median (over seeds) of the best validation metric; for the exactly
solvable problems the target is never tighter than the workload's tolerance.

`thalweg bench calibrate` recomputes them and prints this table's entries; `source` says
which command, where and when. A bench config may override a target (`[targets]`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["TARGETS", "lookup"]

TARGETS: dict[str, dict[str, Any]] = {}


def lookup(key: str) -> dict[str, Any] | None:
    """The stored target of workload `key` (name plus non-default parameters), if any."""
    return TARGETS.get(key)
