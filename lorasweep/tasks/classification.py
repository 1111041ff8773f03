"""Sequence classification: collation and accuracy shared by classification tasks."""

from __future__ import annotations

from typing import Any

from .base import Task
from .metrics import accuracy

__all__ = ["ClassificationTask"]


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
        import torch

        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        examples = sorted(examples, key=self.length)  # similar lengths together: less padding
        predictions: list[int] = []
        with torch.no_grad():
            for chunk in self.batches(examples, batch_size):
                batch = self.collate(tokenizer, chunk, max_length)
                batch.pop("labels")
                with autocast():
                    logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
                predictions.extend(logits.argmax(-1).tolist())
        model.train(was_training)
        return accuracy(predictions, [e["label"] for e in examples])
