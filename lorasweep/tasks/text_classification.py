"""``text-classification``: the user's own data, one text (or a sentence pair) and a label per row,
for sequence classification or regression on any model with a classification head.

``--dataset`` (``task.dataset``) names the data (see :mod:`.datasource`); ``task.text``,
``task.text_pair`` and ``task.label`` name its columns. Labels are read from train: integers or
booleans are classes, strings are class names in sorted order (``task.labels=rotten,fresh`` fixes
the order and drops rows of other labels, saying how many), floats mean regression. A validation
or test label that train does not have is an error. ``task.metric``: accuracy, f1 (of the second
class), macro_f1, matthews_correlation (classes), pearson, spearman (regression).

When the sweep is checked the task records in the study what it resolved (the data's absolute
path, its label list, its split sizes and fingerprint): a rerun on changed data is refused, and
workers build the head from the recorded label count.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

from ..config import DEFAULT_LRS, DEFAULT_MODEL
from . import metrics
from .base import TaskData, TaskError, register_task
from .classification import PredictingTask, top_class
from .datasource import DataOptions, Source, check_fingerprint, load_source, pick_splits

__all__ = ["TextClassification", "TextClassificationOptions"]

_CLASS_METRICS = {"accuracy": metrics.accuracy, "f1": metrics.f1, "macro_f1": metrics.macro_f1,
                  "matthews_correlation": metrics.matthews_correlation}
_REGRESSION_METRICS = {"pearson": metrics.pearson, "spearman": metrics.spearman}
_EMPTY_SHARE = 0.01  # above this share of rows with empty text: an error, not a count


@dataclasses.dataclass
class TextClassificationOptions(DataOptions):
    text: str = "text"
    text_pair: str | None = None
    label: str = "label"
    #: Class names in order (``rotten,fresh`` or a list); recorded by the sweep.
    labels: Any = None  # a string or a list: parsed by the task
    #: None: inferred (float labels); recorded by the sweep.
    regression: bool | None = None
    metric: str | None = None


def _label_list(value: Any) -> list[str] | None:
    if value is None:
        return None
    items = value if isinstance(value, list) else str(value).split(",")
    names = [str(v).strip() for v in items if str(v).strip()]
    if len(names) != len(set(names)):
        raise TaskError(f"task.labels={value!r} names a class twice")
    return names


@register_task
class TextClassification(PredictingTask):
    """Your own text classification or regression data (see the module docstring)."""

    key = "text-classification"
    summary = "your own data: text (or pairs) and a label, --dataset FILE|FOLDER|HUB_ID"
    metric = "accuracy"
    num_labels = 0  # the data's: set from the recorded (or read) labels, never assumed
    default_model = DEFAULT_MODEL
    default_train = {"steps": 80, "batch_size": 32, "max_length": 64}
    default_lrs = DEFAULT_LRS
    default_search = "adaptive"  # the grid's learning rates at a fraction of the grid's steps
    Options = TextClassificationOptions
    records_data = True

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.names = _label_list(self.options.labels)
        if self.names is not None and len(self.names) < 2 and not self.options.regression:
            raise TaskError(f"task.labels={self.options.labels!r} names one class: a classifier "
                            "needs two or more")
        metric = self.options.metric
        if self.options.regression is None and self.names is None:  # the data will tell
            if metric is not None and metric not in {**_CLASS_METRICS, **_REGRESSION_METRICS}:
                raise TaskError(f"unknown task.metric={metric!r}: use one of "
                                f"{', '.join([*_CLASS_METRICS, *_REGRESSION_METRICS])}")
            self.metric, self.regression = metric or "accuracy", False
        else:
            self._set_kind(bool(self.options.regression), self.names)

    def _set_kind(self, regression: bool, names: list[str] | None) -> None:
        choices = _REGRESSION_METRICS if regression else _CLASS_METRICS
        metric = self.options.metric or ("pearson" if regression else "accuracy")
        if metric not in choices:
            kind = "regression" if regression else "classification"
            raise TaskError(f"task.metric={metric!r} does not score {kind}: use one of "
                            f"{', '.join(choices)}")
        if metric == "f1" and names is not None and len(names) != 2:
            raise TaskError(f"task.metric=f1 is binary, the data has {len(names)} classes: use "
                            "macro_f1")
        self.metric, self.regression = metric, regression
        self.num_labels = 1 if regression else (len(names) if names else 0)

    def check_available(self) -> None:
        if not (self.options.dataset or self.options.data_dir or self.options.data_files):
            raise TaskError("text-classification needs data: --dataset FILE_OR_FOLDER_OR_HUB_ID "
                            "(csv, json, jsonl, parquet; or a folder of train.* / validation.* "
                            "/ test.*)")

    # ------------------------------------------------------------------ data

    def _columns(self, source: Source) -> None:
        o = self.options
        wanted = [("text", o.text), ("label", o.label)] + (
            [("text_pair", o.text_pair)] if o.text_pair else [])
        for option, column in wanted:
            if column not in source.columns:
                guess = next((c for c in source.columns if c not in {o.text, o.label}), "COLUMN")
                raise TaskError(f"task.{option}={column!r} is not a column of {source.label} "
                                f"(columns: {', '.join(source.columns)}); e.g. --set "
                                f"task.{option}={guess}")

    def _rows(self, source: Source) -> Source:
        """The source's rows as ``{text, [text_pair], label}`` (raw labels), rows of labels
        outside ``task.labels`` and rows with empty text dropped (counted)."""
        o = self.options
        keep = set(self.names) if self.names and not o.regression else None
        dropped = empty = total = 0
        splits = {}
        for name, rows in source.splits.items():
            out = []
            for row in rows:
                total += 1
                label = row[o.label]
                if keep is not None and str(label) not in keep:
                    dropped += 1
                    continue
                texts = [row[o.text]] + ([row[o.text_pair]] if o.text_pair else [])
                if label is None or any(t is None or not str(t).strip() for t in texts):
                    empty += 1
                    continue
                example = {"text": str(texts[0]), "label": label}
                if o.text_pair:
                    example["text_pair"] = str(texts[1])
                out.append(example)
            splits[name] = out
        if empty > _EMPTY_SHARE * max(total, 1):
            raise TaskError(f"{empty} of {total} rows of {source.label} have an empty "
                            f"{o.text}{'/' + o.text_pair if o.text_pair else ''} or {o.label}: "
                            "clean the data or pick other columns")
        notes = []
        if dropped:
            notes.append(f"{dropped} rows whose {o.label} is not in task.labels")
        if empty:
            notes.append(f"{empty} rows with an empty text or label")
        if notes and not o.fingerprint:  # said once, when the sweep is checked (not per worker)
            print(f"{self.key}: dropped {' and '.join(notes)} of {source.label}",
                  file=sys.stderr)
        return dataclasses.replace(source, splits=splits)

    def _infer(self, train: list[dict[str, Any]]) -> tuple[bool, list[str] | None]:
        values = [r["label"] for r in train]
        if self.options.regression is not None:
            regression = bool(self.options.regression)
        elif self.names is not None:
            regression = False
        else:
            regression = any(isinstance(v, float) and not isinstance(v, bool) for v in values)
        if regression:
            bad = next((v for v in values if isinstance(v, bool)
                        or not isinstance(v, (int, float))), None)
            if bad is not None:
                raise TaskError(f"{self.options.label} value {bad!r} is not a number (regression "
                                "reads float labels); pass task.regression=false for classes")
            return True, None
        if self.names is not None:
            return False, self.names
        kinds = {type(v) for v in values}
        if kinds <= {int, bool}:
            names = [str(v) for v in sorted(set(values))]
        else:
            names = sorted({str(v) for v in values})
        if len(names) < 2:
            raise TaskError(f"only one class ({names[0] if names else 'none'}) in train's "
                            f"{self.options.label}: a classifier needs two or more")
        return False, names

    def load(self) -> TaskData:
        self.check_available()
        source = load_source(self.options, self.key)
        self._columns(source)
        check_fingerprint(source, self.options)
        source = self._rows(source)
        train, validation, test, self.validation_rule = pick_splits(
            source, self.options,  # stratified by class (a regression's floats: one stratum)
            stratum=lambda r: "" if isinstance(r["label"], float) else str(r["label"]),
            text=lambda r: (r["text"], r.get("text_pair")))
        regression, names = self._infer(train)
        present = {str(r["label"]) for r in train}
        if not regression and len(present) < 2:
            raise TaskError(f"only one class ({', '.join(present) or 'none'}) in train's "
                            f"{self.options.label}: a classifier needs two or more")
        self._set_kind(regression, names)
        self.names = names
        self.source = source
        splits = [("train", train), ("validation", validation), ("test", test)]
        out = {name: [self._encode(r, name) for r in rows] for name, rows in splits}
        self.sizes = {name: len(rows) for name, rows in out.items()}
        scored = self.limited(out["validation"])  # no test split: test is validation (reported so)
        return TaskData(train=out["train"], validation=scored,
                        test=scored if test is validation else self.limited(out["test"]))

    def _encode(self, row: dict[str, Any], split: str) -> dict[str, Any]:
        if self.regression:
            return {**row, "label": float(row["label"])}
        index = {name: i for i, name in enumerate(self.names or [])}
        label = str(row["label"])
        if label not in index:
            raise TaskError(f"label {label!r} in {split} is not in train's labels "
                            f"({', '.join(self.names or [])}); list them with task.labels=")
        return {**row, "label": index[label]}

    def recorded_options(self) -> dict[str, Any]:
        """What the sweep records (after :meth:`load`): the data and what was read from it."""
        recorded: dict[str, Any] = {"fingerprint": self.source.fingerprint,
                                    "split_sizes": ",".join(f"{k}={v}" for k, v in
                                                            self.sizes.items()),
                                    "regression": self.regression, "metric": self.metric}
        if self.source.dataset:
            recorded["dataset"] = self.source.dataset
        if not self.regression:
            recorded["labels"] = list(self.names or [])
        return recorded

    def length(self, example: dict[str, Any]) -> int:
        return len(example["text"]) + len(example.get("text_pair", ""))

    # ------------------------------------------------------------------ model io

    def collate(self, tokenizer: Any, examples: list[dict[str, Any]], max_length: int) -> dict:
        import torch

        texts = [[e["text"] for e in examples]]
        if self.options.text_pair:
            texts.append([e["text_pair"] for e in examples])
        batch = tokenizer(*texts, padding=True, truncation=True, max_length=max_length,
                          return_tensors="pt")
        dtype = torch.float32 if self.regression else torch.long
        batch["labels"] = torch.tensor([e["label"] for e in examples], dtype=dtype)
        return dict(batch)

    def decide(self, logits: Any) -> list:
        return logits.float().reshape(-1).tolist() if self.regression else top_class(logits)

    def score(self, predictions: list, labels: list) -> float:
        table = _REGRESSION_METRICS if self.regression else _CLASS_METRICS
        return table[self.metric](predictions, labels)
