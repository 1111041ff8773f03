"""The SLURM launcher against a real single-node cluster (scripts/slurm-local.sh, with accounting).

These tests are about scheduling, so the trials are a stand-in function (tests/helpers.py) that
sleeps in steps: the array tasks, the store, heartbeats, cancellation and retries are all real.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from lorasweep.cli import app
from lorasweep.config import SweepSpec, TrainConfig, VariantSpec
from lorasweep.launch.jobs import job_states
from lorasweep.launch.run import run_sweep
from lorasweep.sweep.store import open_storage
from lorasweep.sweep.study import grid_point, study_name

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
SECRET = "s3cret-Token-9"  # the PostgreSQL test server trusts every password: this one is a marker


@pytest.fixture
def job_env(monkeypatch, slurm_cluster, tmp_path):
    """What array tasks inherit from this process (sbatch exports the environment); a home
    folder of the test's own, so the launcher's private URL files stay out of the real one."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), str(TESTS)]))
    monkeypatch.setenv("LORASWEEP_TRIAL_FUNCTION", "helpers:standin_trial")
    monkeypatch.setenv("LORASWEEP_HEARTBEAT_INTERVAL", "0.5")
    monkeypatch.setenv("LORASWEEP_HEARTBEAT_GRACE", "3")
    monkeypatch.setenv("LORASWEEP_TEST_TRIAL_S", "0.5")
    return monkeypatch


def _spec(tmp_path: Path, storage: str, **kw) -> SweepSpec:
    base = dict(name="cluster", model="embedded:minilm", task="sentiment",
                variants=[VariantSpec("lora", rank=4, alpha=8)], lrs=[1e-4, 1e-3, 1e-2],
                seeds=[0], train=TrainConfig(steps=10), storage=storage, launcher="slurm",
                runs_dir=str(tmp_path / "out" / "runs"))
    base.update(kw)
    return SweepSpec(**base)


def _trials(spec: SweepSpec) -> list:
    storage = open_storage(spec.storage, create=False)
    return optuna.load_study(study_name=study_name(spec, spec.variants[0]), storage=storage).get_trials()


def _completed(spec: SweepSpec) -> Counter:
    return Counter(t.user_attrs["grid_point"] for t in _trials(spec) if t.state == TrialState.COMPLETE)


def _scontrol(job: str) -> str:
    return subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout


def test_array_runs_the_grid_exactly_once_with_its_options(tmp_path, job_env, fresh_postgres_url):
    url = fresh_postgres_url.replace("postgres@", f"postgres:{SECRET}@")
    spec = _spec(tmp_path, url, lrs=[1e-5, 1e-4, 1e-3, 1e-2, 3e-2, 1e-1], seeds=[0, 1], workers=3,
                 launcher_options={"partition": "debug", "time_min": 7, "cpus_per_task": 1,
                                   "gpus_per_task": 0})
    outcome = run_sweep(spec)
    assert outcome.summary.completed == 12 and outcome.missing == 0
    assert len(outcome.jobs) == 1
    job = outcome.jobs[0]
    points = _completed(spec)
    assert len(points) == 12 and set(points.values()) == {1}
    workers = {t.user_attrs["worker"] for t in _trials(spec)}
    assert workers <= {f"slurm:{job}_{i}" for i in range(3)} and len(workers) >= 2
    deadline = time.time() + 60  # accounting records a task's end a moment after the task ends
    while job_states([job])[job] != Counter({"COMPLETED": 3}) and time.time() < deadline:
        time.sleep(1)
    assert job_states([job])[job] == Counter({"COMPLETED": 3})  # sacct: 3 array tasks
    shown = _scontrol(f"{job}_0")
    assert "Partition=debug" in shown and "TimeLimit=00:07:00" in shown and "CPUs/Task=1" in shown
    folder = tmp_path / "out" / "logs" / "slurm"  # default: logs/slurm beside the runs folder
    files = [p for p in folder.rglob("*") if p.is_file()]
    outs = [p.read_text() for p in sorted(files) if p.name.endswith("_log.out")]  # tasks 0, 1, 2
    assert len(outs) == 3  # each task sized its torch threads to its allocation, not the node
    assert all(f"array task {i}: 1 torch thread(s)" in out for i, out in enumerate(outs)), outs
    assert any(p.suffix == ".sh" for p in files) and any(p.suffix == ".pkl" for p in files)
    for path in files:  # job script, pickles, logs: the password is in none of them
        assert SECRET.encode() not in path.read_bytes(), path
    # the workers' private URL file went to this test's home folder, not the real one
    assert len(list((tmp_path / "home" / ".lorasweep" / "storage").glob("*.url"))) == 1


def test_adaptive_search_on_an_array_runs_each_rung_once(tmp_path, job_env):
    """Two array tasks share an adaptive search: each rung's trials run once, promotions resume
    the rung below (the stand-in records the step each point reached in its run folder), and
    the tasks end once the last rung is done."""
    from lorasweep.sweep.synthetic import SyntheticCurve

    job_env.setenv("LORASWEEP_TRIAL_FUNCTION", "helpers:synthetic_trial")
    job_env.setenv("LORASWEEP_TEST_TRIAL_S", "1")  # rung 0 outlasts an array task's start
    fine = [round(10 ** (-5 + 0.5 * k), 8) for k in range(10)]
    spec = _spec(tmp_path, f"journal:{tmp_path / 'sweep.journal'}", lrs=fine, workers=2,
                 search="adaptive", train=TrainConfig(steps=100),
                 launcher_options={"gpus_per_task": 0})
    outcome = run_sweep(spec)
    assert outcome.missing == 0 and outcome.summary.completed == 13
    trials = _trials(spec)
    assert all(t.state == TrialState.COMPLETE for t in trials)
    points = Counter(t.user_attrs["grid_point"] for t in trials)
    assert len(points) == 13 and set(points.values()) == {1}  # no rung of a point ran twice
    assert Counter(t.user_attrs["budget"] for t in trials) == {0.3: 10, 0.6: 2, 1.0: 1}
    for t in trials:  # a promotion starts where the point's rung below stopped
        below = {0.3: 0, 0.6: 30, 1.0: 60}[t.user_attrs["budget"]]
        assert t.user_attrs["resumed_from_step"] == below, t.user_attrs["grid_point"]
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both array tasks took trials
    study = optuna.load_study(study_name=study_name(spec, spec.variants[0]),
                              storage=open_storage(spec.storage, create=False))
    state = study.user_attrs["search_state"]
    curve = SyntheticCurve(peak=-2.5)
    assert state["finished"] and curve.mean(state["best_lr"]) >= max(map(curve.mean, fine)) - 0.01


def test_scancel_of_a_task_mid_trial_retries_its_point_in_the_same_run(tmp_path, job_env):
    job_env.setenv("LORASWEEP_TEST_TRIAL_S", "6")
    spec = _spec(tmp_path, f"journal:{tmp_path / 'sweep.journal'}", workers=2,
                 lrs=[1e-4, 1e-3], seeds=[0, 1], launcher_options={"gpus_per_task": 0})
    cmd = [sys.executable, "-m", "lorasweep", "run", "--launcher", "slurm", "--workers", "2",
           "--storage", spec.storage, "--sweep", spec.name, "--variant", "lora", "--rank", "4",
           "--alpha", "8", "--lrs", "1e-4,1e-3", "--seeds", "0,1", "--steps", "10",
           "--set", "launcher.gpus_per_task=0", "--set", f"runs_dir={spec.runs_dir}"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    lost = None
    deadline = time.time() + 180
    while lost is None and time.time() < deadline:  # a trial of array task 1 is running
        time.sleep(0.3)
        try:
            running = [t for t in _trials(spec) if t.state == TrialState.RUNNING]
        except Exception:  # the store is not there yet
            continue
        lost = next((t for t in running if t.user_attrs.get("worker", "").endswith("_1")), None)
    assert lost is not None, "array task 1 never ran a trial"
    job = lost.user_attrs["worker"].split(":")[1]
    subprocess.run(["scancel", job], check=True)
    cancelled_at = time.time()
    retried_at = None
    while retried_at is None and time.time() < deadline:
        time.sleep(0.2)
        again = [t for t in _trials(spec) if t.user_attrs.get("grid_point") ==
                 lost.user_attrs["grid_point"] and t.number != lost.number]
        if any(t.state in (TrialState.RUNNING, TrialState.COMPLETE) for t in again):
            retried_at = time.time()
    stdout, stderr = proc.communicate(timeout=300)
    assert retried_at is not None, stderr[-2000:]
    print(f"scancel -> lost point running again: {retried_at - cancelled_at:.1f} s")
    points = _completed(spec)
    assert len(points) == 4 and set(points.values()) == {1}
    states = {t.number: t.state for t in _trials(spec)}
    assert states[lost.number] == TrialState.FAIL
    assert proc.returncode == 1  # the dead array task is reported, in one line, with its log
    error = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and f"SLURM array task {job}" in error[0] and "CANCELLED" in error[0]
    assert "_log.err" in error[0] and "Traceback" not in stderr


def test_detach_then_status_then_cancel(tmp_path, job_env):
    job_env.setenv("LORASWEEP_TEST_TRIAL_S", "30")
    storage = f"journal:{tmp_path / 'sweep.journal'}"
    runs = str(tmp_path / "out" / "runs")
    runner = CliRunner()
    submitted = runner.invoke(app, [
        "run", "--launcher", "slurm", "--workers", "1", "--detach", "--storage", storage,
        "--sweep", "bg", "--lrs", "1e-4,1e-3", "--steps", "10", "--set", "launcher.gpus_per_task=0",
        "--set", f"runs_dir={runs}"])
    assert submitted.exit_code == 0, submitted.output
    assert "submitted SLURM job" in submitted.output and "lorasweep cancel --sweep bg" in submitted.output
    spec = _spec(tmp_path, storage, name="bg", variants=[VariantSpec("lora")], lrs=[1e-4, 1e-3])
    deadline = time.time() + 120
    while not any(t.state == TrialState.RUNNING for t in _trials(spec)):
        assert time.time() < deadline, "the detached job never started a trial"
        time.sleep(0.3)
    status = runner.invoke(app, ["status", "--sweep", "bg", "--storage", storage])
    assert status.exit_code == 0 and "SLURM jobs" in status.output and "running" in status.output
    cancelled = runner.invoke(app, ["cancel", "--sweep", "bg", "--storage", storage])
    assert cancelled.exit_code == 0, cancelled.output
    assert "1 running trial back to waiting" in cancelled.output
    trials = _trials(spec)
    freed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(freed) == 1 and freed[0].user_attrs["fail_reason"] == "cancelled"
    waiting = Counter(t.user_attrs["grid_point"] for t in trials if t.state == TrialState.WAITING)
    assert waiting == Counter({grid_point(1e-4, 0): 1, grid_point(1e-3, 0): 1})
    job = cancelled.output.split("SLURM job ")[1].split(";")[0]
    while "CANCELLED" not in job_states([job])[job]:  # accounting sees the cancellation
        assert time.time() < deadline + 60
        time.sleep(0.5)


def test_finished_tasks_leave_instead_of_holding_their_allocation(tmp_path, job_env):
    """Three array tasks, five points, one of them long: the tasks whose queue ran dry leave
    (their logs say so) and end, in accounting, before the long trial does; the run completes
    every point once."""
    job_env.setenv("LORASWEEP_TEST_TRIAL_S", "0.5")
    job_env.setenv("LORASWEEP_TEST_LONG_LR", "0.01")
    job_env.setenv("LORASWEEP_TEST_LONG_S", "12")
    spec = _spec(tmp_path, f"journal:{tmp_path / 'sweep.journal'}", workers=3,
                 lrs=[1e-4, 3e-4, 1e-3, 3e-3, 1e-2], launcher_options={"gpus_per_task": 0})
    run_sweep(spec)
    points = _completed(spec)
    assert len(points) == 5 and set(points.values()) == {1}
    long = next(t for t in _trials(spec) if t.params["lr"] == 1e-2 and t.state == TrialState.COMPLETE)
    storage = open_storage(spec.storage, create=False)
    study = optuna.load_study(study_name=study_name(spec, spec.variants[0]), storage=storage)
    job = study.user_attrs["slurm_jobs"][-1]["job"]
    for _ in range(60):  # accounting records a task's end a moment after it exits
        out = subprocess.run(["sacct", "-j", job, "-X", "-n", "-P", "-o", "JobID,State,End"],
                             capture_output=True, text=True).stdout
        if out.strip() and "RUNNING" not in out and "PENDING" not in out:
            break
        time.sleep(1)
    ends = {line.split("|")[0]: line.split("|")[2] for line in out.splitlines() if line.strip()}
    assert len(ends) == 3, out
    long_task = long.user_attrs["worker"].split(":")[1]
    others = [end for task, end in ends.items() if task != long_task]
    finished = long.datetime_complete.strftime("%Y-%m-%dT%H:%M:%S")
    assert len(others) == 2 and all(end < finished for end in others), (ends, finished)
    logs = [p.read_text() for p in (tmp_path / "out" / "logs" / "slurm").rglob("*_log.out")]
    assert sum("nothing waits that this worker could run: leaving" in log for log in logs) >= 2


def test_a_trial_lost_with_every_task_is_run_by_a_task_submitted_for_it(tmp_path, job_env):
    """Both array tasks are killed (SIGKILL: no handler records anything) while each runs a
    trial: with no task left, the watching run fails the lost trials once their heartbeat's
    grace has passed, enqueues their points again and submits new array tasks, which complete
    them. Every point completes once; the dead tasks are reported."""
    job_env.setenv("LORASWEEP_TEST_TRIAL_S", "6")
    spec = _spec(tmp_path, f"journal:{tmp_path / 'sweep.journal'}", workers=2, lrs=[1e-4, 1e-3])
    cmd = [sys.executable, "-m", "lorasweep", "run", "--launcher", "slurm", "--workers", "2",
           "--storage", spec.storage, "--sweep", spec.name, "--variant", "lora", "--rank", "4",
           "--alpha", "8", "--lrs", "1e-4,1e-3", "--seeds", "0", "--steps", "10",
           "--set", "launcher.gpus_per_task=0", "--set", f"runs_dir={spec.runs_dir}"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    running: list = []
    deadline = time.time() + 120
    while len(running) < 2 and time.time() < deadline:  # each task runs one of the two points
        time.sleep(0.3)
        try:
            running = [t for t in _trials(spec) if t.state == TrialState.RUNNING]
        except Exception:  # the store is not there yet
            continue
    assert len(running) == 2, "the two array tasks never ran a trial each"
    first = running[0].user_attrs["worker"].split(":")[1].split("_")[0]
    subprocess.run(["scancel", "--signal=KILL", "--full", first], check=True)
    stdout, stderr = proc.communicate(timeout=240)
    assert "left after every array task ended (a lost trial): submitting 2 array task(s)" in \
        stdout, (stdout[-2000:], stderr[-2000:])
    storage = open_storage(spec.storage, create=False)
    study = optuna.load_study(study_name=study_name(spec, spec.variants[0]), storage=storage)
    jobs = [j["job"] for j in study.user_attrs["slurm_jobs"]]
    assert len(jobs) == 2 and jobs[0] == first, jobs  # the first array, then the one for the lost
    trials = _trials(spec)
    lost = {t.number: t for t in trials if t.number in {r.number for r in running}}
    assert all(t.state == TrialState.FAIL for t in lost.values())  # failed once their grace passed
    points = _completed(spec)
    assert len(points) == 2 and set(points.values()) == {1}
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert all(t.user_attrs["worker"].startswith(f"slurm:{jobs[1]}_") for t in done)
    assert proc.returncode == 1  # the killed tasks are reported, in one line
    error = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and f"SLURM array task {first}_" in error[0], stderr[-2000:]
