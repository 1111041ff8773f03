"""Two whole ``lorasweep run`` processes on one sweep at once, on the local launcher.

Each run is the real CLI in its own process; a small wrapper holds each one until a shared
start file appears (the barrier), so both open the store, sync the grid and start their workers
together. Trials are the scheduling stand-in (tests/helpers.py); the CLI, the preflight, the
worker processes, the SQLite store and its locks are real.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
from optuna.trial import TrialState

from lorasweep.sweep.store import open_storage

LRS = [round(1e-4 * 1.5**i, 10) for i in range(10)]  # 10 grid points, one seed

#: Waits for the start file, then runs the CLI in this very process (as ``lorasweep run`` does).
_AT_THE_BARRIER = """
import os, sys, time
start = sys.argv[1]
print("ready", flush=True)
while not os.path.exists(start):
    time.sleep(0.005)
sys.argv = ["lorasweep", *sys.argv[2:]]
from lorasweep.cli import main
main()
"""


def _runs_together(folder: Path, url: str, runs: int = 2, trial_s: str = "0.3",
                   workers: int = 1) -> list[str]:
    """``runs`` CLI runs of one sweep released at the same instant; returns their stdouts."""
    tests = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (os.getcwd(), tests,
                                                                  os.environ.get("PYTHONPATH")) if p),
           "LORASWEEP_TRIAL_FUNCTION": "helpers:standin_trial", "LORASWEEP_TEST_TRIAL_S": trial_s,
           "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    start = folder / "start"
    args = ["run", "--variant", "lora", "--lrs", ",".join(map(str, LRS)), "--search", "grid",
            "--steps", "1", "--sweep", "twin", "--storage", url, "--launcher", "local",
            "--workers", str(workers)]
    procs = [subprocess.Popen([sys.executable, "-c", _AT_THE_BARRIER, str(start), *args],
                              cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(runs)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready", p.stderr.read()[-3000:]
    time.sleep(0.2)  # both poll the start file now
    start.touch()  # the barrier: released together
    outs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, (stdout[-3000:], stderr[-3000:])
        outs.append(stdout)
    return outs


def _completed(stdout: str) -> int:
    """The ``N completed`` of a run's closing line (``done: N completed (...)``)."""
    (count,) = re.findall(r"^done: (\d+) completed", stdout, flags=re.MULTILINE)
    return int(count)


def _trials(url: str) -> list:
    storage = open_storage(url, create=False)
    (name,) = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def _points(url: str) -> Counter:
    return Counter(t.user_attrs["grid_point"] for t in _trials(url) if t.state == TrialState.COMPLETE)


def test_each_run_counts_only_its_own_trials(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    outs = _runs_together(tmp_path, url)
    points = _points(url)
    assert len(points) == len(LRS) and set(points.values()) == {1}
    counts = [_completed(out) for out in outs]
    # each run's closing line counts its own workers' trials: together, the grid once
    assert sum(counts) == len(LRS), (counts, outs)


def test_two_whole_runs_released_together_complete_each_point_once(tmp_path):
    """Repeated, each round on a store neither run created yet: both create it, sync the same
    grid and pop its trials at the same instant."""
    for i in range(3):
        folder = tmp_path / f"round{i}"
        folder.mkdir()
        url = f"sqlite:///{folder / 's.db'}"
        outs = _runs_together(folder, url, trial_s="0.05", workers=2)
        trials = _trials(url)
        points = _points(url)
        assert len(points) == len(LRS) and set(points.values()) == {1}, (i, points)
        # no second trial of any point: nothing enqueued twice, nothing failed and retried
        assert Counter(t.state for t in trials) == Counter({TrialState.COMPLETE: len(LRS)}), i
        assert sum(_completed(out) for out in outs) == len(LRS), (i, outs)
