"""The nine GLUE tasks of the study's NLU protocol (RoBERTa-base), from one table and one class.

Data: the Hub's ``nyu-mll/glue`` (one config per task) through ``datasets.load_dataset``, or,
with ``--set task.data_dir=DIR``, local JSON Lines files in the same schema (one object per line,
the task's text fields and ``label``, e.g. ``{"sentence1": ..., "sentence2": ..., "label": 1}``):

    DIR/train.jsonl        GLUE's train split
    DIR/validation.jsonl   GLUE's validation split (for MNLI: validation_matched)
    DIR/test.jsonl         optional: a labelled test set of your own

On a machine with network, ``datasets.load_dataset("nyu-mll/glue", "rte")["train"].to_json(
"DIR/train.jsonl")`` writes such a file.

Splits. GLUE's test labels are hidden, so the study scores GLUE's validation split, taking the
best score over epochs. Here, by default, validation and test are the *same* list (GLUE's
validation split; ``data.test is data.validation``): the sweep's objective and the reported
test score are the study's number. ``--set task.holdout=0.1`` instead holds out a seeded 10% of
train as the validation split (the sweep selects on it) and keeps GLUE's validation split as an
untouched test set. A ``DIR/test.jsonl`` with labels, when present, is the test split.

Metrics (study): accuracy; F1 of the positive class for QQP; Pearson for STS-B (regression,
one output); Matthews correlation for CoLA. ``Task.scores`` also gives accuracy next to F1.
A diverged trial records 0.0 for every metric: the score of a constant predictor (chance-level
correlation), not -1, which would claim a perfectly anti-correlated model.

Budget (study): 10 epochs, batch 32, max length 256, fp32, no weight decay, linear decay after a
3% warm-up; validation after every epoch (``eval_every`` = one epoch of GLUE's train split at
batch 32, in steps; a smaller local train set just gets its final evaluation).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, ClassVar

from . import metrics
from ._hub import hub_errors
from ._splits import check_holdout, hold_out
from .base import TaskData, TaskError, TaskOptions, register_task
from .classification import PredictingTask, top_class

__all__ = ["GLUE_LRS", "GLUE_TASKS", "HUB_ID", "GlueOptions", "GlueTask"]

HUB_ID = "nyu-mll/glue"
#: The study's NLU learning-rate grid.
GLUE_LRS = (1e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3)
_BATCH = 32


@dataclasses.dataclass(frozen=True)
class _Spec:
    key: str
    config: str  # the Hub config name
    fields: tuple[str, ...]  # one text, or a sentence pair
    num_labels: int  # 1: regression
    metric: str
    validation: str  # the Hub split scored as validation
    train_size: int  # rows of GLUE's train split (sets eval_every to one epoch)
    summary: str


_TABLE = (
    _Spec("glue-cola", "cola", ("sentence",), 2, "matthews_correlation", "validation", 8_551,
          "GLUE CoLA: grammatical acceptability"),
    _Spec("glue-sst2", "sst2", ("sentence",), 2, "accuracy", "validation", 67_349,
          "GLUE SST-2: movie review sentiment"),
    _Spec("glue-mrpc", "mrpc", ("sentence1", "sentence2"), 2, "accuracy", "validation", 3_668,
          "GLUE MRPC: paraphrase pairs from news"),
    _Spec("glue-qqp", "qqp", ("question1", "question2"), 2, "f1", "validation", 363_846,
          "GLUE QQP: duplicate Quora questions"),
    _Spec("glue-stsb", "stsb", ("sentence1", "sentence2"), 1, "pearson", "validation", 5_749,
          "GLUE STS-B: sentence similarity 0-5 (regression)"),
    _Spec("glue-mnli", "mnli", ("premise", "hypothesis"), 3, "accuracy", "validation_matched",
          392_702, "GLUE MNLI: entailment, 3 classes (matched validation)"),
    _Spec("glue-qnli", "qnli", ("question", "sentence"), 2, "accuracy", "validation", 104_743,
          "GLUE QNLI: does the sentence answer the question"),
    _Spec("glue-rte", "rte", ("sentence1", "sentence2"), 2, "accuracy", "validation", 2_490,
          "GLUE RTE: textual entailment"),
    _Spec("glue-wnli", "wnli", ("sentence1", "sentence2"), 2, "accuracy", "validation", 635,
          "GLUE WNLI: Winograd pronoun entailment"),
)
#: Every GLUE task key, in the study's order (the ``glue`` task group).
GLUE_TASKS = tuple(spec.key for spec in _TABLE)

_METRICS = {
    "accuracy": metrics.accuracy,
    "f1": metrics.f1,
    "pearson": metrics.pearson,
    "matthews_correlation": metrics.matthews_correlation,
}


@dataclasses.dataclass
class GlueOptions(TaskOptions):
    #: Fraction of train held out (seeded) as the validation split; GLUE's validation split is
    #: then the test split. 0: the study's protocol (validation = test = GLUE's validation).
    holdout: float = 0.0


class GlueTask(PredictingTask):
    """One GLUE task; subclasses only set ``spec`` (see the module docstring)."""

    spec: ClassVar[_Spec]
    Options = GlueOptions
    default_model = "FacebookAI/roberta-base"
    worst_score = 0.0
    default_lrs = GLUE_LRS
    objective = "best"  # the study reports each trial's best score over epochs

    def __init__(self, **options: Any):
        super().__init__(**options)
        check_holdout(self.options.holdout)
        #: All scores of the last :meth:`evaluate` call (the primary metric and accuracy).
        self.last_scores: dict[str, float] = {}

    # ------------------------------------------------------------------ data

    def _files(self) -> dict[str, Path]:
        root = Path(self.options.data_dir).expanduser()
        return {split: root / f"{split}.jsonl" for split in ("train", "validation", "test")}

    def _layout_hint(self) -> str:
        fields = ", ".join((*self.spec.fields, "label"))
        return (
            f"put GLUE {self.spec.config} as JSON Lines (one object per line with {fields}) in "
            f"DIR/train.jsonl and DIR/validation.jsonl (GLUE's {self.spec.validation} split; "
            "optional DIR/test.jsonl: a labelled test set) and pass --set task.data_dir=DIR"
        )

    def check_available(self) -> None:
        if self.options.data_dir is None:
            return  # the Hub (or its local cache): only load() can tell
        files = self._files()
        missing = [str(files[s]) for s in ("train", "validation") if not files[s].is_file()]
        if missing:
            raise TaskError(f"{self.key}: missing {' and '.join(missing)}: {self._layout_hint()}")

    def _read_jsonl(self, path: Path) -> list[dict[str, Any]]:
        rows = []
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    raw = json.loads(line)
                except json.JSONDecodeError as err:
                    raise TaskError(f"{path}:{number}: not JSON ({err.msg})") from None
                rows.append(self._example(raw, f"{path}:{number}"))
        if not rows:
            raise TaskError(f"{path} has no examples: {self._layout_hint()}")
        return rows

    def _example(self, raw: dict[str, Any], where: str) -> dict[str, Any]:
        missing = [f for f in (*self.spec.fields, "label") if f not in raw]
        if missing:
            raise TaskError(f"{where}: no field {missing[0]!r} (a {self.key} row needs "
                            f"{', '.join((*self.spec.fields, 'label'))})")
        label = raw["label"]
        if self.spec.num_labels == 1:
            if isinstance(label, bool) or not isinstance(label, (int, float)) or label < 0:
                raise TaskError(f"{where}: label {label!r} is not a similarity score (0 to 5)")
            label = float(label)
        elif isinstance(label, bool) or not isinstance(label, int) \
                or not 0 <= label < self.spec.num_labels:
            why = f"{where}: label {label!r} is not a class 0..{self.spec.num_labels - 1}"
            if label == -1:
                why += " (GLUE's test labels are hidden: use its validation split)"
            raise TaskError(why)
        return {**{f: str(raw[f]) for f in self.spec.fields}, "label": label}

    def _load_hub(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        with hub_errors(self.key, f"{HUB_ID} ({self.spec.config})",
                        f"without network, {self._layout_hint()}"):
            import datasets

            splits = datasets.load_dataset(HUB_ID, self.spec.config)
            train, validation = splits["train"], splits[self.spec.validation]
        return ([self._example(r, f"{HUB_ID}/{self.spec.config} train") for r in train],
                [self._example(r, f"{HUB_ID}/{self.spec.config} {self.spec.validation}")
                 for r in validation])

    def load(self) -> TaskData:
        test = None
        if self.options.data_dir is None:
            train, validation = self._load_hub()
        else:
            self.check_available()
            files = self._files()
            train = self._read_jsonl(files["train"])
            validation = self._read_jsonl(files["validation"])
            if files["test"].is_file():
                test = self.limited(self._read_jsonl(files["test"]))
        if self.options.holdout > 0:
            if len(train) < 2:
                raise TaskError(f"{self.key}: task.holdout needs at least 2 training examples")
            test = test if test is not None else self.limited(validation)
            train, validation = hold_out(train, self.options.holdout)
        validation = self.limited(validation)
        return TaskData(train=train, validation=validation,
                        test=validation if test is None else test)

    def length(self, example: dict[str, Any]) -> int:
        return sum(len(example[f]) for f in self.spec.fields)

    # ------------------------------------------------------------------ model io

    def collate(self, tokenizer: Any, examples: list[dict[str, Any]], max_length: int) -> dict:
        import torch

        texts = [[e[f] for e in examples] for f in self.spec.fields]  # tokenizer(a) or (a, b)
        batch = tokenizer(*texts, padding=True, truncation=True, max_length=max_length,
                          return_tensors="pt")
        dtype = torch.float32 if self.spec.num_labels == 1 else torch.long
        batch["labels"] = torch.tensor([e["label"] for e in examples], dtype=dtype)
        return dict(batch)

    def scores(self, predictions: list, references: list) -> dict[str, float]:
        """The primary metric, plus accuracy for the classification tasks."""
        scores = {self.metric: _METRICS[self.metric](predictions, references)}
        if self.spec.num_labels > 1:
            scores.setdefault("accuracy", metrics.accuracy(predictions, references))
        return scores

    def decide(self, logits: Any) -> list:
        return _regression(logits) if self.spec.num_labels == 1 else top_class(logits)

    def score(self, predictions: list, labels: list) -> float:
        self.last_scores = self.scores(predictions, labels)
        return self.last_scores[self.metric]


def _regression(logits: Any) -> list:
    return logits.float().reshape(-1).tolist()


def _make(spec: _Spec) -> type[GlueTask]:
    name = "Glue" + spec.config.capitalize()
    cls = type(name, (GlueTask,), {
        "__doc__": f"{spec.summary}. Metric: {spec.metric}. See the module docstring.",
        "__module__": __name__,
        "spec": spec,
        "key": spec.key,
        "summary": f"{spec.summary} (needs {HUB_ID} or task.data_dir)",
        "metric": spec.metric,
        "num_labels": spec.num_labels,
        "default_train": {
            "steps": None, "epochs": 10, "batch_size": _BATCH, "max_length": 256,
            "precision": "fp32", "weight_decay": 0.0, "schedule": "linear", "warmup_ratio": 0.03,
            "eval_every": math.ceil(spec.train_size / _BATCH),
        },
    })
    globals()[name] = register_task(cls)  # a module attribute: picklable by reference
    return cls


for _spec in _TABLE:
    _make(_spec)
del _spec
