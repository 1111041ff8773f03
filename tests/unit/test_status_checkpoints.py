"""`lorasweep status` shows each running trial's last checkpoint (step, age, size), read from a
real SQLite store where trials were popped and checkpointed as the worker records them."""

from __future__ import annotations

import json
import time

import optuna
from typer.testing import CliRunner

from lorasweep.cli import app
from lorasweep.config import SweepSpec, VariantSpec
from lorasweep.launch.run import check_spec
from lorasweep.sweep.status import study_status
from lorasweep.sweep.store import open_storage
from lorasweep.sweep.study import study_name, sync_sweep


def test_status_shows_last_checkpoint_of_running_trials(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    spec = check_spec(SweepSpec(name="ck", model="embedded:minilm", task="sentiment",
                     variants=[VariantSpec("lora")], lrs=[1e-4, 1e-3, 1e-2], seeds=[0],
                     storage=url))
    storage = open_storage(url)
    sync_sweep(spec, storage)
    study = optuna.load_study(study_name=study_name(spec, spec.variants[0]), storage=storage)
    saved, fresh = study.ask(), study.ask()  # two running trials; the third still waits
    saved.set_user_attr("checkpoint", {"step": 40, "bytes": 3 * 2**20, "seconds": 0.2,
                                       "time": time.time() - 125})

    (row,) = study_status(url, "ck")
    assert row["running"] == 2 and row["waiting"] == 1
    running = {t["trial"]: t for t in row["running_trials"]}
    assert running[saved.number]["checkpoint_step"] == 40
    assert 125 <= running[saved.number]["checkpoint_age_s"] < 185
    assert running[saved.number]["checkpoint_bytes"] == 3 * 2**20
    assert running[fresh.number]["checkpoint_step"] is None  # none written yet
    assert running[fresh.number]["grid_point"] == fresh.user_attrs["grid_point"]

    out = CliRunner().invoke(app, ["status", "--storage", url, "--sweep", "ck"],
                             terminal_width=200)
    assert out.exit_code == 0, out.output
    line = next(ln for ln in out.output.splitlines() if saved.user_attrs["grid_point"] in ln)
    assert "40" in line and "3.0 MB" in line and "m " in line and "ago" in line
    assert "running trials" in out.output
    as_json = CliRunner().invoke(app, ["status", "--storage", url, "--sweep", "ck", "--json"])
    assert json.loads(as_json.output)[0]["running_trials"][0]["trial"] == saved.number

    study.tell(saved, 0.5)
    study.tell(fresh, 0.5)
    out = CliRunner().invoke(app, ["status", "--storage", url, "--sweep", "ck"],
                             terminal_width=200)
    assert "running trials" not in out.output  # the table only while trials run


_WORKER = """
import sys
from lorasweep.sweep.worker import run_worker
run_worker(sys.argv[1], [sys.argv[2]])
"""


def test_a_trial_whose_worker_was_sigkilled_shows_as_lost(tmp_path, monkeypatch):
    """A real worker process beats its trial's heartbeat, then is SIGKILLed: its trial is still
    RUNNING in the store, and ``status`` calls it lost, with the time since its last beat."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    url = f"sqlite:///{tmp_path / 'studies.db'}"
    spec = check_spec(SweepSpec(name="gone", model="embedded:minilm", task="sentiment",
                                variants=[VariantSpec("lora")], lrs=[1e-3], seeds=[0], storage=url))
    sync_sweep(spec, open_storage(url))
    name = study_name(spec, spec.variants[0])
    tests = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), tests]),
           "LORASWEEP_TRIAL_FUNCTION": "helpers:standin_trial", "LORASWEEP_TEST_TRIAL_S": "600",
           "LORASWEEP_HEARTBEAT_INTERVAL": "0.2"}
    worker = subprocess.Popen([sys.executable, "-c", _WORKER, url, name], env=env)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:  # until the worker has popped and beaten its trial
            (row,) = study_status(url, "gone")
            trial = row["running_trials"][0] if row["running_trials"] else None
            if trial is not None and trial["heartbeat_age_s"] < 1:
                break
            time.sleep(0.2)
        assert trial is not None and not trial["lost"] and row["running"] == 1
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
    monkeypatch.setenv("LORASWEEP_HEARTBEAT_GRACE", "1")
    deadline = time.time() + 60
    while time.time() < deadline:  # the beat ages past the grace: no process beats it any more
        (row,) = study_status(url, "gone")
        if row["running_trials"][0]["lost"]:
            break
        time.sleep(0.2)
    assert row["lost"] == 1 and row["running"] == 0
    assert row["running_trials"][0]["heartbeat_age_s"] > 1
    out = CliRunner().invoke(app, ["status", "--storage", url, "--sweep", "gone"],
                             terminal_width=200)
    assert out.exit_code == 0, out.output
    line = next(ln for ln in out.output.splitlines() if row["running_trials"][0]["grid_point"] in ln)
    assert "lost (last heartbeat " in line and "ago)" in line and "running trials" in out.output
    header = next(ln for ln in out.output.splitlines() if "waiting" in ln)
    assert "running" in header and "lost" in header  # its own column beside running
    as_json = json.loads(CliRunner().invoke(app, ["status", "--storage", url, "--json"]).output)
    assert as_json[0]["lost"] == 1 and as_json[0]["running_trials"][0]["lost"] is True
