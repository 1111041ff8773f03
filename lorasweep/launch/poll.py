"""Watching a sweep from the store: the one poll-and-progress loop of the local and SLURM launchers.

Workers that run elsewhere (processes, array tasks) report nothing to this process; progress is
read from the study store, never from the workers' memory. :func:`watch` polls the store and the
workers' liveness until every worker has ended; a launcher that wants more on each tick (thread
counts, job states) passes ``on_tick``.

:class:`StoreWatcher` turns the store into what a progress display shows: the running trials
with their step counts (written by their workers), and the trials finished since the launch
began with their outcome. Trials finished before the launch are never shown again.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from ..sweep.outcome import PROGRESS_ATTR, TrialOutcome, outcome_of, trial_label

__all__ = ["StoreSnapshot", "StoreWatcher", "TrialView", "count_finished", "watch"]

_OUTCOMES = ("completed", "pruned", "failed", "diverged")


def count_finished(storage_url: str, study_names: list[str], launch: str | None = None) -> Counter:
    """Finished trials of the studies by outcome: completed, diverged, pruned, failed (every
    failure, retried or not: each was a trial that ended). With ``launch``, only the trials
    that launch's workers ran (their ``LAUNCH_ATTR``)."""
    import optuna

    from ..sweep.states import count_states
    from ..sweep.store import open_storage
    from ..sweep.worker import LAUNCH_ATTR

    storage = open_storage(storage_url, create=False)
    counts: Counter = Counter()
    for name in study_names:
        trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
        if launch is not None:
            trials = [t for t in trials if t.user_attrs.get(LAUNCH_ATTR) == launch]
        states = count_states(trials)
        counts.update(completed=states["complete"], diverged=states["diverged"],
                      pruned=states["pruned"], failed=states["failed"] + states["retried"])
    return counts


@dataclasses.dataclass
class TrialView:
    key: tuple[str, int]  # (study, trial number)
    label: str
    step: int = 0
    total: int = 0
    loss: float | None = None
    started: float | None = None  # epoch seconds
    #: What it does now (:data:`lorasweep._phase.PHASES`), and how far: ``done`` of ``of``.
    phase: str = "initialising"
    done: int = 0
    of: int | None = None
    outcome: TrialOutcome | None = None


@dataclasses.dataclass
class StoreSnapshot:
    running: list[TrialView]
    finished: list[TrialView]  # finished since the watcher was made
    done: int  # how many trials finished since the watcher was made


def _phase_of(progress: dict[str, Any]) -> dict[str, Any]:
    """The phase fields of a trial's ``progress`` attribute (one written before phases were
    recorded holds training's steps alone)."""
    if "phase" in progress:
        return {"phase": progress["phase"], "done": int(progress.get("done") or 0),
                "of": progress.get("of")}
    if progress:
        return {"phase": "training", "done": int(progress.get("step") or 0),
                "of": progress.get("total")}
    return {}


class StoreWatcher:
    """Polls the studies of a launch; ``poll()`` returns a :class:`StoreSnapshot`."""

    def __init__(self, storage_url: str, study_names: list[str]):
        from ..sweep.store import open_storage

        self.storage = open_storage(storage_url, create=False)
        self.study_names = study_names
        self.before = {view.key for view in self._views() if view.outcome is not None}

    def _views(self) -> list[TrialView]:
        import optuna

        from ..sweep.states import counted

        views = []
        for name in self.study_names:
            study = optuna.load_study(study_name=name, storage=self.storage)
            tag = study.user_attrs.get("variant_tag", name)
            for t in counted(study.get_trials(deepcopy=False)):
                if t.state.name == "WAITING":
                    continue
                progress = t.user_attrs.get(PROGRESS_ATTR) or {}
                views.append(TrialView(
                    key=(name, t.number),
                    label=trial_label(tag, t.params.get("lr"), t.params.get("seed"),
                                      t.user_attrs.get("grid_point"), t.user_attrs.get("budget")),
                    step=int(progress.get("step") or 0), total=int(progress.get("total") or 0),
                    loss=progress.get("loss"), **_phase_of(progress),
                    started=t.datetime_start.timestamp() if t.datetime_start else None,
                    outcome=outcome_of(t)))
        return views

    def stopped(self) -> dict[str, str]:
        """The studies a worker stopped (their first trials failed alike) -> the reason."""
        from ..sweep.study import STOPPED_ATTR

        out = {}
        for name in self.study_names:
            study_id = self.storage.get_study_id_from_name(name)
            reason = self.storage.get_study_user_attrs(study_id).get(STOPPED_ATTR)
            if isinstance(reason, str):
                out[name] = reason
        return out

    def poll(self) -> StoreSnapshot:
        views = [v for v in self._views() if v.key not in self.before]
        finished = [v for v in views if v.outcome is not None]
        running = [v for v in views if v.outcome is None]
        return StoreSnapshot(running, finished, len(finished))



def watch(storage_url: str, study_names: list[str], events: Any, alive: Callable[[], bool],
          every_s: float = 2.0, on_tick: Callable[[StoreSnapshot], None] | None = None,
          launch: str | None = None, on_interrupt: Callable[[], None] | None = None) -> Any:
    """Show the store's progress (result lines, step bars) until ``alive()`` is false; returns
    a ``WorkerSummary`` of what finished meanwhile: with ``launch`` (the id its workers record
    on their trials), only what that launch's workers ran, not a concurrent run's trials.

    Ctrl-C (or SIGTERM, as :class:`~lorasweep.launch.base.Interrupted`) with ``on_interrupt``:
    that stops the workers and waits for them, the trials they stopped are shown as their
    result lines, and the interrupt goes on."""
    from ..sweep.worker import WorkerSummary

    before = count_finished(storage_url, study_names, launch)
    watcher = StoreWatcher(storage_url, study_names)
    while True:
        try:
            running = alive()
            snapshot = watcher.poll()
            events.store_update(snapshot)
            if on_tick is not None:
                on_tick(snapshot)
            if not running:
                break
            time.sleep(every_s)
        except KeyboardInterrupt:
            if on_interrupt is None:
                raise
            on_interrupt()
            events.store_update(watcher.poll())
            raise
    after = count_finished(storage_url, study_names, launch)
    return WorkerSummary(**{k: after[k] - before[k] for k in _OUTCOMES},
                         stopped=watcher.stopped())
