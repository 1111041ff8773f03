"""Local workers under load and loss: each point completes exactly once, a lost one in the same run.

About scheduling only, so trials are a stand-in function (tests/helpers.py); the worker
processes, the SQLite store, its locks and heartbeats are real.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter

import optuna
import pytest
from optuna.trial import TrialState

from lorasweep.config import SweepSpec, TrainConfig, VariantSpec
from lorasweep.launch import WorkerDied
from lorasweep.launch.run import run_sweep
from lorasweep.sweep.store import open_storage
from lorasweep.sweep.study import fail_reason, study_name


@pytest.fixture
def standin(monkeypatch):
    monkeypatch.setenv("LORASWEEP_TRIAL_FUNCTION", "helpers:standin_trial")
    return monkeypatch


def _spec(tmp_path, lrs, seeds, workers, storage=None) -> SweepSpec:
    return SweepSpec(name="local", model="embedded:minilm", task="sentiment",
                     variants=[VariantSpec("lora")], lrs=lrs, seeds=seeds, train=TrainConfig(steps=1),
                     storage=storage or f"sqlite:///{tmp_path / 's.db'}",
                     launcher="local", workers=workers, runs_dir=str(tmp_path / "out" / "runs"))


def _trials(spec: SweepSpec) -> list:
    storage = open_storage(spec.storage, create=False)
    return optuna.load_study(study_name=study_name(spec, spec.variants[0]), storage=storage).get_trials()


def test_eight_workers_run_200_points_exactly_once(tmp_path, standin):
    spec = _spec(tmp_path, [round(1e-5 * 1.05**i, 12) for i in range(100)], [0, 1], workers=8,
                 storage=f"journal:{tmp_path / 's.journal'}")  # SQLite: 1 s of fsyncs per trial
    outcome = run_sweep(spec)  # raises WorkerDied if any worker process failed
    trials = _trials(spec)
    points = Counter(t.user_attrs["grid_point"] for t in trials if t.state == TrialState.COMPLETE)
    assert len(points) == 200 and set(points.values()) == {1}
    assert Counter(t.state for t in trials) == Counter({TrialState.COMPLETE: 200})
    assert outcome.summary.completed == 200 and outcome.summary.failed == 0
    assert len({t.user_attrs["worker"] for t in trials}) >= 2  # shared out, not one worker's


def test_sigkill_of_one_worker_is_retried_by_the_survivor(tmp_path, standin):
    standin.setenv("LORASWEEP_TEST_TRIAL_S", "3")
    standin.setenv("LORASWEEP_HEARTBEAT_INTERVAL", "1")
    standin.setenv("LORASWEEP_HEARTBEAT_GRACE", "5")
    spec = _spec(tmp_path, [1e-4, 1e-3], [0, 1], workers=2)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            run_sweep(spec)
        except BaseException as err:  # noqa: BLE001  (checked below)
            failure.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    victim = None
    deadline = time.time() + 120
    while victim is None and time.time() < deadline:
        time.sleep(0.2)
        try:
            victim = next((t for t in _trials(spec)
                           if t.state == TrialState.RUNNING and "worker" in t.user_attrs), None)
        except Exception:  # the store is being created
            continue
    assert victim is not None, "no trial ever ran"
    os.kill(int(victim.user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
    thread.join(timeout=180)
    assert not thread.is_alive()
    assert len(failure) == 1 and isinstance(failure[0], WorkerDied)
    message = str(failure[0])
    assert "killed by SIGKILL" in message and "worker-" in message and "\n" not in message
    assert "most likely out of memory" in message and "--batch-size" in message  # the cause
    trials = _trials(spec)
    done = Counter(t.user_attrs["grid_point"] for t in trials if t.state == TrialState.COMPLETE)
    assert len(done) == 4 and set(done.values()) == {1}
    lost = next(t for t in trials if t.number == victim.number)
    # failed by the launcher at once, with the cause, and retried by the survivor (above)
    assert lost.state == TrialState.FAIL and "SIGKILL" in fail_reason(lost)
    assert "most likely out of memory" in fail_reason(lost)
