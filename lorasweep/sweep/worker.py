"""The worker loop: pop the next waiting trial of a study, run it, record everything.

Every launcher runs this same loop (in-process, in local processes, in SLURM array tasks). The
worker holds no state the sweep needs: a trial is popped under the study's lock, beats a heartbeat
while it runs (:mod:`.heartbeat`) and is told COMPLETE / PRUNED / FAIL with its metrics and
provenance. A killed worker loses only its running trial: once its heartbeat is older than the
grace period, a live worker of the same run marks it FAIL and enqueues it again (bounded by the
sweep's ``max_retries``). So a worker that finds nothing waiting but trials still running does not
leave: it waits for them to finish or to be found lost.

``LORASWEEP_TRIAL_FUNCTION=module:function`` replaces ``run_trial`` in workers that cannot be
given ``trial_fn`` (worker processes, SLURM array tasks): a stand-in for tests of the scheduling.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import math
import os
import socket
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import _phase as phase
from .._json import json_safe
from ..config import TrialSpec
from ..train.events import EventLog
from ..train.signals import StopRequests, TrialStopped
from ..train.trackers import Sinks, warn_dropped
from .heartbeat import Heartbeat, fail_stale
from .objective import objective_of
from .outcome import PROGRESS_ATTR, PROGRESS_INTERVAL_S, TrialOutcome, outcome_of
from .search import PLANNED
from .store import mask_secrets, storage_label
from .study import (
    LOG_ATTR,
    STOPPED_ATTR,
    grid_point,
    locked,
    make_pruner,
    requeue_failed,
    retry_point,
    study_run_root,
    trial_template,
)

__all__ = ["LAUNCH_ATTR", "TrialEvents", "WorkerSummary", "run_worker", "worker_id"]

#: A trial's user attribute: the id of the launch whose worker ran it (a launcher that watches
#: the store counts its own workers' trials by it, not a concurrent run's).
LAUNCH_ATTR = "launch"


#: When this many first trials of a study fail with the same reason, and none succeeded, the
#: worker stops that study: a setup error would fail every remaining learning rate the same way.
#: Counted in this worker, and across the study's trials (its workers together); the study's
#: ``STOPPED_ATTR`` then holds the reason, so that every worker leaves it and the launcher can
#: say why (cleared when a new run syncs the study).
SAME_FAILURES_TO_STOP = 2


@dataclasses.dataclass
class WorkerSummary:
    completed: int = 0
    pruned: int = 0
    failed: int = 0
    diverged: int = 0
    #: Studies this worker stopped because their first trials failed the same way -> the reason.
    stopped: dict[str, str] = dataclasses.field(default_factory=dict)

    def __str__(self) -> str:
        """``3 completed (1 diverged), 1 failed attempt, 0 pruned``: a worker log's closing line."""
        from ..text import plural

        text = (f"{self.completed} completed ({self.diverged} diverged), "
                f"{plural(self.failed, 'failed attempt')}, {self.pruned} pruned")
        return text + "".join(f"; stopped {study}: {reason}" for study, reason in self.stopped.items())


class TrialEvents:
    """Callbacks for progress display; the default shows nothing."""

    def trial_started(self, spec: TrialSpec, total_steps: int) -> None:
        """The in-process trial began (``total_steps``: 0 while not known yet)."""
    def trial_step(self, step: int, loss: float) -> None: ...
    def trial_phase(self, phase: str, done: int, total: int | None) -> None:
        """The in-process trial is ``done`` of ``total`` into ``phase``
        (:data:`lorasweep._phase.PHASES`; training's steps come by :meth:`trial_step`)."""
    def trial_finished(self, spec: TrialSpec, state: str, value: float | None,
                       outcome: TrialOutcome | None = None) -> None: ...
    def sweep_progress(self, finished: int) -> None:
        """Trials finished so far, for launchers that only see the store."""
    def store_update(self, snapshot: Any) -> None:
        """Running and newly finished trials read from the store (a ``StoreSnapshot``), for
        launchers whose workers run elsewhere."""


def worker_id(pid: int | None = None) -> str:
    """Who runs a trial: ``slurm:JOB_TASK`` inside a SLURM array task, else ``HOST:PID``; with
    ``pid``, the id of that process of this host (a local launcher's worker)."""
    if pid is not None:
        return f"{socket.gethostname()}:{pid}"
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    if job:
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        return f"slurm:{job}_{task}" if task else f"slurm:{job}"
    return f"{socket.gethostname()}:{os.getpid()}"


def _trial_function() -> Callable[..., Any]:
    target = os.environ.get("LORASWEEP_TRIAL_FUNCTION")
    if not target:
        from ..train.trial import run_trial

        return run_trial
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


class _OptunaReporter:
    """Bridges the training loop to the trial: intermediate scores, pruning, progress, and the
    trial's event log (``events.jsonl`` in its run folder)."""

    def __init__(self, trial: Any, events: TrialEvents, spec: TrialSpec,
                 tracking: dict[str, Any] | None = None, search: str = ""):
        self.trial, self.events, self.spec = trial, events, spec
        self.total, self.written = 0, 0.0
        self.step, self.loss = 0, None  # training's, kept while another phase runs
        self.phase: tuple[str, int, int | None] = ("", 0, None)
        self.log = EventLog(spec.run_dir)
        tracking = tracking or {}
        self.errors: dict[str, str] = {}
        self.sinks = Sinks(list(tracking.get("backends") or []), int(tracking.get("every") or 1),
                           on_error=self._sink_failed, options={**tracking, "search": search})

    def _sink_failed(self, name: str, message: str) -> None:
        """Recorded in the trial (``tracker_error``), which goes on without that tracker."""
        self.errors[name] = message = mask_secrets(message)
        warn_dropped(name, message)
        self.trial.set_user_attr("tracker_error", dict(self.errors))

    def on_event(self, record: dict[str, Any]) -> None:
        if record["event"] == "start":  # the sinks first: W&B offline reads the earlier log
            refs = self.sinks.open(self.spec, int(record["step"]), int(record["total"]))
            if refs:  # which tracker runs this trial writes to (status --json shows them)
                self.trial.set_user_attr("tracker", refs)
            self.log.start(int(record["step"]))
            return
        written = self.log.write(record)
        if written:
            self.sinks.log(record)
        if written and record.get("final") and math.isfinite(record["validation"]):
            # the last evaluation is an intermediate value too (at its step), never a pruning
            # decision; a step reported before (a pruned trial's) keeps its value
            if int(record["step"]) not in self.trial.storage.get_trial(
                    self.trial._trial_id).intermediate_values:
                self.trial.report(record["validation"], int(record["step"]))

    def close(self) -> None:
        self.log.close()

    def finish(self, summary: dict[str, Any], state: str) -> None:
        """Close the trackers with the trial's final metrics and state."""
        self.sinks.close(summary, state)

    def begin(self) -> None:
        """The trial was popped: it shows as ``initialising`` until its first phase reports."""
        self.events.trial_started(self.spec, 0)
        self.on_phase("initialising", 0, None)

    def on_start(self, total_steps: int) -> None:
        self.total = total_steps
        self.on_phase("training", 0, total_steps)

    def on_step(self, step: int, loss: float) -> None:
        self.step, self.loss = step, loss
        self._phase("training", step, self.total)
        self.events.trial_step(step, loss)

    def on_phase(self, phase: str, done: int, total: int | None) -> None:
        """What the trial does now (:mod:`lorasweep._phase`), for the store and the display."""
        self._phase(phase, done, total)
        self.events.trial_phase(phase, done, total)

    def _phase(self, phase: str, done: int, total: int | None) -> None:
        """In the store at once when the phase changes or ends, else at most every
        ``PROGRESS_INTERVAL_S`` seconds."""
        changed = phase != self.phase[0]
        self.phase = (phase, done, total)
        if changed or done == total or time.monotonic() - self.written >= PROGRESS_INTERVAL_S:
            self._write_progress()

    def _write_progress(self) -> None:
        """The step count and the phase in the store, where displays of other processes read
        them: ``{"step", "total", "loss"}`` of training, ``{"phase", "done", "of"}`` now."""
        self.written = time.monotonic()
        phase, done, total = self.phase
        self.trial.set_user_attr(PROGRESS_ATTR, json_safe({
            "step": self.step, "total": self.total, "loss": self.loss,
            "phase": phase, "done": done, "of": total}))

    def report(self, step: int, value: float) -> bool:
        self.trial.report(value, step)
        return self.trial.should_prune()

    def on_checkpoint(self, saved: dict[str, Any]) -> None:
        """Shown by ``lorasweep status``: the step and time of the last checkpoint, its size."""
        self.trial.set_user_attr("checkpoint", saved)


def _trial_spec(study: Any, trial: Any, storage_url: str) -> TrialSpec:
    attrs = study.user_attrs
    lr = trial.suggest_float("lr", 1e-12, 1e3, log=True)
    seed = trial.suggest_int("seed", 0, 2**31 - 1)
    template = trial_template(attrs)
    root = attrs.get("run_root") or study_run_root(
        attrs["runs_dir"], template["sweep"], template["task"], template["model"],
        attrs["variant_tag"])
    # one folder per study and grid point: an adaptive search's rungs of a point share it, so
    # each resumes the checkpoint the rung below left there
    run_dir = Path(root) / grid_point(lr, seed)
    return TrialSpec.from_dict(
        template, study=study.study_name, trial_number=trial.number, lr=lr, seed=seed,
        storage=storage_label(storage_url),  # the label: a TrialSpec is written and stored
        run_dir=str(run_dir.resolve()), budget=float(trial.user_attrs.get("budget", 1.0)))


_DONE, _BLOCKED = "done", "blocked"


def _ask_waiting(study: Any) -> Any:
    """Pop a waiting trial (call it holding the study's lock), or None when none waits."""
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        return None
    with warnings.catch_warnings():  # Optuna's heartbeat is driven by us, not optimize()
        warnings.simplefilter("ignore", UserWarning)
        return study.ask()


def _next_trial(study: Any, storage: Any, storage_url: str) -> Any:
    """The next trial to run (popped under the study's lock), or _DONE / _BLOCKED.

    A grid study first fails lost trials and enqueues failed points again (bounded by
    ``max_retries``); it is blocked while trials run elsewhere (one may yet be lost) and done when
    nothing waits or runs. An adaptive study proposes more (under its lock) when nothing waits;
    it is blocked while its next step needs results still running elsewhere.
    """
    from optuna.trial import TrialState

    adaptive = study.user_attrs.get("search") in PLANNED
    with locked(study, storage_url, storage):
        if adaptive:
            fail_stale(study, storage)
        else:
            requeue_failed(study, storage, int(study.user_attrs.get("max_retries", 2)))
        trial = _ask_waiting(study)
        running = bool(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
    if trial is None and not adaptive:
        return _BLOCKED if running else _DONE
    if trial is None:
        from .adaptive import propose

        result = propose(study, storage, storage_url, retry_failed=2)  # one in-run retry
        with locked(study, storage_url, storage):
            trial = _ask_waiting(study)
        if trial is None:
            return _DONE if result.plan.finished else _BLOCKED
    if "grid_point" not in trial.user_attrs:  # cannot happen under the lock; never run it
        trial.set_user_attr("stray", True)
        study.tell(trial, state=TrialState.FAIL)
        return _BLOCKED
    return trial


def run_worker(storage_url: str, study_names: list[str], events: TrialEvents | None = None,
               should_stop: Callable[[], bool] = lambda: False,
               trial_fn: Callable[..., Any] | None = None, poll_s: float = 1.0,
               leave_when_blocked: bool = False, launch: str | None = None) -> WorkerSummary:
    """Run the trials of ``study_names`` (earlier studies first) until none is left, or until the
    process is asked to stop (the running trial is then checkpointed, failed and its point
    re-enqueued).

    ``trial_fn`` runs one trial (default :func:`lorasweep.train.trial.run_trial`; tests and
    benchmarks pass a stand-in). While every unfinished study waits on trials running elsewhere
    (an adaptive search between steps), the worker polls every ``poll_s`` seconds; with
    ``leave_when_blocked`` (a SLURM array task, which holds its allocation while it waits) it
    returns instead: whatever is left, a task still running or the launcher's next task runs.
    ``launch``: recorded on each trial this worker runs (:data:`LAUNCH_ATTR`).
    """
    from .store import open_storage

    if trial_fn is None:
        trial_fn = _trial_function()
    events = events or TrialEvents()
    storage = open_storage(storage_url, create=False)
    summary = WorkerSummary()
    with StopRequests() as stops:  # SIGTERM/SIGUSR2: checkpoint, record, then stop
        stopping = lambda: should_stop() or stops.signum is not None  # noqa: E731
        _work(storage, storage_url, study_names, events, stopping, summary, trial_fn, poll_s,
              leave_when_blocked, launch)
    stops.forward()  # the signal's own effect (end the process; submitit: requeue the job)
    return summary


def _work(storage: Any, storage_url: str, study_names: list[str], events: TrialEvents,
          should_stop: Callable[[], bool], summary: WorkerSummary,
          run_trial: Callable[..., Any], poll_s: float, leave_when_blocked: bool = False,
          launch: str | None = None) -> None:
    import optuna
    from optuna.exceptions import UpdateFinishedTrialError

    active = []
    reasons: dict[str, list[str] | None] = {}  # a study's fail reasons, while none succeeded
    for name in study_names:
        study = optuna.load_study(study_name=name, storage=storage)
        study.pruner = make_pruner(study.user_attrs.get("pruner"))  # never Optuna's default
        active.append(study)
    while active and not should_stop():
        ran = False
        for study in list(active):
            reason = _stopped_elsewhere(study, storage)
            if reason is not None:  # another worker stopped it: its first trials failed alike
                summary.stopped[study.study_name] = reason
                active.remove(study)
                continue
            trial = _next_trial(study, storage, storage_url)
            if isinstance(trial, str):
                if trial == _DONE:
                    active.remove(study)
                continue
            trial.set_user_attr("worker", worker_id())
            if launch is not None:
                trial.set_user_attr(LAUNCH_ATTR, launch)
            spec = _trial_spec(study, trial, storage_url)
            trial.set_user_attr("run_dir", spec.run_dir)  # known before it runs, even if it fails
            try:
                state, value, reason = _run_one(study, storage, storage_url, trial, spec, events,
                                                run_trial)
            except UpdateFinishedTrialError:  # its heartbeat came late and it was retried elsewhere
                print(f"trial {trial.number} was taken as lost (heartbeat late): result dropped",
                      flush=True)
                summary.failed += 1
                break
            events.trial_finished(spec, state, value, outcome_of(storage.get_trial(trial._trial_id)))
            seen = reasons.setdefault(study.study_name, [])
            if reason is None:
                reasons[study.study_name] = None  # one succeeded: later failures are the LR's own
            elif seen is not None:
                seen.append(reason)
                if (len(seen) >= SAME_FAILURES_TO_STOP and len(set(seen)) == 1) \
                        or _failed_alike(study, storage, reason):
                    summary.stopped[study.study_name] = reason  # a setup error: stop repeating it
                    study.set_user_attr(STOPPED_ATTR, reason)
                    active.remove(study)
            if state == "diverged":  # a diverged trial is a result: complete, at the worst score
                summary.diverged += 1
                state = "completed"
            state = "failed" if state == "stopped" else state
            setattr(summary, state, getattr(summary, state) + 1)
            ran = True
            break  # back to the first unfinished study
        if active and not ran:
            if leave_when_blocked:
                print("nothing waits that this worker could run: leaving", flush=True)
                return
            time.sleep(poll_s)


def _stopped_elsewhere(study: Any, storage: Any) -> str | None:
    """The reason another worker stopped ``study`` for, or None."""
    attrs = storage.get_study_user_attrs(study._study_id)
    reason = attrs.get(STOPPED_ATTR)
    return reason if isinstance(reason, str) else None


def _failed_alike(study: Any, storage: Any, reason: str) -> bool:
    """Whether the study's trials, all workers' together, have none finished and at least
    ``SAME_FAILURES_TO_STOP`` failed with an error, every one with ``reason``."""
    trials = storage.get_all_trials(study._study_id, deepcopy=False)
    if any(t.state.name in ("COMPLETE", "PRUNED") for t in trials):
        return False
    errors = [t.user_attrs.get("fail_reason") for t in trials
              if t.state.name == "FAIL" and "traceback" in t.user_attrs]
    return len(errors) >= SAME_FAILURES_TO_STOP and set(errors) == {reason}


def _run_one(study: Any, storage: Any, storage_url: str, trial: Any, spec: TrialSpec,
             events: TrialEvents, run_trial: Callable[..., Any]
             ) -> tuple[str, float | None, str | None]:
    """Run one trial and tell the store; ``(state, value, fail reason or None)``."""
    from optuna.trial import TrialState

    reporter = _OptunaReporter(trial, events, spec, study.user_attrs.get(LOG_ATTR),
                               str(study.user_attrs.get("search") or ""))
    reporter.begin()
    with Heartbeat(storage, trial._trial_id), contextlib.closing(reporter), \
            phase.listening(reporter.on_phase):
        try:
            result = run_trial(spec, reporter)
        except TrialStopped as stop:  # asked to stop: the retry (any worker) resumes the point
            trial.set_user_attr("fail_reason", str(stop))
            with locked(study, storage_url, storage):  # failed and enqueued again as one step
                study.tell(trial, state=TrialState.FAIL)
                if study.user_attrs.get("search") not in PLANNED:  # a plan re-proposes
                    retry_point(study, trial)
            reporter.finish({}, "stopped")
            return "stopped", None, None
        except KeyboardInterrupt:  # free the grid point at once, so a rerun retries it
            trial.set_user_attr("fail_reason", "interrupted")
            study.tell(trial, state=TrialState.FAIL)
            reporter.finish({}, "stopped")
            raise
        except Exception as err:  # a trial's failure is recorded, never fatal to the sweep
            text = (str(err).strip().splitlines() or [""])[0]
            reason = mask_secrets(f"{type(err).__name__}: {text}"[:500], storage_url)
            trial.set_user_attr("fail_reason", reason)
            trial.set_user_attr("traceback", mask_secrets(traceback.format_exc()[-4000:], storage_url))
            study.tell(trial, state=TrialState.FAIL)
            reporter.finish({}, "failed")
            return "failed", None, reason
    value = result.value
    if not result.pruned and (value is None or not math.isfinite(value)):
        # a non-finite objective is a diverged run: the study's score for one (for a loss, the
        # uniform predictor's), never a NaN that Optuna would fail the trial for
        value = objective_of(study.user_attrs).worst
        result.metrics["diverged"] = True
    for key, val in {**result.metrics, **result.attrs}.items():
        if isinstance(val, float) and not math.isfinite(val):
            continue  # omitted, not null: a null drops the metric from every trial's plots
        trial.set_user_attr(key, json_safe(val))
    state = "pruned" if result.pruned else (
        "diverged" if result.metrics.get("diverged") else "completed")
    reporter.finish(result.metrics, state)
    if result.pruned:
        study.tell(trial, state=TrialState.PRUNED)
        return "pruned", None, None
    study.tell(trial, value)
    return state, value, None
