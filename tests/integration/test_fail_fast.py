"""Fail fast, once, with the reason: a setup error stops the study after its first trials.

A real tiny sweep whose variant targets no layer of the model fails in every trial the same way
(the model and data load; the error comes when the adapter is applied). Through the real CLI: each
failed trial prints its one-line reason, the study stops after the first two instead of running
every learning rate, one ``error:`` line says so, and the remaining grid point stays queued.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from lorasweep.sweep.worker import SAME_FAILURES_TO_STOP

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_setup_error_stops_the_study_after_its_first_trials(tiny_bert_dir, tmp_path, workers):
    """One worker (inline) stops after exactly its first two failures. Two worker processes
    stop the study together (a worker that stops it says so in the study, and the other leaves
    it): at most one more trial, the other worker's, already running, fails."""
    launch = ["--launcher", "inline"] if workers == 1 else ["--launcher", "local", "--workers", "2"]
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "CLICOLOR_FORCE")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    store = tmp_path / "s.db"
    command = [sys.executable, "-m", "lorasweep", "run", "--model", str(tiny_bert_dir),
               "--variant", "lora", "--lrs", "1e-4,1e-3,1e-2,1e-1", "--steps", "1",
               "--batch-size", "4", "--storage", f"sqlite:///{store}",
               "--set", "target_modules=nosuchlayer", "--set", "task.eval_limit=4",
               "--set", "train.max_length=16", *launch]
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "Traceback" not in out, out
    assert out.count("no linear layer matches target modules") >= SAME_FAILURES_TO_STOP, out
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "first trials all failed" in errors[0], out
    assert "next: lorasweep report" not in out, out  # nothing finished: nothing to report
    (summary,) = optuna.get_all_study_summaries(f"sqlite:///{store}")
    trials = optuna.load_study(study_name=summary.study_name,
                               storage=f"sqlite:///{store}").get_trials()
    failed = [t.user_attrs["grid_point"] for t in trials if t.state == TrialState.FAIL]
    waiting = [t.user_attrs["grid_point"] for t in trials if t.state == TrialState.WAITING]
    assert SAME_FAILURES_TO_STOP <= len(failed) <= SAME_FAILURES_TO_STOP + workers - 1
    assert len(set(failed)) == len(failed)
    assert len(waiting) == len(set(waiting))  # no grid point queued twice
    # The points that never ran stay queued (a failed point may be queued again for its retry).
    points = {t.user_attrs["grid_point"] for t in trials}
    assert len(points) == 4 and points - set(failed) <= set(waiting)
    assert len(trials) == len(failed) + len(waiting)  # nothing ran past the stop
    if workers > 1:
        return
    # Rerun without the fix: the study's trials, all workers' and earlier runs' together, have
    # failed alike and none finished, so its first new failure stops it (not two more).
    again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=600, stdin=subprocess.DEVNULL)
    assert again.returncode == 1 and "first trials all failed" in again.stderr, again.stderr
    after = optuna.load_study(study_name=summary.study_name,
                              storage=f"sqlite:///{store}").get_trials()
    assert sum(t.state == TrialState.FAIL for t in after) == len(failed) + 1
