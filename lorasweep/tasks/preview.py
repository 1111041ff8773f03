"""What a task will train on, before paying for it: split sizes, label counts and the first
training rows as the model's collation sees them (``lorasweep tasks --check``)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from .base import Task, TaskData

__all__ = ["preview_lines"]

_WIDTH = 200


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _WIDTH else text[:_WIDTH - 3] + "..."


def _label_name(task: Task, label: Any) -> str:
    names = getattr(task, "names", None)
    if isinstance(label, int) and names and 0 <= label < len(names):
        return f"{label} ({names[label]})"
    return str(label)


def preview_lines(task: Task, data: TaskData, show: int = 2) -> list[str]:
    """Lines describing ``data`` of ``task``: sizes, label counts per split, ``show`` rows."""
    test_note = " (the validation split: no test split)" if data.test is data.validation else ""
    lines = [f"task {task.key}: metric {task.metric}",
             f"splits: train {len(data.train)}, validation {len(data.validation)}, "
             f"test {len(data.test)}{test_note}"]
    rule = getattr(task, "validation_rule", None)
    if rule:
        lines.append(f"validation: {rule}")
    for name, rows in (("train", data.train), ("validation", data.validation),
                       ("test", data.test)):
        labels = [r["label"] for r in rows if "label" in r]
        if labels and not isinstance(labels[0], float):
            counts = Counter(labels)
            lines.append(f"labels in {name}: " + ", ".join(
                f"{_label_name(task, k)}: {counts[k]}" for k in sorted(counts, key=str)))
    lines += getattr(task, "preview_notes", list)()
    show_row = getattr(task, "show_row", None)  # a task that renders its rows (sft): as tokens
    for i, row in enumerate(data.train[:show], 1):
        if show_row is not None:
            lines.append(f"train row {i}: {show_row(row)}")
            continue
        fields = [f"{k}={_short(v)!r}" for k, v in row.items() if k != "label"]
        if "label" in row:
            fields.append(f"label (learned)={_label_name(task, row['label'])}")
        lines.append(f"train row {i}: " + "; ".join(fields))
    return lines
