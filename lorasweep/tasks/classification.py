"""Sequence classification: collation and accuracy shared by classification tasks, and the
prediction loop of every classifier (:func:`predict`: text, sentence pairs, images)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import Task
from .metrics import accuracy

__all__ = ["ClassificationTask", "predict", "top_class"]


class ClassificationTask(Task):
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

    def evaluate(self, model: Any, tokenizer: Any, examples: list[dict[str, Any]],
                 batch_size: int, max_length: int, autocast: Any) -> float:
        return accuracy(*predict(self, model, tokenizer, examples, batch_size, max_length,
                                 autocast))


def top_class(logits: Any) -> list:
    """Each row's predicted class: the arg-max of its logits."""
    return logits.argmax(-1).tolist()


def predict(task: Task, model: Any, tokenizer: Any, examples: list[dict[str, Any]],
            batch_size: int, max_length: int, autocast: Any,
            decide: Callable[[Any], list] = top_class) -> tuple[list, list]:
    """``(predictions, labels)`` of a classifier over ``examples``, in batches of the task's
    collation (shortest first: less padding), without gradients, the model in eval mode and
    then back in its mode; ``decide`` turns a batch's logits into predictions (the top class)."""
    import torch

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    examples = sorted(examples, key=task.length)  # similar lengths together: less padding
    predictions: list = []
    with torch.no_grad():
        for chunk in task.batches(examples, batch_size):
            batch = task.collate(tokenizer, chunk, max_length)
            batch.pop("labels")
            with autocast():
                logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
            predictions.extend(decide(logits))
    model.train(was_training)
    return predictions, [e["label"] for e in examples]
