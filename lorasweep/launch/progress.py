"""Rich progress bars: one for the sweep (trials), one for the running trial (steps)."""

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

from ..config import TrialSpec
from ..sweep.worker import TrialEvents

__all__ = ["SweepProgress"]


class SweepProgress(TrialEvents):
    def __init__(self, total: int, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.sweep = self.progress.add_task("sweep", total=total, info="")
        self.trial: Any = None

    def __enter__(self) -> SweepProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def trial_started(self, spec: TrialSpec, total_steps: int) -> None:
        label = f"  {spec.variant.key} lr={spec.lr:.2g} seed={spec.seed}"
        if self.trial is not None:
            self.progress.remove_task(self.trial)
        self.trial = self.progress.add_task(label, total=total_steps, info="")

    def trial_step(self, step: int, loss: float) -> None:
        if self.trial is not None:
            self.progress.update(self.trial, completed=step, info=f"loss {loss:.3f}")

    def trial_finished(self, spec: TrialSpec, state: str, value: float | None) -> None:
        shown = f"{value:.4f}" if value is not None else "-"
        self.progress.console.print(
            f"  {spec.variant.tag:<22} lr={spec.lr:<8.2g} seed={spec.seed}  {state:<9} {shown}"
        )
        if self.trial is not None:
            self.progress.remove_task(self.trial)
            self.trial = None
        self.progress.advance(self.sweep)

    def sweep_progress(self, finished: int) -> None:
        self.progress.update(self.sweep, completed=finished)
