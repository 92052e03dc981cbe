"""Workloads the bench tests import by ``module:attr`` (in spawned workers too)."""

from __future__ import annotations

import os

from thalweg.bench.tasks.workloads import Workload


def dies() -> Workload:
    """A workload whose build kills its worker process (a segfault, an OOM kill)."""

    def build(seed: int):
        os._exit(3)

    return Workload("dies", build, metric="excess_loss", mode="min", step_budget=10,
                    max_seconds=30.0, target=1.0)
