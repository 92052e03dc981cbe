"""thalweg: the optimization toolbox of deep learning, and the instruments that show why
training is slow or stuck."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "watch"]


def __getattr__(name: str) -> Any:
    """`thalweg.watch` is imported on first use, so `import thalweg` stays cheap."""
    if name == "watch":
        from thalweg.integrations.plain import watch

        return watch
    raise AttributeError(f"module 'thalweg' has no attribute {name!r}")
