"""Sequence classification: collation and accuracy shared by classification tasks, and the
prediction loop of every classifier (:func:`predict`: text, sentence pairs, images)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

from .. import _phase as phase
from .base import Task
from .metrics import accuracy

__all__ = ["ClassificationTask", "Predictions", "PredictingTask", "predict", "top_class"]


class PredictingTask(Task):
    """A task scored from one forward pass over its examples (:func:`predict`): the same pass
    gives the mean loss, so a rung's validation loss costs nothing more. Subclasses say how a
    batch's logits become predictions (:meth:`decide`) and how predictions are scored
    (:meth:`score`)."""

    def decide(self, logits: Any) -> list:
        """Each row's prediction: the top class."""
        return top_class(logits)

    def score(self, predictions: list, labels: list) -> float:
        """The task's metric of ``predictions`` against ``labels``: accuracy."""
        return accuracy(predictions, labels)

    def evaluate(self, model: Any, tokenizer: Any, examples: list[dict[str, Any]],
                 batch_size: int, max_length: int, autocast: Any) -> float:
        return self.evaluate_with_loss(model, tokenizer, examples, batch_size, max_length,
                                       autocast)[0]

    def evaluate_with_loss(self, model: Any, tokenizer: Any, examples: list[dict[str, Any]],
                           batch_size: int, max_length: int, autocast: Any) -> tuple[float, float]:
        out = predict(self, model, tokenizer, examples, batch_size, max_length, autocast,
                      self.decide)
        return self.score(out.predictions, out.labels), out.loss


class ClassificationTask(PredictingTask):
    """Examples are ``{"text": str, "label": int}``; the metric is accuracy."""

    metric = "accuracy"

    def collate(self, tokenizer: Any, examples: list[dict[str, Any]], max_length: int) -> dict:
        import torch

        batch = tokenizer(
            [e["text"] for e in examples],
            padding=True,  # to the longest in the batch: short snippets stay cheap
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        batch["labels"] = torch.tensor([e["label"] for e in examples])
        return dict(batch)


def top_class(logits: Any) -> list:
    """Each row's predicted class: the arg-max of its logits."""
    return logits.argmax(-1).tolist()


class Predictions(NamedTuple):
    """What :func:`predict` saw: the predictions and labels (shortest example first) and the
    model's mean loss per example (NaN where the model returns no loss)."""

    predictions: list
    labels: list
    loss: float


def predict(task: Task, model: Any, tokenizer: Any, examples: list[dict[str, Any]],
            batch_size: int, max_length: int, autocast: Any,
            decide: Callable[[Any], list] = top_class) -> Predictions:
    """The predictions of a classifier over ``examples``, in batches of the task's collation
    (shortest first: less padding), without gradients, the model in eval mode and then back in
    its mode; ``decide`` turns a batch's logits into predictions (the top class). The labels go
    into the model too, so its loss of each batch is at hand: their mean, weighted by the
    batches' sizes, is the :class:`Predictions`' ``loss``."""
    import torch

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    examples = sorted(examples, key=task.length)  # similar lengths together: less padding
    predictions: list = []
    total = 0.0
    with torch.no_grad():
        phase.report("evaluating", 0, len(examples))
        for chunk in task.batches(examples, batch_size):
            batch = task.collate(tokenizer, chunk, max_length)
            with autocast():
                out = model(**{k: v.to(device) for k, v in batch.items()})
            predictions.extend(decide(out.logits))
            loss = getattr(out, "loss", None)  # a model given labels returns its loss
            total += math.nan if loss is None else float(loss) * len(chunk)
            phase.report("evaluating", len(predictions), len(examples))
    model.train(was_training)
    return Predictions(predictions, [e["label"] for e in examples],
                       total / len(examples) if examples else math.nan)
