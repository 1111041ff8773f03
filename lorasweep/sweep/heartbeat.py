"""Heartbeats of running trials: a worker that stops beating has lost its trial.

On RDB storages (SQLite, PostgreSQL, MySQL) this is Optuna's own heartbeat: the storage is opened
with ``heartbeat_interval`` and ``grace_period``, a running trial's worker calls
``storage.record_heartbeat(trial_id)`` every interval, and ``optuna.storages.fail_stale_trials``
marks a trial FAIL once its last beat is older than the grace period. Optuna's journal storage has
no heartbeat, so there the beat is a trial user attribute ``heartbeat`` (a Unix time) and the same
rule is applied here. Either way a RUNNING trial that survives :func:`fail_stale` has a live worker.
A worker lost between popping its trial and its first beat leaves a RUNNING trial with no beat
at all, which Optuna's rule never fails: the first beat also writes the ``heartbeat`` attribute,
and a RUNNING trial without it is failed once its start is older than the grace period.

:func:`beat_ages` reads, without writing, how long ago each RUNNING trial last beat (``lorasweep
status`` shows one past the grace period as lost). :func:`fail_worker_trials` fails at once the
running trials of a worker process its launcher saw die, with the cause as the trial's reason.

The interval and grace (seconds) come from ``LORASWEEP_HEARTBEAT_INTERVAL`` (default 10) and
``LORASWEEP_HEARTBEAT_GRACE`` (default 60), read when used.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from typing import Any

__all__ = ["HEARTBEAT_ATTR", "Heartbeat", "beat_ages", "fail_stale", "fail_worker_trials", "grace_s",
           "interval_s", "uses_optuna_heartbeat"]

HEARTBEAT_ATTR = "heartbeat"
LOST_REASON = "worker lost (no heartbeat)"


def interval_s() -> float:
    return float(os.environ.get("LORASWEEP_HEARTBEAT_INTERVAL", "10"))


def grace_s() -> float:
    return float(os.environ.get("LORASWEEP_HEARTBEAT_GRACE", "60"))


def uses_optuna_heartbeat(storage: Any) -> bool:
    from optuna.storages import RDBStorage

    return isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() is not None


class Heartbeat:
    """Beats for one trial from a background thread while the ``with`` block runs."""

    def __init__(self, storage: Any, trial_id: int, interval: float | None = None):
        self._storage, self._trial_id = storage, trial_id
        self._interval = interval_s() if interval is None else interval
        self._optuna = uses_optuna_heartbeat(storage)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def beat(self) -> None:
        if self._optuna:
            self._storage.record_heartbeat(self._trial_id)
        else:
            self._storage.set_trial_user_attr(self._trial_id, HEARTBEAT_ATTR, time.time())

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.beat()
            except Exception:  # the trial ended under us (told elsewhere) or the store blinked
                pass

    def __enter__(self) -> Heartbeat:
        self.beat()  # at once: a trial popped but never beaten would look alive forever
        if self._optuna:  # marks "beaten" for fail_stale (Optuna's own beats are not readable)
            self._storage.set_trial_user_attr(self._trial_id, HEARTBEAT_ATTR, time.time())
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def fail_stale(study: Any, storage: Any) -> None:
    """Mark RUNNING trials of ``study`` whose worker stopped beating as FAIL."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    optuna_beats = uses_optuna_heartbeat(storage)
    if optuna_beats:
        import optuna

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
    now, grace = time.time(), grace_s()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        beat = trial.user_attrs.get(HEARTBEAT_ATTR)
        if optuna_beats and beat is not None:  # beaten: Optuna's rule above decides
            continue
        start = trial.datetime_start.timestamp() if trial.datetime_start else now
        if now - (beat if beat is not None else start) > grace:
            try:
                storage.set_trial_user_attr(trial._trial_id, "fail_reason", LOST_REASON)
                storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            except UpdateFinishedTrialError:  # another worker got there first
                pass


def _optuna_beats(storage: Any, trial_ids: list[int]) -> dict[int, float]:
    """Seconds since each trial's last beat in Optuna's heartbeat table (the database's clock
    on both sides); trials never beaten are left out."""
    import sqlalchemy
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    if not trial_ids:
        return {}
    beat = models.TrialHeartbeatModel
    with _create_scoped_session(storage.scoped_session) as session:
        now = session.execute(sqlalchemy.func.now()).scalar().replace(tzinfo=None)
        rows = session.query(beat.trial_id, beat.heartbeat).filter(beat.trial_id.in_(trial_ids)).all()
    return {trial_id: (now - at.replace(tzinfo=None)).total_seconds() for trial_id, at in rows}


def beat_ages(storage: Any, trials: list[Any]) -> dict[int, float]:
    """Per RUNNING trial (by number): seconds since its last beat, or since its start when it
    was never beaten. Read only. A trial is lost once its age is over :func:`grace_s`."""
    running = [t for t in trials if t.state.name == "RUNNING"]
    optuna_ages = (_optuna_beats(storage, [t._trial_id for t in running])
                   if uses_optuna_heartbeat(storage) else {})
    now, out = time.time(), {}
    for t in running:
        if t._trial_id in optuna_ages:
            out[t.number] = optuna_ages[t._trial_id]
            continue
        beat = t.user_attrs.get(HEARTBEAT_ATTR)
        start = t.datetime_start.timestamp() if t.datetime_start else now
        out[t.number] = now - (beat if beat is not None else start)
    return out


def fail_worker_trials(storage: Any, study_names: list[str], worker: str, reason: str) -> list[int]:
    """Fail the RUNNING trials whose ``worker`` attribute is ``worker`` (a process its launcher
    saw die), with ``reason`` as their fail reason; a live worker's next pop retries them, within
    the sweep's ``max_retries``. Returns the failed trials' numbers."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    failed = []
    for name in study_names:
        study_id = storage.get_study_id_from_name(name)
        for trial in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            if trial.user_attrs.get("worker") != worker:
                continue
            try:
                storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
                storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
                failed.append(trial.number)
            except UpdateFinishedTrialError:  # failed as lost by a live worker first
                pass
    return failed
