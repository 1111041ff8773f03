"""The Task interface (data + collation + metric) and the task registry."""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, ClassVar

from ..config import DEFAULT_SEARCH, DEFAULT_VARIANT

__all__ = [
    "TASK_GROUPS",
    "Task",
    "TaskData",
    "TaskError",
    "HubDataError",
    "expand_tasks",
    "register_task",
    "task_registry",
]

#: Group keys that sweep every registered task ``GROUP-*`` and report their average.
TASK_GROUPS = ("glue", "ic")


class TaskError(ValueError):
    """A task key, option or data file that cannot be used."""


class HubDataError(TaskError):
    """Data that only the Hugging Face Hub has, and the Hub is unreachable (or not cached)."""


@dataclasses.dataclass
class TaskData:
    train: list[dict[str, Any]]
    validation: list[dict[str, Any]]
    test: list[dict[str, Any]]


@dataclasses.dataclass
class TaskOptions:
    eval_limit: int | None = None  # evaluate on at most this many examples per split
    data_dir: str | None = None


class Task(ABC):
    """A task: how to load its splits, batch them for a model, and score predictions.

    ``model_kind`` tells model loading which head to build (``sequence-classification``);
    ``worst_score`` is what a diverged trial records, so collapsed learning rates show in reports.
    An instance says what its sweep optimizes (:attr:`metric_name`, :attr:`direction`) and what a
    diverged trial records (:meth:`diverged_score`); the sweep records these in the study once,
    and everything after it (workers, search, report) reads the study's, never the class's.
    """

    key: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    metric: ClassVar[str] = ""
    model_kind: ClassVar[str] = "sequence-classification"
    num_labels: ClassVar[int] = 2
    default_model: ClassVar[str] = ""
    worst_score: ClassVar[float] = 0.0
    Options: ClassVar[type] = TaskOptions
    #: The study's budget for this task (TrainConfig fields) and learning-rate grid; a sweep
    #: that names the task without its own train settings / --lrs uses these.
    #: The trial's objective: the validation score at the end ("final") or the best of the
    #: periodic evaluations ("best", the study's "best score over epochs" for GLUE).
    objective: ClassVar[str] = "final"
    default_train: ClassVar[dict[str, Any]] = {}
    default_lrs: ClassVar[tuple[float, ...]] = ()
    #: The variants and the search a sweep of this task uses when it names none (the embedded
    #: default compares three variants with the adaptive search; every other task: LoRA, grid).
    #: The search goes with the task's grid: a sweep naming its own learning rates gets a grid.
    default_variants: ClassVar[tuple[str, ...]] = (DEFAULT_VARIANT,)
    default_search: ClassVar[str] = DEFAULT_SEARCH

    def __init__(self, **options: Any):
        fields = {f.name for f in dataclasses.fields(self.Options)}
        unknown = sorted(set(options) - fields, key=str)
        if unknown:
            raise TaskError(
                f"unknown option {unknown[0]!r} for task {self.key!r} "
                f"(its options: {', '.join(sorted(fields))})"
            )
        self.options = self.Options(**options)
        from .._values import coerce_fields

        coerce_fields(self.options, "task.")  # YAML values of any type: the declared one, or one line
        limit = self.options.eval_limit
        if limit is not None and (not isinstance(limit, int) or limit <= 0):
            raise TaskError(f"task.eval_limit must be a positive integer, got {limit!r}")

    @abstractmethod
    def load(self) -> TaskData:
        """The train / validation / test examples (evaluation splits already limited)."""

    @abstractmethod
    def collate(self, tokenizer: Any, examples: list[dict[str, Any]], max_length: int) -> dict:
        """A batch of model inputs (with ``labels``) for ``examples``."""

    @abstractmethod
    def evaluate(self, model: Any, tokenizer: Any, examples: list[dict[str, Any]],
                 batch_size: int, max_length: int, autocast: Any) -> float:
        """The task's metric of ``model`` on ``examples``."""

    def evaluate_with_loss(self, model: Any, tokenizer: Any, examples: list[dict[str, Any]],
                           batch_size: int, max_length: int, autocast: Any) -> tuple[float, float]:
        """The metric and the model's mean loss on ``examples``, from one pass where the task
        can (classifiers); here the loss is NaN (not worth a second pass)."""
        return self.evaluate(model, tokenizer, examples, batch_size, max_length, autocast), math.nan

    @property
    def metric_name(self) -> str:
        """The metric this task (with its options) is scored by: the objective is
        ``validation_<metric_name>``."""
        return self.metric

    @property
    def direction(self) -> str:
        """``maximize`` (a score: accuracy, F1) or ``minimize`` (a loss, a perplexity)."""
        return "maximize"

    def diverged_score(self, vocab_size: int | None) -> float:
        """What a diverged (or non-finite) trial records: the class's ``worst_score``. A task
        that minimizes a loss returns the loss of a uniform predictor, ``ln(vocab_size)``."""
        return float(self.worst_score)

    def extra_metrics(self, validation: float, test: float) -> dict[str, float]:
        """What a trial records beside the metric, derived from its validation and test scores
        (a loss's perplexity); none here."""
        return {}

    def check_available(self) -> None:  # noqa: B027  (optional hook; most tasks need no check)
        """Raise :class:`TaskError` (with the fix) if the task's data cannot be loaded here."""

    def recorded_options(self) -> dict[str, Any]:
        """Options the sweep records in the study once it has loaded the task's data (the
        resolved files, labels, sizes, fingerprint of a task on the user's data); none here."""
        return {}

    #: Whether the sweep loads the data when it is checked, to record :meth:`recorded_options`.
    records_data: ClassVar[bool] = False

    def length(self, example: dict[str, Any]) -> int:
        """A cheap size proxy used to batch examples of similar length together."""
        return len(example.get("text", ""))

    def limited(self, examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        limit = self.options.eval_limit
        return examples if limit is None else examples[:limit]

    @staticmethod
    def batches(examples: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
        for start in range(0, len(examples), size):
            yield examples[start : start + size]


_REGISTRY: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    if not cls.key or not cls.metric or not cls.summary:
        raise TypeError(f"{cls.__name__} needs a key, a metric and a summary")
    _REGISTRY[cls.key] = cls
    return cls


def task_registry() -> dict[str, type[Task]]:
    return dict(_REGISTRY)


def expand_tasks(key: str) -> list[str]:
    """``glue`` -> every registered ``glue-*`` task; a task key -> itself."""
    if key in TASK_GROUPS:
        members = sorted(k for k in _REGISTRY if k.startswith(key + "-"))
        if not members:
            raise TaskError(f"task group {key!r} has no registered tasks")
        return members
    return [key]


def expand_tasks_safe(key: str) -> list[str]:
    try:
        return expand_tasks(key)
    except TaskError:
        return []
