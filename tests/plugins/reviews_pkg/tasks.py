"""Tasks defined outside lorasweep: a tiny review classifier, and classes that must be refused."""

from __future__ import annotations

from lorasweep.tasks import TaskData
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
