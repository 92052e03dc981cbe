"""The live progress bar (epoch, step, loss, lr, throughput, ETA) and run messages.

The bar shows only on a terminal; messages go to stderr unless the run is quiet.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["ProgressView"]


class ProgressView:
    """A rich progress bar that is silent off a TTY; `print` still reports events."""

    def __init__(self, enabled: bool = True, notices: bool = True) -> None:
        self.console = Console(stderr=True, quiet=not (enabled or notices), soft_wrap=True)
        self.enabled = enabled
        self.bar_on = enabled and self.console.is_terminal
        self.progress: Progress | None = None
        self.task: Any = None
        self.steps_per_epoch = 1

    def start(self, total: int, completed: int, epochs: int) -> None:
        if not self.bar_on:
            return
        self.steps_per_epoch = max(1, total // max(1, epochs))
        self.epochs = epochs
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[speed]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task(
            "train", total=total, completed=completed, epoch=self._epoch(completed),
            loss="-", lr="-", speed="",
        )

    def _epoch(self, step: int) -> str:
        return f"{min(step // self.steps_per_epoch + 1, self.epochs)}/{self.epochs}"

    def advance(self) -> None:
        if self.progress is not None:
            self.progress.advance(self.task)

    def update(self, rec: dict[str, Any]) -> None:
        if self.progress is None:
            return
        task = self.progress.tasks[0]
        fields: dict[str, Any] = {"epoch": self._epoch(rec["step"]), "lr": f"{rec['lr']:.2e}"}
        if "train_loss" in rec:
            fields["loss"] = f"{rec['train_loss']:.4f}"
        if task.speed:
            fields["speed"] = f"{task.speed:.0f} step/s"
        if "val_accuracy" in rec:
            fields["speed"] += f"  val acc {rec['val_accuracy']:.3f}"
        self.progress.update(self.task, advance=1, **fields)

    def print(self, msg: str) -> None:
        """An informational line (silent when quiet)."""
        if self.enabled:
            self.notice(msg)

    def notice(self, msg: str) -> None:
        """A line that is shown even when quiet: warnings, resumes, rollbacks."""
        if self.progress is not None:
            self.progress.console.print(msg)
        else:
            self.console.print(msg)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
