"""A run checks its input once and loads each task's data once: ``lorasweep run`` checks the spec
(``check_spec``, each task's ``check_available`` included) and ``run_sweep(checked=True)`` trusts
it; the preflight loads the data, and the in-process worker's trials take that copy from the
worker cache instead of checking and loading it again."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from lorasweep.cli import app
from lorasweep.tasks import base as task_base
from lorasweep.tasks.sentiment import Sentiment


class _Counted(Sentiment):
    """The embedded task, counting its availability checks and data loads."""

    key = "counted"
    checks = 0
    loads = 0

    def check_available(self) -> None:
        type(self).checks += 1
        super().check_available()

    def load(self):
        type(self).loads += 1
        return super().load()


@pytest.fixture
def counted(monkeypatch):
    monkeypatch.setitem(task_base._REGISTRY, "counted", _Counted)
    monkeypatch.setattr(_Counted, "checks", 0)
    monkeypatch.setattr(_Counted, "loads", 0)
    return _Counted


@pytest.mark.parametrize("lrs", ["1e-3", "1e-3,1e-2"])
def test_a_cli_run_checks_its_task_once_and_loads_its_data_once(counted, lrs, tiny_bert_dir,
                                                                 tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trials = len(lrs.split(","))
    result = CliRunner().invoke(app, [
        "run", "--task", "counted", "--model", str(tiny_bert_dir), "--variant", "lora",
        "--search", "grid", "--lrs", lrs, "--steps", "1", "--batch-size", "4",
        "--launcher", "inline",  # the in-process worker, whose trials share the preflight's data
        "--storage", f"sqlite:///{tmp_path / 's.db'}",
        # options of their own per case: no data another test left in the worker cache fits
        "--set", f"task.eval_limit={6 + trials}", "--set", "train.max_length=32"])
    assert result.exit_code == 0, result.output
    assert f"done: {trials} completed" in result.output
    # One check, before anything runs: run_sweep trusts it, the preflight loads without checking
    # again, and a trial checks only data it has to load (a worker on another machine checks
    # that machine); before, the CLI, run_sweep, the preflight and each trial checked.
    assert counted.checks == 1
    # The preflight's load is the only one: the trials found it in the worker cache.
    assert counted.loads == 1
