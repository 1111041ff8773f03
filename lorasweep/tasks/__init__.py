"""Tasks: one file per task family, one registry key per task."""

from . import (  # noqa: F401  (importing a task module registers its tasks)
    arith,  # math generation
    glue,  # the nine GLUE tasks
    gsm8k,  # math generation
    humaneval,
    image,  # the seven image-classification tasks
    sentiment,
)
from .base import (
    TASK_GROUPS,
    HubDataError,
    Task,
    TaskData,
    TaskError,
    expand_tasks,
    expand_tasks_safe,
    get_task,
    make_task,
    register_task,
    task_registry,
)

__all__ = [
    "TASK_GROUPS",
    "Task",
    "TaskData",
    "HubDataError",
    "TaskError",
    "expand_tasks",
    "get_task",
    "list_tasks",
    "make_task",
    "register_task",
    "task_registry",
]


def list_tasks() -> list[dict[str, str]]:
    """Every task key (and group key) with its metric, default model and summary."""
    rows = [
        {"key": k, "metric": c.metric, "default_model": c.default_model, "summary": c.summary}
        for k, c in sorted(task_registry().items())
    ]
    for group in TASK_GROUPS:
        members = expand_tasks_safe(group)
        if members:
            first = task_registry()[members[0]]
            rows.append({"key": group, "metric": "average of its tasks' metrics",
                         "default_model": first.default_model,
                         "summary": f"group: sweeps {', '.join(members)} and reports their average"})
    return rows
