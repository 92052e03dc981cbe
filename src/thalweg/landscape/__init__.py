"""Pictures of optimization: the seeds' test surfaces, optimizer trajectories on them,
filter-normalized loss-landscape slices of real networks, and the learning-rate range test."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["functions", "lr_finder", "plots", "slices", "trajectories"]


def __getattr__(name: str) -> Any:
    # Submodules load on first use so that `import thalweg.landscape` stays cheap.
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
