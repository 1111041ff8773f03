"""Tasks from the user's own package, through the real CLI on the local launcher: the worker
processes import the class the study recorded (``module:Class``, or an entry point's target).

The package is tests/plugins/reviews_pkg; its entry points come from a real ``.dist-info`` in a
folder on the subprocesses' ``PYTHONPATH`` (nothing is installed into the environment).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna
import pytest
from helpers import PLUGINS, install_plugins
from optuna.trial import TrialState

from lorasweep.sweep.study import trial_template

REPO = Path(__file__).resolve().parents[2]
REF = "reviews_pkg.tasks:ReviewTask"


def _cli(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    path = os.pathsep.join([str(REPO), str(PLUGINS), str(site)])
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "lorasweep", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def _run_args(task: str, model: Path, store: str, sweep: str) -> list[str]:
    return ["run", "--task", task, "--model", str(model), "--variant", "lora", "--lrs", "1e-3",
            "--steps", "1", "--batch-size", "4", "--launcher", "local", "--workers", "1",
            "--storage", store, "--sweep", sweep]


@pytest.fixture(scope="module")
def swept(tiny_bert_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("plugins")
    site = install_plugins(root / "site")
    store = f"sqlite:///{root / 'studies.db'}"
    runs = {"by-path": REF, "by-entry-point": "reviews"}
    with ThreadPoolExecutor(len(runs)) as pool:
        done = dict(zip(runs, pool.map(
            lambda item: _cli(site, root, *_run_args(item[1], tiny_bert_dir, store, item[0])),
            runs.items()), strict=True))
    return root, site, store, done


@pytest.mark.parametrize(("sweep", "key"), [("by-path", REF), ("by-entry-point", "reviews")])
def test_a_plugin_task_runs_in_local_worker_processes(swept, sweep, key):
    root, _, store, done = swept
    proc = done[sweep]
    assert proc.returncode == 0, proc.stderr
    study = next(s for s in optuna.get_all_study_summaries(store) if s.study_name.startswith(sweep))
    loaded = optuna.load_study(study_name=study.study_name, storage=store)
    trials = loaded.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE]
    assert loaded.user_attrs["task"] == key
    assert trial_template(loaded.user_attrs)["task_class"] == REF  # what every worker imports
    configs = [json.loads(p.read_text()) for p in root.rglob("config.json")]
    ran = [c for c in configs if c.get("sweep") == sweep]
    assert [c["task_class"] for c in ran] == [REF]  # the worker process's own spec


def test_tasks_lists_plugins_and_marks_the_broken_ones(swept):
    root, site, _, _ = swept
    proc = _cli(site, root, "tasks", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["key"]: r for r in json.loads(proc.stdout)}
    assert rows["reviews"]["summary"].startswith(f"plugin {REF}")
    assert rows["broken"]["summary"].startswith("BROKEN plugin") and "RuntimeError" in rows[
        "broken"]["summary"]
    assert "shadows a built-in" in rows["sentiment (plugin)"]["summary"]


@pytest.mark.parametrize(("task", "words"), [
    ("broken", "cannot import plugin 'broken' (reviews_broken:Task) (RuntimeError"),
    ("reviews_pkg.tasks:NotATask", "reviews_pkg.tasks:NotATask is not a lorasweep Task"),
    ("reviews_pkg.tasks:Shadow", "which shadows a built-in task"),
    ("no_such_pkg:Task", "cannot import no_such_pkg:Task (ModuleNotFoundError"),
])
def test_a_plugin_that_gives_no_task_is_one_line_exit_2_and_the_store_unchanged(
        swept, tiny_bert_dir, task, words):
    root, site, store, done = swept
    assert done["by-path"].returncode == 0  # the store holds trials
    db = root / "studies.db"
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    proc = _cli(site, root, *_run_args(task, tiny_bert_dir, store, "bad"))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], proc.stderr
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
