"""Splits a task makes itself: a seeded slice of train held out as validation (GLUE, whose
validation split is the study's test set; the image datasets, which have none).

The slice is part of the task, not of the trial: every trial, seed and learning rate of a sweep
trains and chooses on the same examples (:data:`SPLIT_SEED`).
"""

from __future__ import annotations

import random
from typing import Any

from .base import TaskError

__all__ = ["SPLIT_SEED", "check_holdout", "hold_out"]

SPLIT_SEED = 1234


def check_holdout(fraction: Any) -> None:
    """A holdout is a fraction in [0, 1): a TaskError naming the option otherwise."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
            or not 0 <= fraction < 1:
        raise TaskError(f"task.holdout must be a fraction in [0, 1), got {fraction!r}")


def hold_out(train: list, fraction: float, most: int | None = None) -> tuple[list, list]:
    """``(train, validation)``: a seeded ``fraction`` of ``train`` (at least one example, at most
    ``most``, never all of them) becomes validation; both keep train's order."""
    order = list(range(len(train)))
    random.Random(SPLIT_SEED).shuffle(order)
    cut = min(len(train) - 1, max(1, round(fraction * len(train))))
    cut = cut if most is None else min(most, cut)
    return [train[i] for i in sorted(order[cut:])], [train[i] for i in sorted(order[:cut])]
