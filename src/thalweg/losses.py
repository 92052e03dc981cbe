"""The loss for a task, written once: cross-entropy for classification (label-smoothed if asked),
mean squared error for regression.

The trainer (`thalweg.train`), the briefly trained landscape model, the meta-learners and the
curvature probes all take their loss from here, so "which loss for this task" has one answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["LOSSES", "TASKS", "TaskLoss", "named_loss"]

#: the tasks a dataset can pose (`Splits.task`)
TASKS = ("classification", "regression")


@dataclass(frozen=True)
class TaskLoss:
    """The loss for a task: `loss(out, y)` is the batch mean (what backward and the instruments
    use), `loss.per_sample(out, y)` one value per row (what the trainer logs). Classification:
    cross-entropy, label-smoothed by `label_smoothing`; regression: squared error averaged over
    the outputs (the prediction is reshaped to the target's shape, so an (n, 1) output against
    an (n,) target never broadcasts to (n, n))."""

    task: str
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {list(TASKS)}, got {self.task!r}")
        if self.label_smoothing and self.task != "classification":
            raise ValueError("label smoothing applies to classification only")

    def per_sample(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.task == "classification":
            if self.label_smoothing:
                from thalweg.regularize import label_smoothing

                return label_smoothing(out, y, self.label_smoothing, reduction="none")
            return F.cross_entropy(out, y, reduction="none")
        return (out.reshape(y.shape) - y).pow(2).reshape(len(y), -1).mean(dim=1)

    def __call__(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.per_sample(out, y).mean()

    @property
    def name(self) -> str:
        """The loss's name in probe files and the meta-learners: "cross_entropy" or "mse"."""
        return "cross_entropy" if self.task == "classification" else "mse"

    @property
    def label(self) -> str:
        """What this loss is, as inspect and landscape print it."""
        if self.label_smoothing:
            return f"training objective (label smoothing {self.label_smoothing:g})"
        return "plain cross-entropy" if self.task == "classification" else "plain mean squared error"


#: the plain losses by name (probe files and the meta-learners name their loss)
LOSSES: dict[str, TaskLoss] = {t.name: t for t in map(TaskLoss, TASKS)}


def named_loss(name: str) -> TaskLoss:
    """The plain loss called `name` ("cross_entropy" or "mse"); ValueError naming the choices."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; expected one of {sorted(LOSSES)}")
    return LOSSES[name]
