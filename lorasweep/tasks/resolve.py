"""The one place a task key becomes a Task class: a built-in key, ``module:Class``, or a name of
the ``lorasweep.tasks`` entry-point group (an installed package's tasks).

Built-in keys always win. Plugins are found lazily: an entry point is imported only when a run
asks for its name (or ``lorasweep tasks`` lists it), so a broken plugin fails only the runs that
ask for it, with an error naming it.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..text import did_you_mean
from .base import _REGISTRY, TASK_GROUPS, Task, TaskError, expand_tasks_safe

__all__ = [
    "ENTRY_POINT_GROUP",
    "class_path",
    "find_task",
    "get_task",
    "list_plugins",
    "make_task",
    "resolve_task",
    "task_ref",
]

#: The entry-point group a package declares its tasks in: ``reviews = "my_pkg.tasks:ReviewTask"``.
ENTRY_POINT_GROUP = "lorasweep.tasks"


def _entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def class_path(cls: type) -> str:
    """``module:Class`` of ``cls``: what a worker imports to get the same class."""
    return f"{cls.__module__}:{cls.__qualname__}"


def _checked(cls: Any, source: str) -> type[Task]:
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise TaskError(f"{source} is not a lorasweep Task (subclass lorasweep.tasks.Task, "
                        "e.g. ClassificationTask)")
    if getattr(cls, "__abstractmethods__", None):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        raise TaskError(f"{source} does not implement {missing}: define them in the class")
    if not cls.key or not cls.metric or not cls.summary:
        raise TaskError(f"{source} needs a key, a metric and a summary (class attributes)")
    if cls.key in _REGISTRY and _REGISTRY[cls.key] is not cls:
        raise TaskError(f"{source} has key {cls.key!r}, which shadows a built-in task: give it "
                        "a key of its own")
    return cls


def _import_path(ref: str, source: str) -> type[Task]:
    module, _, name = ref.partition(":")
    if not module or not name:
        raise TaskError(f"{source}: a task class is written module:Class, e.g. "
                        "my_pkg.tasks:ReviewTask")
    try:
        obj: Any = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
    except Exception as err:  # ImportError, AttributeError, or anything the module raises
        reason = f"{type(err).__name__}: {err}".splitlines()[0]
        raise TaskError(f"cannot import {source} ({reason}): install its package or put it on "
                        "PYTHONPATH") from None
    return _checked(obj, source)


def resolve_task(key: str) -> type[Task]:
    """The Task class of ``key``: a built-in key, ``module:Class``, or an installed plugin's
    name (built-ins win). A :class:`TaskError` names the key and the fix."""
    if not isinstance(key, str) or not key:
        raise TaskError(f"a task key must be a non-empty string, got {key!r}")
    if key in _REGISTRY:
        return _REGISTRY[key]
    if ":" in key:
        return _import_path(key, key)
    plugin = _entry_points().get(key)
    if plugin is not None:
        return _import_path(plugin.value, f"plugin {key!r} ({plugin.value})")
    known = sorted(_REGISTRY) + [g for g in TASK_GROUPS if expand_tasks_safe(g)]
    known += sorted(set(_entry_points()) - set(_REGISTRY))
    raise TaskError(f"unknown task {key!r}{did_you_mean(key, known)}: choose one of "
                    f"{', '.join(known)}, or give a class as module:Class (see `lorasweep tasks`)")


def find_task(key: Any) -> type[Task] | None:
    """:func:`resolve_task`, or None where it fails (for defaults and labels in reports, which
    must not stop on a plugin that is not installed here)."""
    try:
        return resolve_task(key)
    except TaskError:
        return None


def make_task(key: str, **options: Any) -> Task:
    """The task ``key`` (a built-in key, ``module:Class`` or a plugin's name) with ``options``
    (checked), without checking that its data is reachable."""
    cls = resolve_task(key)
    return cls(**options)


def get_task(key: str, **options: Any) -> Task:
    """:func:`make_task`, then its :meth:`~Task.check_available` (its data can be loaded here)."""
    task = make_task(key, **options)
    task.check_available()
    return task


def task_ref(key: str) -> str:
    """What a study stores so that every worker imports the same class: the key itself for a
    built-in, else the resolved ``module:Class``."""
    return key if key in _REGISTRY else class_path(resolve_task(key))


def list_plugins() -> list[dict[str, str]]:
    """Every entry point of the group, imported to check it: ``key``, ``target`` and ``error``
    (empty when it imports and is a Task; a name a built-in holds is marked, never used)."""
    rows = []
    for name, ep in sorted(_entry_points().items()):
        error = ""
        if name in _REGISTRY:
            error = f"plugin name {name!r} shadows a built-in task (the built-in is used); rename it"
        else:
            try:
                _import_path(ep.value, f"plugin {name!r} ({ep.value})")
            except TaskError as err:
                error = str(err)
        rows.append({"key": name, "target": ep.value, "error": error})
    return rows
