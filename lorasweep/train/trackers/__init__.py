"""Experiment trackers: sinks that receive a trial's event-log records (:mod:`..events`).

A sweep names them with ``--log tensorboard,mlflow,wandb`` (a recipe's ``log:``; options
``log.every``, ``log.project``, ``log.artifacts``, recorded in the study with the choice);
each backend is an optional extra, imported only when named. The worker's reporter writes the
event log and fans each record out to the trial's sinks (:class:`Sinks`). A sink that raises warns
once, is dropped for that trial and is recorded in it; it never fails the trial.

A sink implements :class:`Sink`: ``open(spec, resume_step)`` before the first record (a resumed
trial continues after ``resume_step``), ``log(record)`` per step (every ``log.every`` steps) and
per evaluation, ``close(summary, state)`` with the trial's final metrics. After ``open`` its
``ref`` says where the trial's run is (a run id, or a folder): the trial records them all in its
``tracker`` attribute. With ``log.artifacts`` a finished trial's adapter (the run folder's
``adapter/``, written by the trial: tensors and their configuration, never a checkpoint) is
logged as an artifact where the backend keeps artifacts (:func:`adapter_files`).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from ...config import LOG_OPTIONS as _OPTIONS
from ...config import TrialSpec

__all__ = ["LOG_OPTIONS", "TRACKERS", "Sink", "Sinks", "adapter_files", "check_trackers",
           "metric_of", "prepare", "scalars", "tracker_config", "warn_dropped", "where_lines"]

#: backend -> (module of its sink, the module it needs, the extra that installs it)
TRACKERS: dict[str, tuple[str, str, str]] = {
    "tensorboard": ("tensorboard", "tensorboard", "tensorboard"),
    "mlflow": ("mlflow", "mlflow", "mlflow"),
    "wandb": ("wandb", "wandb", "wandb"),
}
#: ``--set log.X=V``: ``every`` (steps between step records sent to the trackers; the event log
#: keeps all), ``project``, ``artifacts``.
LOG_OPTIONS = tuple(_OPTIONS)


class Sink(Protocol):
    ref: str  # where the trial's run is, once open: a run id or a folder

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
            mask: Callable[[str], str] = str, options: dict[str, Any] | None = None) -> None:
    """What a backend makes once per sweep before its workers start (MLflow's parent runs); a
    failure warns (its message through ``mask``: a tracking URI may hold a password) and is
    left to the trials' own sinks."""
    for name in names:
        module = importlib.import_module(f"{__name__}.{TRACKERS[name][0]}")
        if hasattr(module, "prepare"):
            try:
                module.prepare(sweep, studies, options or {})
            except Exception as err:
                first = (str(err).splitlines() or [''])[0]
                warnings.warn(mask(f"tracker {name}: could not prepare the sweep: "
                                   f"{type(err).__name__}: {first}"),
                              RuntimeWarning, stacklevel=2)


def where_lines(names: list[str], sweep: str, label: Callable[[str], str] = str,
                options: dict[str, Any] | None = None) -> list[str]:
    """Where each backend that says so keeps the sweep's runs, for the run's closing lines
    (a tracking URI through ``label``, which masks its password)."""
    lines = []
    for name in names:
        module = importlib.import_module(f"{__name__}.{TRACKERS[name][0]}")
        if hasattr(module, "where"):
            lines.append(module.where(sweep, label, options or {}))
    return lines


def tracker_config(spec: TrialSpec, search: str = "") -> dict[str, Any]:
    """The flat configuration a tracker shows for a trial (hyperparameters first), with its
    provenance: the sweep, study, ``search`` (its study's) and lorasweep's version."""
    from ... import __version__

    v = spec.variant
    flat: dict[str, Any] = {"lr": spec.lr, "seed": spec.seed, "sweep": spec.sweep,
                            "task": spec.task, "model": spec.model, "variant": v.key,
                            "variant_tag": v.tag, "rank": v.rank, "alpha": v.alpha,
                            "budget": spec.budget, "study": spec.study,
                            "trial": spec.trial_number, "search": search,
                            "lorasweep_version": __version__}
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
    it in the trial; by default a warning). ``options``: the study's ``log`` attribute (``every``,
    ``project``, ``artifacts``) and its ``search``. :attr:`refs`: backend -> where the trial's
    run is, for the sinks that opened."""

    def __init__(self, names: list[str], every: int = 1,
                 on_error: Callable[[str, str], None] | None = None, replay: bool = False,
                 options: dict[str, Any] | None = None):
        self.every, self.on_error = max(1, int(every)), on_error or warn_dropped
        self.options = dict(options or {})
        self.sinks: dict[str, Sink] = {}
        self.refs: dict[str, str] = {}
        self.total = 0
        for name in names:  # replay: ``lorasweep export --to``, what a trial logged, again
            self._guard(name, lambda n=name: self.sinks.__setitem__(
                n, _make(n, replay, self.options)))

    def _guard(self, name: str, call: Callable[[], Any]) -> None:
        try:
            call()
        except Exception as err:  # a tracker never fails a trial
            self.sinks.pop(name, None)
            message = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"[:300]
            self.on_error(name, message)

    def open(self, spec: TrialSpec, resume_step: int, total: int) -> dict[str, str]:
        """Open each sink; returns :attr:`refs`."""
        self.total = total
        for name, sink in list(self.sinks.items()):
            self._guard(name, lambda s=sink: s.open(spec, resume_step))
        self.refs = {name: str(sink.ref) for name, sink in self.sinks.items()
                     if getattr(sink, "ref", "")}
        return dict(self.refs)

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


def adapter_files(spec: TrialSpec, state: str, options: dict[str, Any]) -> list[Path]:
    """The files a trial logs as its artifact: with ``log.artifacts``, a completed (not diverged,
    not pruned) trial's ``adapter/`` (the adapter's tensors and configuration, lorasweep's and
    PEFT's format) alone; never a checkpoint (which holds optimizer state) nor ``config.json``."""
    folder = Path(spec.run_dir) / "adapter"
    if not options.get("artifacts") or state != "completed" or not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file())


def warn_dropped(name: str, message: str) -> None:
    warnings.warn(f"tracker {name} failed and is dropped for this trial: {message}",
                  RuntimeWarning, stacklevel=3)


def _make(name: str, replay: bool = False, options: dict[str, Any] | None = None) -> Sink:
    module = importlib.import_module(f"{__name__}.{TRACKERS[name][0]}")
    return module.make_sink(replay, options or {})
