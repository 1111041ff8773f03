"""A worker lost between popping its trial and its first beat still loses only that trial.

Optuna's heartbeat rule fails a RUNNING trial whose last beat is too old, but a trial that was
never beaten has no beat to judge: it would stay RUNNING forever and its point would never run.
"""

from __future__ import annotations

import time

import optuna
import pytest
from optuna.trial import TrialState

from lorasweep.sweep.heartbeat import LOST_REASON, Heartbeat, fail_stale
from lorasweep.sweep.store import open_storage


@pytest.fixture
def storage_url(tmp_path, monkeypatch):
    monkeypatch.setenv("LORASWEEP_HEARTBEAT_INTERVAL", "0.2")
    monkeypatch.setenv("LORASWEEP_HEARTBEAT_GRACE", "1")
    return f"sqlite:///{tmp_path / 's.db'}"


def _popped(study) -> optuna.trial.Trial:
    study.enqueue_trial({"lr": 1e-3})
    return study.ask()  # RUNNING, as a worker's pop leaves it


def test_a_trial_never_beaten_is_failed_after_the_grace_period(storage_url):
    storage = open_storage(storage_url)
    study = optuna.create_study(study_name="s", storage=storage)
    lost, alive = _popped(study), _popped(study)
    with Heartbeat(storage, alive._trial_id):  # a live worker beats from the start
        fail_stale(study, storage)
        assert {t.state for t in study.get_trials()} == {TrialState.RUNNING}  # within grace
        time.sleep(1.5)
        fail_stale(study, storage)
        states = {t.number: t for t in study.get_trials()}
    assert states[lost.number].state == TrialState.FAIL
    assert states[lost.number].user_attrs["fail_reason"] == LOST_REASON
    assert states[alive.number].state == TrialState.RUNNING  # beaten: alive

