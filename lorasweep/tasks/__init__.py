"""Tasks: one file per task family, one registry key per task."""

from . import sentiment  # noqa: F401  (registers the task)
from .base import Task, TaskData, TaskError, get_task, register_task, task_registry

__all__ = ["Task", "TaskData", "TaskError", "get_task", "list_tasks", "register_task", "task_registry"]


def list_tasks() -> list[dict[str, str]]:
    return [
        {"key": k, "metric": c.metric, "default_model": c.default_model, "summary": c.summary}
        for k, c in sorted(task_registry().items())
    ]
