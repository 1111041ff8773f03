"""The user's own data through the real CLI: a sweep of ``text-classification`` on a CSV, then
every bad input of the data as one line, exit 2, and the store (which holds trials) unchanged;
and a rerun of the sweep on changed data refused the same way."""

from __future__ import annotations

import csv
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna
import pytest
from helpers import lorasweep_cli, store_digest
from optuna.trial import TrialState

from lorasweep.sweep.study import trial_template

ROWS = [{"review": f"a {'fine' if i % 2 else 'dull'} film, take {i}",
         "sentiment": "pos" if i % 2 else "neg"} for i in range(40)]


def _csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _args(model: Path, dataset: str, *sets: str, sweep: str = "own") -> list[str]:
    out = ["run", "--task", "text-classification", "--dataset", dataset, "--model", str(model),
           "--variant", "lora", "--lrs", "1e-3", "--steps", "1", "--batch-size", "4",
           "--launcher", "inline", "--storage", "sqlite:///studies.db", "--sweep", sweep,
           "--set", "task.text=review", "--set", "task.label=sentiment",
           "--set", "train.max_length=16"]
    for assignment in sets:
        out += ["--set", assignment]
    return out


@pytest.fixture(scope="module")
def stored(tiny_bert_dir, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("own-data")
    _csv(cwd / "data.csv", ROWS)
    proc = lorasweep_cli(cwd, *_args(tiny_bert_dir, "data.csv"))
    assert proc.returncode == 0, proc.stderr
    return cwd


def test_the_sweep_records_the_data_it_ran_on(stored):
    url = f"sqlite:///{stored / 'studies.db'}"
    (name,) = optuna.get_all_study_names(url)
    study = optuna.load_study(study_name=name, storage=url)
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE]
    options = trial_template(study.user_attrs)["task_options"]
    assert options["dataset"] == str((stored / "data.csv").resolve())  # absolute: any worker
    assert options["labels"] == ["neg", "pos"] and options["regression"] is False
    assert options["fingerprint"].startswith("sha256:")
    assert options["split_sizes"] == "train=36,validation=4,test=4"


# name -> (the data file(s) to write, the --dataset value, extra --set, words of the error line)
def _cases(cwd: Path) -> dict[str, tuple[list[str], str]]:
    _csv(cwd / "ok.csv", ROWS)
    _csv(cwd / "single.csv", [{**r, "sentiment": "pos"} for r in ROWS])
    _csv(cwd / "empty.csv", [{**r, "review": "" if i < 4 else r["review"]}
                             for i, r in enumerate(ROWS)])
    (cwd / "unseen").mkdir(exist_ok=True)
    _csv(cwd / "unseen" / "train.csv", ROWS[:30])
    _csv(cwd / "unseen" / "validation.csv", [{**ROWS[0], "sentiment": "meh"}] + ROWS[31:])
    (cwd / "sheet.xlsx").write_text("not a table")
    (cwd / "bad.jsonl").write_text(json.dumps(ROWS[0]) + "\n{oops\n")
    return {
        "missing column": (["ok.csv", "task.text=body"],
                           "task.text='body' is not a column of ok.csv (columns: review, "
                           "sentiment); e.g. --set task.text=review"),
        "unseen label": (["unseen"], "label 'meh' in validation is not in train's labels"),
        "single label": (["single.csv"], "only one class (pos)"),
        "empty text": (["empty.csv"], "4 of 40 rows of empty.csv have an empty review"),
        "unknown extension": (["sheet.xlsx"], "unknown extension '.xlsx'"),
        "malformed file": (["bad.jsonl"], "bad.jsonl:2: not JSON"),
        "unknown split": (["ok.csv", "task.validation_split=dev"],
                          "no split 'dev' in ok.csv (splits: train)"),
        "overlapping slices": (["ok.csv", "task.train_split=train[:30]",
                                "task.validation_split=train[25:]"], "overlap"),
        "empty validation": (["ok.csv", "task.validation_size=0"], "validation split"),
        "offline hub id": (["someone/reviews"], "pass a local file or folder"),
        "metric of another kind": (["ok.csv", "task.metric=pearson"],
                                   "does not score classification"),
    }


@pytest.fixture(scope="module")
def refused(stored, tiny_bert_dir):
    cases = _cases(stored)
    before = store_digest(stored)

    def one(item):
        name, (given, _) = item
        return name, lorasweep_cli(stored, *_args(tiny_bert_dir, given[0], *given[1:], sweep="bad"))

    with ThreadPoolExecutor(2) as pool:
        done = dict(pool.map(one, cases.items()))
    return cases, done, before


@pytest.mark.parametrize("case", ["missing column", "unseen label", "single label", "empty text",
                                  "unknown extension", "malformed file", "unknown split",
                                  "overlapping slices", "empty validation", "offline hub id",
                                  "metric of another kind"])
def test_bad_data_is_one_line_exit_2_and_nothing_written(stored, refused, case):
    cases, done, before = refused
    proc = done[case]
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert cases[case][1] in lines[0], lines[0]
    assert store_digest(stored) == before


def test_a_rerun_on_changed_data_is_refused_in_one_line(stored, refused, tiny_bert_dir):
    before = store_digest(stored)
    _csv(stored / "data.csv", [*ROWS, {"review": "one more fine film", "sentiment": "pos"}])
    try:
        proc = lorasweep_cli(stored, *_args(tiny_bert_dir, "data.csv"))
    finally:
        _csv(stored / "data.csv", ROWS)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    # as a changed budget is refused: the sweep's header line, then the one error line
    assert len(lines) == 2 and lines[0].startswith("sweep own: text-classification"), lines
    assert lines[1].startswith("error: sweep 'own' already ran with task.fingerprint=sha256:")
    assert store_digest(stored) == before
    again = lorasweep_cli(stored, *_args(tiny_bert_dir, "data.csv"))  # the same data: nothing to do
    assert again.returncode == 0, again.stderr
