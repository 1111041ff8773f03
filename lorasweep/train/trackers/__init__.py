"""Experiment trackers: sinks that receive a trial's event-log records (:mod:`..events`).

A sweep names them with ``--log tensorboard,mlflow,wandb`` (a recipe's ``log:``; options
``log.every``, ...);
each backend is an optional extra, imported only when named. The worker's reporter writes the
event log and fans each record out to the trial's sinks (:class:`Sinks`). A sink that raises warns
once, is dropped for that trial and is recorded in it; it never fails the trial.

A sink implements :class:`Sink`: ``open(spec, resume_step)`` before the first record (a resumed
trial continues after ``resume_step``), ``log(record)`` per step (every ``log.every`` steps) and
per evaluation, ``close(summary, state)`` with the trial's final metrics.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any, Protocol

from ...config import TrialSpec

__all__ = ["LOG_OPTIONS", "TRACKERS", "Sink", "Sinks", "check_trackers", "metric_of", "prepare", "scalars",
           "tracker_config", "warn_dropped", "where_lines"]

#: backend -> (module of its sink, the module it needs, the extra that installs it)
TRACKERS: dict[str, tuple[str, str, str]] = {
    "tensorboard": ("tensorboard", "tensorboard", "tensorboard"),
    "mlflow": ("mlflow", "mlflow", "mlflow"),
    "wandb": ("wandb", "wandb", "wandb"),
}
#: ``--set log.X=V``: steps between step records sent to the trackers (the event log keeps all).
LOG_OPTIONS = ("every",)


class Sink(Protocol):
    def open(self, spec: TrialSpec, resume_step: int) -> None: ...
    def log(self, record: dict[str, Any]) -> None: ...
    def close(self, summary: dict[str, Any], state: str) -> None: ...


def check_trackers(names: list[str]) -> None:
    """Refuse an unknown backend, or one whose package is missing (before anything runs)."""
    from ...config import ConfigError

    for name in names:
        if name not in TRACKERS:
            raise ConfigError(f"unknown tracker {name!r} in --log: choose "
                              f"{', '.join(TRACKERS)} (comma-separated)")
        _, needs, extra = TRACKERS[name]
        try:
            importlib.import_module(needs)
        except ImportError:
            raise ConfigError(f"--log {name} needs the {needs} package: "
                              f"pip install 'lorasweep[{extra}]'") from None
        module = importlib.import_module(f"{__name__}.{TRACKERS[name][0]}")
        why = module.check_access() if hasattr(module, "check_access") else None
        if why:  # a key or offline mode (W&B), before anything runs
            raise ConfigError(why)


def metric_of(task: str) -> str:
    """The task's metric name (``eval/<metric>``), ``score`` for a task unknown here."""
    from ...tasks import task_registry

    cls = task_registry().get(task)
    return cls.metric if cls is not None else "score"


def prepare(names: list[str], sweep: str, studies: list[str],
            mask: Callable[[str], str] = str) -> None:
    """What a backend makes once per sweep before its workers start (MLflow's parent runs); a
    failure warns (its message through ``mask``: a tracking URI may hold a password) and is
    left to the trials' own sinks."""
    for name in names:
        module = importlib.import_module(f"{__name__}.{TRACKERS[name][0]}")
        if hasattr(module, "prepare"):
            try:
                module.prepare(sweep, studies)
            except Exception as err:
                first = (str(err).splitlines() or [''])[0]
                warnings.warn(mask(f"tracker {name}: could not prepare the sweep: "
                                   f"{type(err).__name__}: {first}"),
                              RuntimeWarning, stacklevel=2)


def where_lines(names: list[str], sweep: str, label: Callable[[str], str] = str) -> list[str]:
    """Where each backend that says so keeps the sweep's runs, for the run's closing lines
    (a tracking URI through ``label``, which masks its password)."""
    lines = []
    for name in names:
        module = importlib.import_module(f"{__name__}.{TRACKERS[name][0]}")
        if hasattr(module, "where"):
            lines.append(module.where(sweep, label))
    return lines


def tracker_config(spec: TrialSpec) -> dict[str, Any]:
    """The flat configuration a tracker shows for a trial (hyperparameters first)."""
    v = spec.variant
    flat: dict[str, Any] = {"lr": spec.lr, "seed": spec.seed, "sweep": spec.sweep,
                            "task": spec.task, "model": spec.model, "variant": v.key,
                            "variant_tag": v.tag, "rank": v.rank, "alpha": v.alpha,
                            "budget": spec.budget, "study": spec.study,
                            "trial": spec.trial_number}
    flat.update({f"variant.{k}": _scalar(val) for k, val in sorted(v.options.items())})
    flat.update({f"train.{k}": _scalar(val)
                 for k, val in sorted(spec.train.__dict__.items())})
    return flat


def scalars(record: dict[str, Any], metric: str) -> dict[str, Any]:
    """An event-log record as the scalars every tracker shows: ``train/loss``, ``train/lr/<group>``,
    ``train/grad_norm`` (and ``/<group>`` where there are several groups), ``train/tokens`` for a
    step; ``eval/<metric>`` (and ``test/<metric>``) for an evaluation."""
    if record["event"] == "step":
        values = {"train/loss": record["loss"],
                  **{f"train/lr/{g}": v for g, v in record["lr"].items()},
                  "train/grad_norm": record["grad_norm"]}
        if len(record["grad_norm_groups"]) > 1:
            values.update({f"train/grad_norm/{g}": v for g, v in record["grad_norm_groups"].items()})
        values["train/tokens"] = record["tokens"]
        return values
    if record["event"] == "eval":
        return {f"eval/{metric}": record["validation"],
                **({f"test/{metric}": record["test"]} if "test" in record else {})}
    return {}


def _scalar(value: Any) -> Any:
    return value if isinstance(value, (int, float, str, bool)) else str(value)


class Sinks:
    """The trial's sinks behind one call each; a failing one is dropped and its error handed,
    once, to ``on_error(backend, message)`` (the worker masks secrets in it, warns and records
    it in the trial; by default a warning)."""

    def __init__(self, names: list[str], every: int = 1,
                 on_error: Callable[[str, str], None] | None = None, replay: bool = False):
        self.every, self.on_error = max(1, int(every)), on_error or warn_dropped
        self.sinks: dict[str, Sink] = {}
        self.total = 0
        for name in names:  # replay: ``lorasweep export --to``, what a trial logged, again
            self._guard(name, lambda n=name: self.sinks.__setitem__(n, _make(n, replay)))

    def _guard(self, name: str, call: Callable[[], Any]) -> None:
        try:
            call()
        except Exception as err:  # a tracker never fails a trial
            self.sinks.pop(name, None)
            message = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"[:300]
            self.on_error(name, message)

    def open(self, spec: TrialSpec, resume_step: int, total: int) -> None:
        self.total = total
        for name, sink in list(self.sinks.items()):
            self._guard(name, lambda s=sink: s.open(spec, resume_step))

    def log(self, record: dict[str, Any]) -> None:
        step = int(record["step"])
        if record["event"] == "step" and step % self.every and step != self.total:
            return
        for name, sink in list(self.sinks.items()):
            self._guard(name, lambda s=sink: s.log(record))

    def close(self, summary: dict[str, Any], state: str) -> None:
        for name, sink in list(self.sinks.items()):
            self._guard(name, lambda s=sink: s.close(summary, state))
        self.sinks = {}


def warn_dropped(name: str, message: str) -> None:
    warnings.warn(f"tracker {name} failed and is dropped for this trial: {message}",
                  RuntimeWarning, stacklevel=3)


def _make(name: str, replay: bool = False) -> Sink:
    module = importlib.import_module(f"{__name__}.{TRACKERS[name][0]}")
    return module.make_sink(replay)
