"""What a run reports while it trains besides metrics.jsonl: TensorBoard event files and MLflow
(`[diagnostics] tensorboard`, `mlflow`; through `thalweg.integrations.loggers.Board`, the same
tags the Lightning and Hugging Face callbacks write) and the λ_max probe
(`[diagnostics] curvature_every`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor, nn

__all__ = ["open_board", "probe"]

PROBE_ROWS = 512


def open_board(root: Path, *, tensorboard: bool | str, mlflow: str | None, name: str, step: int,
               params: dict[str, Any]) -> Any:
    """The Board of the run in `root` (`tensorboard/` there), or None when both are off; a run
    resumed at `step` drops the events logged after its checkpoint (TensorBoard's purge_step),
    so the history shows once. `params`: the run's config fields, flat."""
    if tensorboard is False and not mlflow:
        return None
    from thalweg.integrations.loggers import Board

    board = Board(root / "tensorboard", tensorboard=tensorboard, mlflow=mlflow or None, run_name=name,
                  purge_step=step + 1 if step else None, params=params)
    return board if board.enabled else None


def probe(model: nn.Module, loss: Any, x_train: Tensor, y_train: Tensor) -> dict[str, float]:
    """λ_max of the training objective on the first 512 training rows (Lanczos, eval mode). It
    touches no gradient, weight or random stream, so a resumed run stays bitwise the same."""
    from thalweg.curvature import HessianOperator
    from thalweg.integrations.held import top_eigenvalues

    n = min(PROBE_ROWS, len(x_train))
    try:
        op = HessianOperator(model, loss, (x_train[:n], y_train[:n]))
        r = top_eigenvalues(op)
    except (FloatingPointError, RuntimeError, ValueError):
        return {}  # non-finite weights: nothing to read
    return {"lambda_max": r["eigenvalues"][0], "lambda_max_residual": r["residuals"][0]}
