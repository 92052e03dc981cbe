"""thalweg where people already train: a Lightning `Callback`, a Hugging Face `TrainerCallback`
and `watch(model, optimizer)` for a hand-written loop — one core (`Watcher`): thalweg's monitors,
the non-finite guard, the curvature probe, TensorBoard/MLflow logging and the doctor's report.

`thalweg.integrations.lightning` and `thalweg.integrations.transformers` import their
framework; this package itself imports neither (nor does `import thalweg`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["Board", "HeldBatch", "Report", "Watch", "Watcher", "watch"]

_WHERE = {"Board": "loggers", "HeldBatch": "held", "Watcher": "watcher", "Report": "report",
          "Watch": "plain", "watch": "plain"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"thalweg.integrations.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'thalweg.integrations' has no attribute {name!r}")
