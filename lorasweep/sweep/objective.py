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
from pathlib import Path
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

    def attrs(self) -> dict[str, Any]:
        return {DIRECTION_ATTR: self.direction, METRIC_ATTR: self.metric, WORST_ATTR: self.worst}


def objective_of(attrs: dict[str, Any]) -> Objective:
    """A study's recorded objective (its user attributes); older stores: maximize, worst 0."""
    direction = attrs.get(DIRECTION_ATTR) or MAXIMIZE
    worst = attrs.get(WORST_ATTR)
    return Objective(direction, float(worst) if worst is not None else 0.0, attrs.get(METRIC_ATTR))


def model_vocab_size(model: str, model_options: dict[str, Any] | None = None) -> int:
    """The vocabulary size in the model's config (read cheaply: no weights, no tokenizer)."""
    from ..train.model import ModelOptions, model_config, resolve_model

    options = ModelOptions.parse(model_options or {})
    path, gguf = resolve_model(model)
    size = _gguf_vocab_size(Path(path) / gguf) if gguf and Path(path, gguf).is_file() else None
    if size is None:
        config = model_config(path, gguf, options.trust_remote_code)
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        size = getattr(text, "vocab_size", None)
    if not isinstance(size, int) or size < 2:
        raise ConfigError(f"model {model!r} has no vocab_size in its config: a task that minimizes "
                         "a loss needs it for the score of a diverged trial (ln of the vocabulary)")
    return size


_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q",
                 12: "d"}


def _gguf_vocab_size(file: Path) -> int | None:
    """``<arch>.vocab_size`` from a GGUF file's header (else the length of its token list),
    read without parsing the rest: transformers' config reader decodes every token (seconds).
    None when the header does not say (the caller asks transformers)."""
    import struct

    with open(file, "rb") as f:
        def read(fmt: str) -> Any:
            return struct.unpack("<" + fmt, f.read(struct.calcsize("<" + fmt)))[0]

        def string() -> str:
            return f.read(read("Q")).decode("utf-8", "replace")

        def skip(kind: int) -> None:
            if kind == 8:
                f.seek(read("Q"), 1)
            elif kind == 9:
                inner, count = read("I"), read("Q")
                if inner in _GGUF_SCALARS:
                    f.seek(count * struct.calcsize(_GGUF_SCALARS[inner]), 1)
                else:
                    for _ in range(count):
                        skip(inner)
            else:
                f.seek(struct.calcsize(_GGUF_SCALARS[kind]), 1)

        if f.read(4) != b"GGUF" or read("I") < 2:
            return None
        read("Q")  # the tensor count
        tokens = None
        for _ in range(read("Q")):
            key, kind = string(), read("I")
            if key.endswith(".vocab_size") and kind in _GGUF_SCALARS:
                return int(read(_GGUF_SCALARS[kind]))
            if key == "tokenizer.ggml.tokens" and kind == 9:
                inner, count = read("I"), read("Q")
                tokens = count
                for _ in range(count):
                    skip(inner)
                continue
            skip(kind)
        return tokens


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
