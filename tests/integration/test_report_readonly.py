"""`status` and `report` through the real CLI (in process, Typer's runner) never write to the
store; unknown sweeps and empty stores are one-line errors (exit 2); a store with only failed
trials gives a report that says so."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest

from lorasweep.config import SweepSpec, VariantSpec
from lorasweep.sweep.store import open_storage
from lorasweep.sweep.study import study_name, sync_sweep


def _cli(*args: str, cwd: Path) -> SimpleNamespace:
    from typer.testing import CliRunner

    from lorasweep.cli import app

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        result = CliRunner().invoke(app, list(args))
    return SimpleNamespace(returncode=result.exit_code, stdout=result.stdout,
                           stderr=result.stderr)


def _one_line_error(proc: SimpleNamespace, *words: str) -> None:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    for word in words:
        assert word in lines[0]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("command", ["status", "report"])
def test_an_empty_sqlite_file_stays_empty(tmp_path, command):
    empty = tmp_path / "empty.db"
    empty.touch()
    proc = _cli(command, "--storage", f"sqlite:///{empty}", cwd=tmp_path)
    _one_line_error(proc, "no study store")
    assert empty.stat().st_size == 0  # no schema written


@pytest.mark.parametrize("command", ["status", "report"])
def test_a_missing_journal_file_is_not_created(tmp_path, command):
    journal = tmp_path / "studies.journal"
    proc = _cli(command, "--storage", f"journal:{journal}", cwd=tmp_path)
    _one_line_error(proc, "no journal file")
    assert not journal.exists()


@pytest.fixture(scope="module")
def failed_store(tmp_path_factory) -> Path:
    """A real store whose only trials failed."""
    tmp = tmp_path_factory.mktemp("ro")
    db = tmp / "s.db"
    url = f"sqlite:///{db}"
    spec = SweepSpec(name="broken", variants=[VariantSpec("lora")], lrs=[1e-4, 1e-3], seeds=[0],
                     storage=url)
    storage = open_storage(url)
    sync_sweep(spec, storage)
    study = optuna.load_study(study_name=study_name(spec, spec.variants[0]), storage=storage)
    for _ in range(2):
        trial = study.ask()
        trial.set_user_attr("fail_reason", "RuntimeError: CUDA out of memory")
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return db


def test_status_and_report_leave_the_store_untouched(failed_store, tmp_path):
    before = _digest(failed_store)
    url = f"sqlite:///{failed_store}"
    status = _cli("status", "--storage", url, "--json", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert [s["failed"] for s in json.loads(status.stdout)] == [2]
    report = _cli("report", "--storage", url, "--out", "rep", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert _digest(failed_store) == before
    assert not list(failed_store.parent.glob("s.db-*"))  # no journal or WAL left behind


def test_only_failed_trials_give_a_report_that_says_so(failed_store, tmp_path):
    report = _cli("report", "--storage", f"sqlite:///{failed_store}", "--out", "rep", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert "2 failed" in report.stdout
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "No completed trials yet: 2 failed" in md and "CUDA out of memory" in md
    assert ".png" not in md and not (tmp_path / "rep" / "curves.png").exists()
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "No completed trials yet" in html and "<img" not in html


@pytest.mark.parametrize("command", ["status", "report"])
def test_an_unknown_sweep_is_one_line(failed_store, tmp_path, command):
    proc = _cli(command, "--storage", f"sqlite:///{failed_store}", "--sweep", "nope", cwd=tmp_path)
    _one_line_error(proc, "'nope'")


@pytest.mark.parametrize("tolerance", ["-0.1", "1.5"])
def test_a_band_tolerance_that_is_not_a_fraction_is_one_line_error(failed_store, tmp_path,
                                                                    tolerance):
    before = _digest(failed_store)
    proc = _cli("report", "--storage", f"sqlite:///{failed_store}", "--band-tolerance", tolerance,
                "--out", str(tmp_path / "out"), cwd=tmp_path)
    _one_line_error(proc, "--band-tolerance", "from 0 to 1")
    assert _digest(failed_store) == before
    assert not (tmp_path / "out").exists()
