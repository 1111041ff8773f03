"""Rich progress: a bar for the sweep (trials, with an ETA), a bar per running trial that names
its phase with its own count (``initialising``, ``estimating 12/64``, ``training 40/80``,
``evaluating 96/500``, ``generating 8/64``) and its time so far, and one result line per
finished trial.

The same display serves every launcher: the in-process worker calls it directly
(``trial_started`` / ``trial_step`` / ``trial_finished``); launchers whose workers run elsewhere
poll the store and hand it a :class:`~lorasweep.launch.poll.StoreSnapshot` (``store_update``).

The ETA comes from the durations of the trials finished so far: with ``d`` their mean, ``n``
trials left, ``w`` workers and ``e_i`` the time the running trials have already spent,

.. math:: \\mathrm{ETA} = \\max\\Big(0, \\frac{n\\,d - \\sum_i \\min(e_i, d)}{w}\\Big).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from .._console import DisplayConsole
from ..config import TrialSpec
from ..sweep.outcome import TrialOutcome, trial_label
from ..sweep.worker import TrialEvents
from ..text import plain

__all__ = ["SweepProgress", "estimate_eta", "phase_text", "result_line"]


def estimate_eta(durations: list[float], remaining: int, running_elapsed: list[float],
                 workers: int = 1) -> float | None:
    """Seconds left, from finished trials' durations; None before any trial has finished."""
    if not durations:
        return None
    mean = statistics.fmean(durations)
    spent = sum(min(e, mean) for e in running_elapsed)
    return max(0.0, (remaining * mean - spent) / max(1, workers))


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def result_line(label: str, outcome: TrialOutcome) -> str:
    """``lora-r8-a16 lr=1e-3 seed=0  completed  val accuracy 0.786  test 0.780  12s``."""
    head = f"  {label:<36} {outcome.state:<9}"
    took = f"  {outcome.seconds:.0f}s" if outcome.seconds is not None else ""
    if outcome.state == "failed":
        return f"{head} {outcome.reason or ''}{took}"
    if outcome.validation is None:
        return f"{head}{took}"
    metric = outcome.metric or "score"
    test = f"  test {outcome.test:.4f}" if outcome.test is not None else ""
    return f"{head} val {metric} {outcome.validation:.4f}{test}{took}"


class _EtaColumn(ProgressColumn):
    """``eta 0:03:12`` for the sweep bar, from :func:`estimate_eta`; blank on trial bars."""

    def __init__(self, owner: SweepProgress):
        super().__init__()
        self.owner = owner

    def render(self, task: Any) -> Text:
        if task.id != self.owner.sweep:
            return Text("")
        eta = self.owner.eta()
        return Text("eta " + ("-:--:--" if eta is None else _clock(eta)), style="progress.remaining")


def phase_text(phase: str, done: int, total: int | None) -> str:
    """``estimating 12/64``, ``training 40/80``, ``initialising``: a running trial's phase."""
    return f"{phase} {done}/{total}" if total else phase


class _CountColumn(MofNCompleteColumn):
    """``3/27`` trials on the sweep bar; a trial's phase and its own count on a trial bar."""

    def render(self, task: Any) -> Text:
        if "phase" not in task.fields:
            return super().render(task)
        return Text(phase_text(task.fields["phase"], int(task.completed), task.total and
                               int(task.total)), style="progress.download")


class _SinceColumn(TimeElapsedColumn):
    """A trial's time since it started, running through every phase (rich stops a task's
    clock when its count reaches its total: a finished evaluation count is not a finished
    trial)."""

    def render(self, task: Any) -> Text:
        since = task.fields.get("since")
        if since is None:
            return super().render(task)
        return Text(_clock(max(0.0, time.time() - since)), style="progress.elapsed")


class SweepProgress(TrialEvents):
    def __init__(self, total: int, console: Console | None = None, workers: int = 1):
        self.console = console or DisplayConsole(stderr=True)
        self.workers = workers
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            _CountColumn(),
            TextColumn("{task.fields[info]}"),
            _SinceColumn(),
            _EtaColumn(self),
            console=self.console,
            transient=False,
        )
        self.sweep = self.progress.add_task("sweep", total=total, info="")
        self.durations: list[float] = []
        self.bars: dict[Any, Any] = {}  # trial key -> rich task id
        self.started: dict[Any, float] = {}  # trial key -> start (time.time())
        self.shown: set[Any] = set()  # finished trials whose line is printed
        self._current: Any = None  # the in-process trial's key

    def __enter__(self) -> SweepProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def eta(self) -> float | None:
        task = self.progress.tasks[self.sweep]
        remaining = int((task.total or 0) - task.completed)
        now = time.time()
        return estimate_eta(self.durations, remaining, [now - s for s in self.started.values()],
                            self.workers)

    # -- keyed display, shared by every launcher
    def _running(self, key: Any, label: str, phase: str, done: int, total: int | None,
                 loss: float | None = None, started: float | None = None) -> None:
        """A running trial's bar: ``phase`` with ``done`` of ``total`` (training's last loss)."""
        info = f"loss {loss:.3f}" if loss is not None else ""
        if key not in self.bars:
            self.started[key] = started if started is not None else time.time()
            self.bars[key] = self.progress.add_task("  " + plain(label), total=total or None,
                                                    info=info, phase=phase,
                                                    since=self.started[key])
        self.progress.update(self.bars[key], completed=done, total=total or None, info=info,
                             phase=phase)

    def _finished(self, key: Any, label: str, outcome: TrialOutcome) -> None:
        if key in self.shown:
            return
        self.shown.add(key)
        if key in self.bars:
            self.progress.remove_task(self.bars.pop(key))
        start = self.started.pop(key, None)
        seconds = outcome.seconds if outcome.seconds is not None else (
            time.time() - start if start is not None else None)
        if seconds is not None:
            self.durations.append(seconds)
        self.progress.console.print(plain(result_line(label, outcome)), highlight=False,
                                    soft_wrap=True)
        self.progress.advance(self.sweep)

    # -- the in-process worker's events
    def trial_started(self, spec: TrialSpec, total_steps: int) -> None:
        self._current = (spec.study, spec.trial_number)
        self._running(self._current, trial_label(spec.variant.tag, spec.lr, spec.seed,
                                                 budget=spec.budget),
                      "training" if total_steps else "initialising", 0, total_steps)

    def trial_step(self, step: int, loss: float) -> None:
        key = self._current
        if key in self.bars:
            self.progress.update(self.bars[key], completed=step, info=f"loss {loss:.3f}",
                                 phase="training")

    def trial_phase(self, phase: str, done: int, total: int | None) -> None:
        key = self._current
        if key in self.bars:
            self.progress.update(self.bars[key], completed=done, total=total or None,
                                 phase=phase)

    def trial_finished(self, spec: TrialSpec, state: str, value: float | None,
                       outcome: TrialOutcome | None = None) -> None:
        key = (spec.study, spec.trial_number)
        self._finished(key, trial_label(spec.variant.tag, spec.lr, spec.seed, budget=spec.budget),
                       outcome or TrialOutcome(state, value))

    # -- launchers that read the store
    def sweep_progress(self, finished: int) -> None:
        self.progress.update(self.sweep, completed=finished)

    def store_update(self, snapshot: Any) -> None:
        for view in snapshot.finished:
            self._finished(view.key, view.label, view.outcome)
        live = set()
        for view in snapshot.running:
            live.add(view.key)
            self._running(view.key, view.label, view.phase, view.done, view.of, view.loss,
                          view.started)
        for key in [k for k in self.bars if k not in live]:  # gone without a result yet
            self.progress.remove_task(self.bars.pop(key))
            self.started.pop(key, None)
        self.progress.update(self.sweep, completed=snapshot.done)
