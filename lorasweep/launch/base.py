"""The launcher interface and registry: run the waiting trials of some studies, somewhere.

A launcher is one file (``inline.py``, ``local.py``, ``slurm.py``) holding one class registered
under its key, with an ``Options`` dataclass; options come from ``--set launcher.X=V`` or a
recipe's ``launcher:`` mapping and are checked here like variant options (unknown names, types).
This module imports no launcher: ``launch/__init__.py`` imports each one, which registers it.

    run_sweep (sweep/run.py)  ->  Launcher.launch  ->  run_worker (sweep/worker.py), N times
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
import typing
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from ..paths import LOGS_DIR, RUNS_DIR
from ..sweep.worker import TrialEvents, WorkerSummary
from ..text import kind_name

__all__ = [
    "Interrupted",
    "LaunchError",
    "Launcher",
    "LauncherError",
    "NoOptions",
    "StoppedWatching",
    "WorkerDied",
    "get_launcher",
    "get_launcher_class",
    "launcher_registry",
    "register",
    "sigterm_interrupts",
]


class LauncherError(ValueError):
    """Bad launcher input (unknown launcher, unknown or mistyped option): one line."""


class LaunchError(RuntimeError):
    """The launch itself went wrong (a submission refused): one line."""


class WorkerDied(RuntimeError):
    """A worker process ended abnormally; the message is one line with its log path."""


class Interrupted(KeyboardInterrupt):
    """The launcher was asked to stop by ``signum`` (SIGTERM from ``kill``, ``timeout`` or a
    scheduler; Ctrl-C is a plain KeyboardInterrupt): ``lorasweep run`` exits ``128 + signum``."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """While inside, SIGTERM stops this process as Ctrl-C does (:class:`Interrupted`), so the
    launcher stops its workers (each records its running trial) and its display closes,
    instead of the process ending where it stands. A worker in this process (inline) records
    its trial first: its stop requests hand the signal on to this handler once it has."""
    if threading.current_thread() is not threading.main_thread():  # handlers: main thread only
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class StoppedWatching(KeyboardInterrupt):
    """Ctrl-C on an attached run whose workers run elsewhere: they go on; ``jobs`` says which."""

    def __init__(self, jobs: list[str]):
        super().__init__(", ".join(jobs))
        self.jobs = jobs


@dataclasses.dataclass
class NoOptions:
    def validate(self) -> None: ...


class Launcher(ABC):
    """Runs ``run_worker`` over the studies, in one or more places, until nothing waits."""

    key: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    #: Whether ``launch`` can return right after starting the workers (``run --detach``).
    can_detach: ClassVar[bool] = False
    #: Whether the workers run in this process (they may then reuse what the preflight loaded).
    in_process: ClassVar[bool] = False

    def __init__(self, options: Any = None, workers: int = 1, runs_dir: str | Path = RUNS_DIR,
                 detach: bool = False, trial_fn: Any = None):
        self.options = options if options is not None else self.Options()
        self.workers = workers
        self.runs_dir = Path(runs_dir)
        self.detach = detach
        self.submitted: list[str] = []  # cluster job ids, for launchers that submit jobs
        self.trial_fn = trial_fn  # a picklable stand-in for run_trial (tests, benchmarks)

    @property
    def log_dir(self) -> Path:
        """Worker logs: ``logs/`` beside the runs folder (``lorasweep-out/logs/``)."""
        return self.runs_dir.parent / LOGS_DIR.name

    @abstractmethod
    def launch(self, storage_url: str, study_names: list[str], total: int,
               events: TrialEvents) -> WorkerSummary:
        """Run every waiting trial; ``total`` is how many are expected (for progress)."""

    @classmethod
    def parse_options(cls, options: dict[str, Any] | None) -> Any:
        """Build the Options dataclass from plain data, naming unknown options and the known ones."""
        options = dict(options or {})
        fields = {f.name: f for f in dataclasses.fields(cls.Options)}
        unknown = sorted(set(options) - set(fields))
        if unknown:
            known = ", ".join(sorted(fields)) or "none"
            raise LauncherError(
                f"unknown option {unknown[0]!r} for launcher {cls.key!r} (its options: {known})"
            )
        hints = typing.get_type_hints(cls.Options)
        typed = {k: _coerce(v, hints[k], f"launcher {cls.key} option {k}") for k, v in options.items()}
        parsed = cls.Options(**typed)
        parsed.validate()
        return parsed


_REGISTRY: dict[str, type[Launcher]] = {}


def register(cls: type[Launcher]) -> type[Launcher]:
    """Class decorator: add a launcher to the registry under ``cls.key``."""
    if not cls.key or not cls.summary:
        raise TypeError(f"{cls.__name__} needs a key and a summary")
    if cls.key in _REGISTRY and _REGISTRY[cls.key] is not cls:
        raise TypeError(f"launcher key {cls.key!r} registered twice")
    _REGISTRY[cls.key] = cls
    return cls


def launcher_registry() -> dict[str, type[Launcher]]:
    """Every launcher (importing this module ran the package's ``__init__``, which imports, and
    so registers, each launcher's file)."""
    return dict(_REGISTRY)


def get_launcher_class(key: str) -> type[Launcher]:
    known = launcher_registry()
    if key not in known:
        raise LauncherError(f"unknown launcher {key!r}: choose one of {', '.join(sorted(known))}")
    return known[key]


def get_launcher(key: str, workers: int = 1, runs_dir: str | Path = RUNS_DIR,
                 options: dict[str, Any] | None = None) -> Launcher:
    cls = get_launcher_class(key)
    return cls(cls.parse_options(options), workers=workers, runs_dir=runs_dir)


def _coerce(value: Any, hint: Any, what: str) -> Any:
    """CLI strings and YAML values into the option's declared type."""
    import types

    optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
    if value is None:
        if optional and type(None) in typing.get_args(hint):
            return None
        raise LauncherError(f"{what} cannot be empty")
    kind = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
    if typing.get_origin(kind) in (list, tuple):
        items = value if isinstance(value, (list, tuple)) else [value]
        if not all(isinstance(i, str) for i in items):
            raise LauncherError(f"{what} must be a list of strings, got {value!r}")
        return list(items)
    if typing.get_origin(kind) is dict or kind is dict:
        if not isinstance(value, dict):
            raise LauncherError(f"{what} must be a mapping (e.g. {{key: value}}), got {value!r}")
        return dict(value)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return str(value).lower() in ("1", "true", "yes", "on")
    elif kind in (int, float):
        if not isinstance(value, bool):
            try:
                number = kind(value)
                if kind is int and isinstance(value, float) and value != number:
                    raise ValueError(value)
                return number
            except (TypeError, ValueError):
                pass
    elif kind is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    else:
        return value
    raise LauncherError(f"{what} must be {kind_name(kind)}, got {value!r}")
