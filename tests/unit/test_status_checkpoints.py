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
