"""What a trial shows a person: its outcome and its progress, read from the store.

Progress displays (the in-process one and the ones that poll the store for workers running
elsewhere) describe a trial the same way, from what the worker recorded:

* a running trial's ``progress`` attribute: ``{"step", "total", "loss"}``, written every
  :data:`PROGRESS_INTERVAL_S` seconds by its worker;
* a finished trial's state, validation score (the objective), test score, metric, failure reason
  and duration.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from ..text import format_lr

__all__ = ["PROGRESS_ATTR", "PROGRESS_INTERVAL_S", "TrialOutcome", "one_line", "outcome_of",
           "trial_label"]

PROGRESS_ATTR = "progress"
PROGRESS_INTERVAL_S = float(os.environ.get("LORASWEEP_PROGRESS_INTERVAL", "2"))


@dataclasses.dataclass
class TrialOutcome:
    state: str  # completed | diverged | pruned | failed
    validation: float | None = None  # the objective
    test: float | None = None
    metric: str | None = None
    reason: str | None = None  # a failed trial's one-line reason
    seconds: float | None = None


def one_line(text: str, width: int = 160) -> str:
    """The first line of ``text``, shortened to ``width`` characters."""
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def trial_label(tag: str, lr: float | None, seed: int | None, grid: str | None = None,
                budget: float | None = 1.0) -> str:
    """``lora-r8-a16 lr=1e-3 seed=0``: how a trial is named in every progress line; a rung of
    the adaptive search adds how far into its schedule it goes: ``... seed=0 to 30%``."""
    if lr is not None:
        rung = f" to {budget:.0%}" if budget is not None and budget < 1.0 else ""
        return f"{tag} lr={format_lr(lr)} seed={seed}{rung}"
    return f"{tag} {(grid or '').replace(',', ' ')}".strip()


def outcome_of(trial: Any) -> TrialOutcome | None:
    """The outcome of a finished FrozenTrial; None while it waits or runs."""
    state = trial.state.name
    attrs = trial.user_attrs
    seconds = None
    if trial.datetime_start and trial.datetime_complete:
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
    metric = attrs.get("metric")
    test = attrs.get(f"test_{metric}") if metric else None
    if state == "COMPLETE":
        return TrialOutcome("diverged" if attrs.get("diverged") else "completed", trial.value,
                            test, metric, None, seconds)
    if state == "PRUNED":
        return TrialOutcome("pruned", None, None, metric, None, seconds)
    if state == "FAIL":
        return TrialOutcome("failed", None, None, metric,
                            one_line(attrs.get("fail_reason") or "no reason recorded"), seconds)
    return None
