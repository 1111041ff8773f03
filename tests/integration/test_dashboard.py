"""optuna-dashboard's own app, called in-process on a real sweep's store, shows what a user needs:
the objective's name, each trial's intermediate values (ending at its final evaluation), and a
sortable ``final_loss`` even with a diverged trial (its non-finite loss omitted, not null)."""

from __future__ import annotations

import io
import json
import math
import shlex

import optuna
import pytest
from helpers import require

from lorasweep.config import SweepSpec, TrainConfig, VariantSpec
from lorasweep.launch.run import run_sweep
from lorasweep.sweep.store import open_storage
from lorasweep.sweep.urls import dashboard_command

dashboard = require("optuna_dashboard")  # the dev extra: skipped where missing, failed in CI

STEPS, EVAL_EVERY = 4, 2


def _get(app, path: str):
    from wsgiref.util import setup_testing_defaults

    environ: dict = {"PATH_INFO": path, "REQUEST_METHOD": "GET", "wsgi.input": io.BytesIO()}
    setup_testing_defaults(environ)
    status = []
    body = b"".join(app(environ, lambda s, headers, exc=None: status.append(s)))
    assert status[0].startswith("200"), (status, body[:300])
    return json.loads(body)


@pytest.fixture(scope="module")
def swept(tiny_bert_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dashboard")
    spec = SweepSpec(
        name="dash", model=str(tiny_bert_dir), task="sentiment", launcher="inline",
        # scaled by 1e15 / 4, the adapter's first update at 1e3 overflows: a non-finite loss
        variants=[VariantSpec("lora", rank=4, alpha=1e15)], lrs=[1e-10, 1e3], seeds=[0],
        train=TrainConfig(steps=STEPS, batch_size=8, max_length=32, eval_every=EVAL_EVERY,
                          max_grad_norm=0),
        task_options={"eval_limit": 8}, storage=f"sqlite:///{tmp / 's.db'}",
        runs_dir=str(tmp / "runs"), allow_any_lr=True)
    outcome = run_sweep(spec)
    assert outcome.summary.completed == 2 and outcome.summary.diverged == 1
    return spec


def test_the_dashboard_names_the_objective_and_plots_every_trial(swept):
    storage = open_storage(swept.storage, create=False)
    app = dashboard.wsgi(storage)
    (summary,) = _get(app, "/api/studies")["study_summaries"]
    study = _get(app, f"/api/studies/{summary['study_id']}")
    assert study["objective_names"] == ["validation_accuracy"]
    assert study["has_intermediate_values"]
    attrs = {a["key"]: a["sortable"] for a in study["union_user_attrs"]}
    assert attrs["final_loss"] and attrs["validation_accuracy"] and attrs["test_accuracy"]
    by_lr = {p["param_internal_value"]: t for t in study["trials"] for p in t["params"]
             if p["name"] == "lr"}
    diverged, learned = by_lr[1e3], by_lr[1e-10]
    user = {a["key"]: a["value"] for a in diverged["user_attrs"]}
    assert user["diverged"] == "True" and "final_loss" not in user  # omitted, never null
    steps = [v["step"] for v in learned["intermediate_values"]]
    assert steps == [EVAL_EVERY, STEPS]  # the periodic evaluation, then the final one
    final = [v for v in learned["intermediate_values"] if v["step"] == STEPS][0]["value"]
    assert float(final) == pytest.approx(learned["values"][0])
    assert not any(isinstance(v, float) and math.isnan(v) for v in user.values())


def test_status_prints_the_dashboard_command_that_opens_the_store(swept):
    from typer.testing import CliRunner

    from lorasweep.cli import app

    out = CliRunner().invoke(app, ["status", "--storage", swept.storage])
    assert out.exit_code == 0, out.output
    command = dashboard_command(swept.storage)
    assert command in " ".join(out.output.split())
    argv = shlex.split(command)
    assert argv[0] == "optuna-dashboard"
    # the dashboard's own reading of that argument opens this store
    from optuna_dashboard._storage_url import get_storage

    names = optuna.get_all_study_names(get_storage(argv[1]))
    assert names == optuna.get_all_study_names(open_storage(swept.storage, create=False))


def test_the_command_for_a_journal_and_a_server(tmp_path):
    journal = tmp_path / "s.journal"
    open_storage(f"journal:{journal}")
    assert dashboard_command(f"journal:{journal}") == f"optuna-dashboard {journal}"
    from optuna_dashboard._storage_url import get_storage

    assert get_storage(str(journal)) is not None  # a bare path: optuna-dashboard's journal form
    command = dashboard_command("postgresql+psycopg://me:s3cr3t@db.example:5432/sweeps")
    assert command == "PGPASSWORD=... optuna-dashboard postgresql+psycopg://me@db.example:5432/sweeps"
