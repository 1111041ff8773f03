"""lorasweep delete: removes one sweep's studies and run folders, asks first, refuses while running."""

from __future__ import annotations

import time

import optuna
import pytest
from typer.testing import CliRunner

from lorasweep.cli import app
from lorasweep.config import ConfigError, SweepSpec, VariantSpec
from lorasweep.sweep.delete import delete_sweep, plan_delete
from lorasweep.sweep.heartbeat import Heartbeat
from lorasweep.sweep.store import open_storage
from lorasweep.sweep.study import sync_sweep


@pytest.fixture
def store(tmp_path):
    """Two sweeps in one real SQLite store, each with trial folders on disk."""
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    runs = tmp_path / "runs"
    for name in ("a", "b"):
        spec = SweepSpec(name=name, variants=[VariantSpec("lora"), VariantSpec("dora")],
                         lrs=[1e-4, 1e-3], runs_dir=str(runs))
        sync_sweep(spec, open_storage(url))
        for tag in ("lora-r8-a16", "dora-r8-a16"):
            trial_dir = runs / name / tag / "trial-0000"
            trial_dir.mkdir(parents=True)
            (trial_dir / "metrics.json").write_text("{}")
    return url, runs


def _sweeps(url: str) -> set[str]:
    return {s.user_attrs["sweep"] for s in optuna.get_all_study_summaries(url)}


def test_delete_removes_only_that_sweep(store):
    url, runs = store
    plan = plan_delete(url, "a")
    assert len(plan.studies) == 2 and plan.trials == 4
    assert plan.folders == [(runs / "a").resolve()]
    delete_sweep(plan)
    assert _sweeps(url) == {"b"}
    assert not (runs / "a").exists()
    assert (runs / "b" / "lora-r8-a16" / "trial-0000" / "metrics.json").exists()


def test_delete_refuses_while_a_trial_runs(store):
    url, runs = store
    study = next(optuna.load_study(study_name=s.study_name, storage=url)
                 for s in optuna.get_all_study_summaries(url) if s.user_attrs["sweep"] == "a")
    trial = study.ask()  # pops a waiting grid point: RUNNING, with a live heartbeat
    Heartbeat(open_storage(url), trial._trial_id).beat()
    with pytest.raises(ConfigError, match="running trial"):
        plan_delete(url, "a")
    assert _sweeps(url) == {"a", "b"} and (runs / "a").exists()
    study.tell(trial, 0.5)
    delete_sweep(plan_delete(url, "a"))
    assert _sweeps(url) == {"b"}


def test_a_dead_workers_trial_does_not_block_delete(store, monkeypatch):
    url, _ = store
    monkeypatch.setenv("LORASWEEP_HEARTBEAT_GRACE", "1")
    study = next(optuna.load_study(study_name=s.study_name, storage=url)
                 for s in optuna.get_all_study_summaries(url) if s.user_attrs["sweep"] == "a")
    trial = study.ask()
    Heartbeat(open_storage(url), trial._trial_id).beat()  # then silent past the grace period
    time.sleep(2.2)
    delete_sweep(plan_delete(url, "a"))
    assert _sweeps(url) == {"b"}


def test_cli_asks_and_respects_no(store):
    url, runs = store
    runner = CliRunner()
    no = runner.invoke(app, ["delete", "--sweep", "a", "--storage", url], input="n\n")
    assert no.exit_code == 1 and "nothing deleted" in no.output
    assert "2 studies, 4 trials" in no.output and str((runs / "a").resolve()) in no.output
    assert _sweeps(url) == {"a", "b"} and (runs / "a").exists()
    yes = runner.invoke(app, ["delete", "--sweep", "a", "--storage", url], input="y\n")
    assert yes.exit_code == 0, yes.output
    assert _sweeps(url) == {"b"} and not (runs / "a").exists()
    scripted = runner.invoke(app, ["delete", "--sweep", "b", "--storage", url, "--yes"])
    assert scripted.exit_code == 0, scripted.output
    assert _sweeps(url) == set()


def test_cli_unknown_sweep_is_one_error_line(store):
    url, _ = store
    result = CliRunner().invoke(app, ["delete", "--sweep", "nope", "--storage", url, "--yes"])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no sweep named 'nope'" in errors[0]
    assert _sweeps(url) == {"a", "b"}
