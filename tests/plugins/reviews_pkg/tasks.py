"""Tasks defined outside lorasweep: a tiny review classifier (scored by accuracy, or by a loss to
minimize), and classes that must be refused."""

from __future__ import annotations

import dataclasses
import math

from lorasweep.tasks import TaskData
from lorasweep.tasks.base import TaskOptions
from lorasweep.tasks.classification import ClassificationTask

_GOOD = ["a fine film", "great acting", "loved every minute", "a warm and clever story"]
_BAD = ["a dull film", "poor acting", "hated every minute", "a cold and clumsy story"]


class ReviewTask(ClassificationTask):
    """Eight short reviews, good = 1 and bad = 0, the same rows in every split."""

    key = "reviews"
    summary = "eight short reviews, good vs bad (a plugin)"
    default_model = "embedded:minilm"
    default_train = {"steps": 1, "batch_size": 4, "max_length": 16}
    default_lrs = (1e-3,)

    def load(self) -> TaskData:
        rows = [{"text": t, "label": 1} for t in _GOOD] + [{"text": t, "label": 0} for t in _BAD]
        return TaskData(train=rows, validation=self.limited(rows), test=self.limited(rows))


class NotATask:
    """Not a lorasweep Task."""


class Shadow(ReviewTask):
    """A class whose key is a built-in task's."""

    key = "sentiment"


@dataclasses.dataclass
class LossOptions(TaskOptions):
    metric: str = "loss"  # or accuracy (maximized)


class LossTask(ReviewTask):
    """The reviews scored by a loss to minimize (``task.metric=loss``, the default): a diverged
    trial records the loss of a uniform predictor over the model's vocabulary."""

    key = "review-loss"
    summary = "eight short reviews, scored by a loss (a plugin)"
    metric = "loss"
    default_model = "embedded:smollm2"
    Options = LossOptions

    @property
    def metric_name(self) -> str:
        return self.options.metric

    @property
    def direction(self) -> str:
        return "minimize" if self.options.metric == "loss" else "maximize"

    def diverged_score(self, vocab_size: int | None) -> float:
        if self.direction == "minimize":
            return math.log(vocab_size)
        return super().diverged_score(vocab_size)
