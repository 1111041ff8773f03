"""Launchers: a registry (inline, local, slurm), one file each, behind one small interface."""

# Each import registers one launcher (adding one: its file and one name here).
from . import inline, local, slurm  # noqa: F401
from .base import (
    Interrupted,
    Launcher,
    LauncherError,
    LaunchError,
    StoppedWatching,
    WorkerDied,
    get_launcher,
    get_launcher_class,
    launcher_registry,
    register,
    sigterm_interrupts,
)

__all__ = [
    "Interrupted",
    "LaunchError",
    "Launcher",
    "LauncherError",
    "StoppedWatching",
    "WorkerDied",
    "get_launcher",
    "get_launcher_class",
    "launcher_registry",
    "list_launchers",
    "register",
    "sigterm_interrupts",
]


def list_launchers() -> list[dict]:
    import dataclasses

    return [{"key": k, "summary": c.summary,
             "options": {f.name: f.default for f in dataclasses.fields(c.Options)}}
            for k, c in sorted(launcher_registry().items())]
