"""What a study optimizes: its direction, its metric, and what a diverged trial records.

The sweep resolves these once per study from the task instance (with its options) and records
them as study attributes (:func:`study_objective`); every reader after it (workers, the search,
priors, the report, export, status) reads the study's record through :func:`objective_of`, never
a task class. A store written before studies recorded a direction reads as ``maximize``.

A minimized metric (a loss) records, for a diverged or non-finite trial, the loss of a uniform
predictor over the model's vocabulary, ``ln(vocab_size)``: a finite number, worse than anything
a model that learnt something scores, so collapsed learning rates show at the chance line.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ..config import ConfigError

__all__ = ["DIRECTION_ATTR", "MAXIMIZE", "METRIC_ATTR", "MINIMIZE", "WORST_ATTR", "Objective",
           "model_vocab_size", "objective_of", "study_objective"]

MAXIMIZE, MINIMIZE = "maximize", "minimize"
#: Study attributes: the direction, the metric name (the objective is ``validation_<metric>``)
#: and the score a diverged trial records.
DIRECTION_ATTR, METRIC_ATTR, WORST_ATTR = "direction", "metric_name", "worst_score"


@dataclasses.dataclass(frozen=True)
class Objective:
    direction: str = MAXIMIZE
    worst: float = 0.0
    metric: str | None = None

    @property
    def minimize(self) -> bool:
        return self.direction == MINIMIZE

    @property
    def sign(self) -> float:
        """+1 to maximize, -1 to minimize: ``sign * value`` is higher-is-better."""
        return -1.0 if self.minimize else 1.0

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` is strictly better than ``b``."""
        return a < b if self.minimize else a > b

    def best(self, values: Any, key: Any = None) -> Any:
        """The best of ``values`` (by ``key``); ties: the first."""
        pick = min if self.minimize else max
        return pick(values, key=key) if key is not None else pick(values)

    def attrs(self) -> dict[str, Any]:
        return {DIRECTION_ATTR: self.direction, METRIC_ATTR: self.metric, WORST_ATTR: self.worst}


def objective_of(attrs: dict[str, Any]) -> Objective:
    """A study's recorded objective (its user attributes); older stores: maximize, worst 0."""
    direction = attrs.get(DIRECTION_ATTR) or MAXIMIZE
    worst = attrs.get(WORST_ATTR)
    return Objective(direction, float(worst) if worst is not None else 0.0, attrs.get(METRIC_ATTR))


def model_vocab_size(model: str, model_options: dict[str, Any] | None = None) -> int:
    """The vocabulary size in the model's config (read cheaply: no weights, no tokenizer)."""
    from transformers import AutoConfig

    from ..train.model import ModelOptions, resolve_model

    options = ModelOptions.parse(model_options or {})
    path, gguf = resolve_model(model)
    kwargs: dict[str, Any] = {"trust_remote_code": options.trust_remote_code}
    if gguf:
        kwargs["gguf_file"] = gguf
    config = AutoConfig.from_pretrained(path, **kwargs)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    size = getattr(text, "vocab_size", None)
    if not isinstance(size, int) or size < 2:
        raise ConfigError(f"model {model!r} has no vocab_size in its config: a task that minimizes "
                         "a loss needs it for the score of a diverged trial (ln of the vocabulary)")
    return size


def study_objective(task: Any, model: str, model_options: dict[str, Any] | None = None
                    ) -> Objective:
    """The objective of a study of ``task`` (an instance, with its options) on ``model``."""
    direction = task.direction
    if direction not in (MAXIMIZE, MINIMIZE):
        raise ConfigError(f"task {task.key!r} has direction {direction!r}: a Task's direction is "
                         f"{MAXIMIZE!r} or {MINIMIZE!r}")
    vocab = model_vocab_size(model, model_options) if direction == MINIMIZE else None
    worst = float(task.diverged_score(vocab))
    if not math.isfinite(worst):
        raise ConfigError(f"task {task.key!r} gives a diverged trial the score {worst}: it must be "
                         "a finite number (a loss: ln of the vocabulary size)")
    return Objective(direction, worst, task.metric_name)
