"""The launcher interface: run the waiting trials of some studies, somewhere."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from ..paths import LOGS_DIR, RUNS_DIR
from ..sweep.worker import TrialEvents, WorkerSummary

__all__ = ["Launcher", "get_launcher"]


class Launcher(ABC):
    """Runs ``run_worker`` over the studies, in one or more places, until nothing waits."""

    name: str = ""

    @abstractmethod
    def launch(self, storage_url: str, study_names: list[str], total: int,
               events: TrialEvents) -> WorkerSummary:
        """Run every waiting trial; ``total`` is how many are expected (for progress)."""


def get_launcher(name: str, workers: int = 1, runs_dir: str | Path = RUNS_DIR) -> Launcher:
    """The launcher ``name``; worker logs go to ``logs/`` beside ``runs_dir``."""
    from .inline import InlineLauncher
    from .local import LocalLauncher

    if name == "inline":
        return InlineLauncher()
    if name == "local":
        return LocalLauncher(workers, log_dir=Path(runs_dir).parent / LOGS_DIR.name)
    raise ValueError(f"unknown launcher {name!r}: choose inline or local")
