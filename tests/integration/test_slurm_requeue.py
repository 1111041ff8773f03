"""SLURM requeues: a task requeued mid-trial, or reaching its time limit, resumes its trial.

The array tasks run the real trial (a tiny BERT, the real training loop and checkpoints) against
a real journal store on the single-node cluster (scripts/slurm-local.sh). ``scontrol requeue``
sends SIGTERM; the time limit sends SIGUSR2 ``signal_delay_s`` before it (submitit's
``--signal``). Either way the trial is checkpointed, failed with the reason and its point
enqueued again; the requeued task resumes it from the checkpoint.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from lorasweep.config import SweepSpec, TrainConfig, VariantSpec
from lorasweep.sweep.store import open_storage
from lorasweep.sweep.study import study_name

ROOT = Path(__file__).resolve().parents[2]

_SWEEP = """
from lorasweep.config import SweepSpec
from lorasweep.launch.run import run_sweep
outcome = run_sweep(SweepSpec.from_dict({spec!r}))
print("completed", outcome.summary.completed)
"""


@pytest.fixture
def job_env(monkeypatch, slurm_cluster, tmp_path):
    """What array tasks inherit from this process (sbatch exports the environment); a home
    folder of the test's own, so the launcher's private URL files stay out of the real one."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.delenv("LORASWEEP_TRIAL_FUNCTION", raising=False)
    monkeypatch.setenv("LORASWEEP_HEARTBEAT_INTERVAL", "0.5")
    monkeypatch.setenv("LORASWEEP_HEARTBEAT_GRACE", "20")
    return monkeypatch


def _spec(model: Path, tmp_path: Path, steps: int, every: int, **options) -> SweepSpec:
    return SweepSpec(
        name="requeue", model=str(model), task="sentiment", launcher="slurm", workers=1,
        variants=[VariantSpec("lora", rank=4, alpha=8)], lrs=[1e-3], seeds=[0],
        train=TrainConfig(steps=steps, batch_size=8, max_length=32, checkpoint_every=every),
        task_options={"eval_limit": 8}, storage=f"journal:{tmp_path / 'sweep.journal'}",
        runs_dir=str(tmp_path / "out" / "runs"),
        launcher_options={"gpus_per_task": 0, **options})


def _trials(spec: SweepSpec) -> list:
    storage = open_storage(spec.storage, create=False)
    return optuna.load_study(study_name=study_name(spec, spec.variants[0]),
                             storage=storage).get_trials()


def _start(spec: SweepSpec, tmp_path: Path) -> subprocess.Popen:
    data = {**spec.to_dict(), "variants": [{"key": "lora", "rank": 4, "alpha": 8}]}
    return subprocess.Popen([sys.executable, "-c", _SWEEP.format(spec=data)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ})


def _stops(spec: SweepSpec) -> tuple[list[int], list]:
    """The steps the stopped trials saved at (in order) and the completed trials."""
    trials = sorted(_trials(spec), key=lambda t: t.number)
    stopped = [t.user_attrs.get("fail_reason", "") for t in trials if t.state == TrialState.FAIL]
    assert all(r.startswith("stopped by SIG") and "checkpoint saved at step" in r for r in stopped), stopped
    return [int(r.rsplit(" ", 1)[1]) for r in stopped], [t for t in trials if t.state == TrialState.COMPLETE]


def test_scontrol_requeue_resumes_the_trial(tiny_bert_dir, tmp_path, job_env):
    spec = _spec(tiny_bert_dir, tmp_path, steps=600, every=25, time_min=10)
    proc = _start(spec, tmp_path)
    job, deadline = None, time.time() + 240
    while job is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.3)
        try:
            running = [t for t in _trials(spec) if t.state == TrialState.RUNNING]
        except Exception:  # the store or study is not there yet
            continue
        if running and "checkpoint" in running[0].user_attrs:
            job = running[0].user_attrs["worker"].split(":")[1]
    if job is None:
        proc.kill()
        pytest.fail("no checkpoint before the deadline: " + proc.communicate()[1][-2000:])
    subprocess.run(["scontrol", "requeue", job], check=True)
    stdout, stderr = proc.communicate(timeout=420)
    assert proc.returncode == 0, stderr[-2000:]
    steps, done = _stops(spec)
    print(f"scontrol requeue: stopped at step(s) {steps}, resumed from "
          f"{[t.user_attrs['resumed_from_step'] for t in done]}")
    assert len(steps) == 1 and steps[0] > 0
    assert len(done) == 1  # exactly once
    assert done[0].user_attrs["resumed_from_step"] == steps[0] and done[0].user_attrs["resumes"] == 1
    assert done[0].user_attrs["steps"] == 600 and done[0].user_attrs["retry"] == 1
    assert done[0].user_attrs["attempt"] == 0  # a stop does not use the retry budget
    assert not list((tmp_path / "out" / "runs").rglob("*.pt"))  # the checkpoint went with completion


def test_time_limit_requeues_until_the_trial_completes(tiny_bert_dir, tmp_path, job_env):
    # A 2-minute limit with SIGUSR2 30 s before it, which SLURM may send up to 60 s early: the
    # signal comes 30-90 s into a task. The trial is paced to ~90 s of training (900 steps of at
    # least 0.1 s), so the first task is always stopped mid-trial on any machine, and every
    # requeued task makes >= 20 s of progress: it completes within max_num_timeout requeues.
    job_env.setenv("LORASWEEP_TRIAL_FUNCTION", "helpers:paced_trial")
    job_env.setenv("LORASWEEP_TEST_STEP_S", "0.1")
    job_env.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    spec = _spec(tiny_bert_dir, tmp_path, steps=900, every=50, time_min=2,
                 signal_delay_s=30, max_num_timeout=4)
    proc = _start(spec, tmp_path)
    stdout, stderr = proc.communicate(timeout=1200)  # each requeue waits ~2.5 min pending
    assert proc.returncode == 0, stderr[-2000:]
    steps, done = _stops(spec)
    reasons = [t.user_attrs["fail_reason"] for t in _trials(spec) if t.state == TrialState.FAIL]
    assert all(r.startswith("stopped by SIGUSR2") for r in reasons), reasons  # the time limit's
    print(f"time limit: stopped at steps {steps}, completed resumed from "
          f"{[t.user_attrs['resumed_from_step'] for t in done]}")
    assert steps and steps[0] > 0 and steps == sorted(steps) and len(set(steps)) == len(steps)
    assert len(done) == 1
    assert done[0].user_attrs["resumed_from_step"] == steps[-1]
    assert done[0].user_attrs["resumes"] == len(steps) and done[0].user_attrs["attempt"] == 0

