"""What a run reports while it trains besides metrics.jsonl: TensorBoard event files and MLflow
(`[diagnostics] tensorboard`, `mlflow`; through `thalweg.integrations.loggers.Board`, the same
tags the Lightning and Hugging Face callbacks write) and the λ_max probe
(`[diagnostics] curvature_every`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from thalweg.train.loop import Trainer

__all__ = ["open_board", "probe"]

PROBE_ROWS = 512


def open_board(tr: Trainer) -> Any:
    """The run's Board on rank 0, or None; a resumed run drops the events logged after its
    checkpoint (TensorBoard's purge_step), so the history shows once."""
    d = tr.cfg.diagnostics
    if not tr.main or (d.tensorboard is False and not d.mlflow):
        return None
    from thalweg.integrations.loggers import Board
    from thalweg.train.resume import config_fields

    board = Board(tr.paths.root / "tensorboard", tensorboard=d.tensorboard, mlflow=d.mlflow or None,
                  run_name=tr.cfg.name, purge_step=tr.state.step + 1 if tr.state.step else None,
                  params=config_fields(tr.cfg))
    return board if board.enabled else None


def probe(tr: Trainer) -> dict[str, float]:
    """λ_max of the training objective on the first 512 training rows (Lanczos, eval mode). It
    touches no gradient, weight or random stream, so a resumed run stays bitwise the same."""
    from thalweg.curvature import HessianOperator
    from thalweg.integrations.watcher import top_eigenvalues

    n = min(PROBE_ROWS, len(tr.splits.x_train))
    try:
        op = HessianOperator(tr.model, tr.train_loss, (tr.splits.x_train[:n], tr.splits.y_train[:n]))
        r = top_eigenvalues(op)
    except (FloatingPointError, RuntimeError, ValueError):
        return {}  # non-finite weights: nothing to read
    return {"lambda_max": r["eigenvalues"][0], "lambda_max_residual": r["residuals"][0]}
