"""Small things people look for: --version, defaults in help, tables that print text as written."""

from __future__ import annotations

import re

from typer.testing import CliRunner

import lorasweep
from lorasweep.cli import app
from lorasweep.config import SweepSpec
from lorasweep.paths import STORE_FILE
from lorasweep.tasks import task_registry
from lorasweep.text import format_lrs
from lorasweep.variants import list_variants

runner = CliRunner()


def _ok(*args: str) -> str:
    result = runner.invoke(app, list(args), terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.output


def test_version():
    assert _ok("--version").strip() == f"lorasweep {lorasweep.__version__}"


def test_run_help_shows_the_defaults_and_no_bool_types():
    text = " ".join(_ok("run", "--help").split())  # help wraps lines: compare on words
    default = SweepSpec()
    task = task_registry()[default.task]  # what --help shows are the default task's own
    assert f"[default: ({default.task})]" in text
    assert f"{task.default_model} for {default.task}" in text
    assert f"{format_lrs(task.default_lrs)} for {default.task}" in text
    assert f"{task.default_train['steps']} for {default.task}" in text
    assert f"{','.join(task.default_variants)} for {default.task}" in text
    assert f"{task.default_search} for {default.task}" in text
    assert f"({STORE_FILE})" in text
    for args in (["--help"], ["run", "--help"], ["status", "--help"], ["variants", "--help"],
                 ["delete", "--help"]):
        assert "<bool>" not in _ok(*args)


def test_variants_table_prints_every_summary_as_written():
    """aurora's summary has a bracketed formula that rich would read as markup."""
    text = _ok("variants")
    flat = re.sub(r"[│\s]+", " ", text)
    for entry in list_variants():
        words = " ".join(entry["summary"].split())
        # the table may wrap a long summary; every word and bracket must still be there
        assert all(w in flat for w in words.split()), entry["key"]
    aurora = next(e for e in list_variants() if e["key"] == "aurora")["summary"]
    assert "[tanh(" in aurora and "[tanh(" in text


def test_where_results_went_prints_names_and_paths_as_written(capsys):
    from lorasweep.cli.run import print_where

    print_where(SweepSpec(name="try[bold]1", runs_dir="out[red]/runs"))
    text = capsys.readouterr().out
    assert f"study store {STORE_FILE}; trial folders out[red]/runs/try[bold]1/" in text
    assert "next: lorasweep report --sweep try[bold]1" in text


def test_the_fail_fast_line_reads_as_one_sentence_whatever_the_reason_ends_with():
    from lorasweep.cli.run import stopped_line

    line = stopped_line("s|t|m|lora", "ValueError: accelerate is required `pip install x`.")
    assert ".;" not in line and "`pip install x`; stopped it" in line
