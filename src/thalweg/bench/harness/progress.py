"""The live view of a bench: trials done / total with an ETA, and per optimizer the fastest
trial to the target so far on each workload (steps), with its failures."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

__all__ = ["BenchProgress"]


class BenchProgress:
    """A rich progress bar + table; a no-op when disabled (quiet, or not a terminal)."""

    def __init__(self, total: int, submissions: list[str], workloads: list[str], *,
                 done: int = 0, enabled: bool = True, title: str = "bench") -> None:  # fmt: skip
        self.enabled = enabled
        self.subs, self.wls = submissions, workloads
        self.best: dict[tuple[str, str], int] = {}
        self.count: dict[str, int] = defaultdict(int)
        self.bad: dict[str, int] = defaultdict(int)
        self.done, self.total = done, total
        if not enabled:
            return
        from rich.console import Console, Group
        from rich.live import Live
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(TextColumn(f"[bold]{title}[/]"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("trials"), TimeElapsedColumn(), TextColumn("ETA"),
                                  TimeRemainingColumn())  # fmt: skip
        self._task = self._progress.add_task("trials", total=total, completed=done)
        self._group = Group(self._progress, self._table())
        self._live = Live(self._group, console=Console(stderr=True), refresh_per_second=2,
                          transient=False)  # fmt: skip

    def _table(self) -> Any:
        from rich.table import Table

        t = Table(title="fastest trial to the target (steps); — not yet", title_justify="left")
        t.add_column("optimizer")
        t.add_column("trials", justify="right")
        t.add_column("failed", justify="right")
        for w in self.wls:
            t.add_column(w[:14], justify="right")
        for s in self.subs:
            cells = [str(self.best[(s, w)]) if (s, w) in self.best else "—" for w in self.wls]
            t.add_row(s, str(self.count[s]), str(self.bad[s]) if self.bad[s] else "", *cells)
        return t

    def add(self, rec: dict[str, Any], advance: bool = True) -> None:
        """Fold one finished trial in."""
        s, w = rec.get("submission"), rec.get("workload")
        self.count[s] += 1
        if rec.get("status") in ("crashed", "diverged", "timeout"):
            self.bad[s] += 1
        steps = (rec.get("time_to_target") or {}).get("steps")
        if rec.get("reached") and steps is not None and steps < self.best.get((s, w), 1 << 62):
            self.best[(s, w)] = steps
        if advance:
            self.done += 1
        if self.enabled:
            self._progress.update(self._task, completed=self.done, total=self.total)
            self._group.renderables[1] = self._table()

    def set_total(self, total: int) -> None:
        self.total = total
        if self.enabled:
            self._progress.update(self._task, total=total)

    def __enter__(self) -> BenchProgress:
        if self.enabled:
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self._live.__exit__(*exc)
