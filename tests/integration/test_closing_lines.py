"""The words a run and its workers close with: an adaptive search's cost as a share of the
grid's training, learning rates in the one short form, a worker's counts without a repr, and
ratios of learning rates without exponent notation."""

from __future__ import annotations

import re

import optuna
from helpers import adaptive_default_sweep

from lorasweep.launch.run import SweepOutcome, spent_text
from lorasweep.report._format import times
from lorasweep.sweep.study import GridSync
from lorasweep.sweep.worker import WorkerSummary


def test_an_adaptive_search_closes_with_its_share_of_the_grid(tmp_path):
    url = adaptive_default_sweep(tmp_path)
    syncs = [GridSync(study=name, variant=name.rsplit("|", 1)[-1])
             for name in sorted(optuna.get_all_study_names(url))]
    lines = SweepOutcome(url, syncs, WorkerSummary()).search_lines()
    heads = [line for line in lines if not line.startswith("  note:")]
    assert len(heads) == 3, lines
    for line in heads:
        assert re.fullmatch(r"\S+: best lr=(1e-2|3e-3); \d\d% of the grid's training", line), line
    assert not any("full trials" in line or "=0.0" in line for line in lines), lines
    state = optuna.load_study(study_name=syncs[0].study, storage=url).user_attrs["search_state"]
    assert heads[0].endswith(f"{round(100 * state['spent'] / state['grid'])}% of the grid's training")


def test_closing_words():
    assert spent_text(2.8, 7) == "40% of the grid's training"
    summary = WorkerSummary(completed=3, failed=1, diverged=1, stopped={"s|lora": "OSError: x"})
    assert str(summary) == ("3 completed (1 diverged), 1 failed attempt, 0 pruned; "
                            "stopped s|lora: OSError: x")
    assert "WorkerSummary(" not in f"worker 0 done: {WorkerSummary()}"
    assert [times(v) for v in (1000.0, 3.0, 0.3, 1e-3, 1e-4, None)] == [
        "1000x", "3x", "0.3x", "0.001x", "1/10000x", "-"]


def test_status_says_rungs_are_trials_and_its_json_has_the_slurm_jobs(tmp_path):
    import json

    from test_report_readonly import _cli

    url = adaptive_default_sweep(tmp_path)
    names = sorted(optuna.get_all_study_names(url))
    job = {"job": "424242", "tasks": 2, "folder": str(tmp_path / "slurm")}
    optuna.load_study(study_name=names[0], storage=url).set_user_attr("slurm_jobs", [job])
    status = _cli("status", "--storage", url, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "is a trial of its own" in " ".join(status.stdout.split())
    assert "424242" in status.stdout  # the table of SLURM jobs
    as_json = _cli("status", "--storage", url, "--json", cwd=tmp_path)
    assert as_json.returncode == 0, as_json.stderr
    studies = json.loads(as_json.stdout)
    assert {s["search"] for s in studies} == {"adaptive"} and len(studies) == 3
    for s in studies:  # the job is the sweep's: every study of the sweep lists it
        (listed,) = s["slurm_jobs"]
        assert (listed["sweep"], listed["job"], listed["tasks"]) == ("default", "424242", 2)
        assert listed["states"]  # sacct's states, or UNKNOWN where there is no accounting
