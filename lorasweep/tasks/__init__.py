"""Tasks: one file per task family, one registry key per task."""

from . import (  # noqa: F401  (importing a task module registers its tasks)
    arith,  # math generation
    glue,  # the nine GLUE tasks
    gsm8k,  # math generation
    humaneval,
    image,  # the seven image-classification tasks
    sentiment,
    sft,  # the user's own instruction / chat data
    text_classification,  # the user's own data
)
from .base import (
    TASK_GROUPS,
    HubDataError,
    Task,
    TaskData,
    TaskError,
    expand_tasks,
    expand_tasks_safe,
    register_task,
    task_registry,
)
from .resolve import (
    ENTRY_POINT_GROUP,
    find_task,
    get_task,
    list_plugins,
    make_task,
    resolve_task,
    task_ref,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "TASK_GROUPS",
    "Task",
    "TaskData",
    "HubDataError",
    "TaskError",
    "expand_tasks",
    "find_task",
    "get_task",
    "list_plugins",
    "list_tasks",
    "make_task",
    "register_task",
    "resolve_task",
    "task_ref",
    "task_registry",
]


def list_tasks() -> list[dict[str, str]]:
    """Every task key (and group key) with its metric, default model and summary, then the
    installed plugins' (a plugin that fails to import shows its error as its summary)."""
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
    builtin = {row["key"] for row in rows}
    for plugin in list_plugins():
        cls = None if plugin["error"] else find_task(plugin["key"])
        shadowing = plugin["key"] in builtin  # listed apart: the key runs the built-in
        rows.append({"key": plugin["key"] + (" (plugin)" if shadowing else ""),
                     "metric": cls.metric if cls else "-",
                     "default_model": cls.default_model if cls else "-",
                     "summary": (f"plugin {plugin['target']}: {cls.summary}" if cls
                                 else f"BROKEN plugin: {plugin['error']}")})
    return rows
