"""In-process launcher: one worker loop in this process (the default; shows per-trial progress)."""

from __future__ import annotations

from ..sweep.worker import TrialEvents, WorkerSummary, run_worker
from .base import Launcher, register

__all__ = ["InlineLauncher"]


@register
class InlineLauncher(Launcher):
    key = "inline"
    summary = "one worker in this process, with per-trial progress"
    in_process = True

    def launch(self, storage_url: str, study_names: list[str], total: int,
               events: TrialEvents) -> WorkerSummary:
        from .threads import configure_threads

        configure_threads(1)  # one worker: every core available to this process
        return run_worker(storage_url, study_names, events)
