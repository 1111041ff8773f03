"""SLURM launcher: the sweep's workers as ONE job array, submitted through submitit.

``--workers N`` array tasks each run the same worker loop (:class:`SlurmWorker`) against the shared
study store until nothing waits or runs. Attached (the default), this process watches the store
with the local launcher's loop (:func:`.poll.watch`) until every array task has ended; detached,
it returns once the array is submitted. Either way the job id is recorded in the sweep's studies
(user attribute ``slurm_jobs``) for ``lorasweep status`` and ``lorasweep cancel``.

The storage URL may hold a password, so it is never pickled into the job, written into a job
script or log: the workers read it from ``LORASWEEP_STORAGE_URL`` when set in their environment,
else from a file only its owner can read (``~/.lorasweep/storage/<hash>.url``, mode 0600).

Preemption and time limits: SLURM sends SIGUSR2 ``signal_delay_s`` seconds before a task's time
limit (and on preemption, with a grace time); SIGTERM on ``scontrol requeue`` or ``scancel``. The
worker checkpoints its trial at the next step boundary, fails it with the reason and enqueues its
grid point again, then hands the signal to submitit, which calls :meth:`SlurmWorker.checkpoint`
and requeues the task (at most ``max_num_timeout`` times for time limits). The requeued task runs
the same worker loop, picks the point up again and resumes from the checkpoint. The delay must
cover one training step plus one checkpoint save: signals are acted on only between steps.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from pathlib import Path
from typing import Any

from submitit.helpers import Checkpointable, DelayedSubmission

from ..sweep.worker import TrialEvents, WorkerSummary
from .base import Launcher, LaunchError, StoppedWatching, WorkerDied, register

__all__ = ["URL_ENV", "SlurmLauncher", "SlurmOptions", "SlurmWorker", "url_file"]

URL_ENV = "LORASWEEP_STORAGE_URL"
_KILL_WAIT_S = 600  # longer than any KillWait: SIGKILL follows SIGTERM within it


@dataclasses.dataclass
class SlurmOptions:
    """sbatch settings, named as submitit names them (``--set launcher.partition=gpu``)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_min: int = 24 * 60  # the array tasks' time limit, minutes
    gpus_per_task: int = 1  # 0: no GPU requested
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    array_parallelism: int | None = None  # at most this many tasks at once (--array=0-N%P)
    constraint: str | None = None
    setup: list[str] = dataclasses.field(default_factory=list)  # shell lines before the worker
    additional: dict[str, Any] = dataclasses.field(default_factory=dict)  # any other sbatch option
    folder: str | None = None  # job scripts and logs; default: logs/slurm beside the runs folder
    signal_delay_s: int = 120  # SIGUSR2 this long before the time limit: one step + a checkpoint
    max_num_timeout: int = 3  # requeues after reaching the time limit (preemptions: unbounded)

    def validate(self) -> None:
        from .base import LauncherError

        for name in ("time_min", "cpus_per_task", "array_parallelism"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise LauncherError(f"launcher option {name} must be positive, got {value}")
        if self.gpus_per_task < 0 or (self.mem_gb is not None and self.mem_gb <= 0):
            raise LauncherError("launcher options gpus_per_task (>= 0) and mem_gb (> 0) are out of range")
        if self.signal_delay_s <= 0 or self.signal_delay_s >= self.time_min * 60:
            raise LauncherError(f"launcher option signal_delay_s must be > 0 and below time_min "
                                f"({self.time_min * 60} s), got {self.signal_delay_s}: e.g. "
                                f"--set launcher.signal_delay_s=120")
        if self.max_num_timeout < 0:
            raise LauncherError(f"launcher option max_num_timeout must be >= 0, got "
                                f"{self.max_num_timeout}: e.g. --set launcher.max_num_timeout=3")

    def sbatch(self, workers: int) -> dict[str, Any]:
        """The parameters of ``submitit.SlurmExecutor.update_parameters``."""
        params: dict[str, Any] = {"time": self.time_min, "job_name": "lorasweep",
                                  "signal_delay_s": self.signal_delay_s,
                                  "array_parallelism": self.array_parallelism or workers}
        for name in ("partition", "account", "qos", "cpus_per_task", "constraint"):
            if getattr(self, name) is not None:
                params[name] = getattr(self, name)
        if self.gpus_per_task:
            params["gpus_per_task"] = self.gpus_per_task
        if self.mem_gb is not None:
            params["mem"] = f"{int(self.mem_gb * 1024)}MB"
        if self.setup:
            params["setup"] = list(self.setup)
        if self.additional:
            params["additional_parameters"] = dict(self.additional)
        return params


def url_file(url: str) -> Path:
    """Write ``url`` to a file only its owner can read; the workers' way to the store."""
    folder = Path.home() / ".lorasweep" / "storage"
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    path = folder / (hashlib.sha1(url.encode()).hexdigest()[:16] + ".url")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(url)
    path.chmod(0o600)
    return path


@dataclasses.dataclass
class SlurmWorker(Checkpointable):
    """One array task: the worker loop over the sweep's studies. Picklable; holds no secret.

    A ``submitit.helpers.Checkpointable``: on preemption or time limit submitit calls
    :meth:`checkpoint` and requeues the task with what it returns. The trial's own state is in its
    checkpoint under the run folder, so the resubmission is this same worker and array index.
    """

    url_file: str
    study_names: list[str]
    #: Leave as soon as nothing waits that this task could run (a lost trial is retried by a task
    #: still running or by one the launcher submits), instead of holding the allocation idle.
    leave_when_blocked: bool = True

    def storage_url(self) -> str:
        return os.environ.get(URL_ENV) or Path(self.url_file).read_text().strip()

    def __call__(self, index: int) -> dict[str, int]:
        import signal

        from ..sweep.worker import run_worker
        from ..train.signals import StopRequests
        from .threads import configure_threads

        # one worker per array task: the task's own allocation (SLURM_CPUS_PER_TASK) decides
        print(f"array task {index}: {configure_threads(1)} torch thread(s)", flush=True)
        with StopRequests() as stops:  # what stopped the worker, after it saved and re-enqueued
            summary = run_worker(self.storage_url(), self.study_names,
                                 leave_when_blocked=self.leave_when_blocked)
        if stops.signum is not None:
            print(f"array task {index} stopped by {signal.Signals(stops.signum).name}", flush=True)
            stopped_by = stops.signum
            stops.forward()  # submitit: SIGUSR2 -> checkpoint() and requeue (it exits here)
            if stopped_by == signal.SIGTERM:  # SLURM ends the task (requeue, scancel, preemption)
                time.sleep(_KILL_WAIT_S)  # and kills it soon: no result, or it would look done
        print(f"array task {index} done: {summary}", flush=True)
        return dataclasses.asdict(summary)

    def checkpoint(self, index: int) -> DelayedSubmission:
        """The task's resubmission: the same worker loop (it resumes the stopped trial)."""
        return DelayedSubmission(self, index)


def _record_job(storage_url: str, study_names: list[str], job: str, tasks: int, folder: Path) -> None:
    import optuna

    from ..sweep.store import open_storage

    storage = open_storage(storage_url, create=False)
    entry = {"job": job, "tasks": tasks, "folder": str(folder), "submitted": time.time()}
    for name in study_names:
        study = optuna.load_study(study_name=name, storage=storage)
        study.set_user_attr("slurm_jobs", [*study.user_attrs.get("slurm_jobs", []), entry])


#: How many times a run submits array tasks again for trials left when every task has ended.
_RESUBMITS = 3


def left_over(storage_url: str, study_names: list[str]) -> int:
    """How many trials still need an array task once every task has left: lost trials are
    failed (once their heartbeat's grace has passed) and their points enqueued again; a study
    stopped by its first trials' shared error needs none."""
    import optuna
    from optuna.trial import TrialState

    from ..sweep.heartbeat import fail_stale, grace_s
    from ..sweep.store import open_storage
    from ..sweep.study import STOPPED_ATTR, locked, requeue_failed

    storage = open_storage(storage_url, create=False)
    deadline = time.time() + grace_s() + 5
    while True:
        need = running = 0
        for name in study_names:
            study = optuna.load_study(study_name=name, storage=storage)
            attrs = study.user_attrs
            if attrs.get(STOPPED_ATTR):
                continue
            adaptive = attrs.get("search") == "adaptive"
            with locked(study, storage_url, storage):
                if adaptive:
                    fail_stale(study, storage)
                else:
                    requeue_failed(study, storage, int(attrs.get("max_retries", 2)))
            states = [t.state for t in study.get_trials(deepcopy=False)]
            running += states.count(TrialState.RUNNING)
            need += states.count(TrialState.WAITING)
            if adaptive and not (attrs.get("search_state") or {}).get("finished"):
                need = max(need, 1)  # its next proposals (or a retry) need a task
        if not running or time.time() > deadline:
            return need
        time.sleep(1.0)


def _ended(job: Any) -> str | None:
    """None if the array task finished its loop; else how it ended (CANCELLED, FAILED, ...)."""
    try:
        job.result()
        return None
    except Exception:  # submitit's UncompletedJobError / FailedJobError: the task died
        return (job.state or "UNKNOWN").split()[0]


@register
class SlurmLauncher(Launcher):
    key = "slurm"
    summary = "one SLURM job array through submitit (--workers = array tasks); shared store needed"
    Options = SlurmOptions
    can_detach = True

    def submit(self, storage_url: str, study_names: list[str], tasks: int | None = None) -> list[Any]:
        """Submit the array (``tasks`` array tasks, default ``--workers``); returns submitit's
        jobs (one per array task)."""
        import submitit

        folder = Path(self.options.folder) if self.options.folder else self.log_dir / "slurm"
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=self.options.max_num_timeout)
        tasks = tasks or self.workers
        executor.update_parameters(**self.options.sbatch(tasks))
        worker = SlurmWorker(str(url_file(storage_url)), list(study_names))
        try:
            jobs = executor.map_array(worker, range(tasks))
        except Exception as err:  # sbatch refused (bad partition, account, limits)
            reason = " ".join(str(err).split())[-400:]
            raise LaunchError(f"sbatch refused the job array: {reason}; check --set launcher.X") from None
        self.submitted = [jobs[0].job_id.split("_")[0]]
        _record_job(storage_url, study_names, self.submitted[0], tasks, folder)
        return jobs

    def launch(self, storage_url: str, study_names: list[str], total: int,
               events: TrialEvents) -> WorkerSummary:
        from .poll import watch

        jobs = self.submit(storage_url, study_names)
        if self.detach:
            return WorkerSummary()
        every, summary = list(jobs), WorkerSummary()
        for round_ in range(_RESUBMITS + 1):
            try:
                part = watch(storage_url, study_names, events,
                             alive=lambda jobs=jobs: not all(j.done() for j in jobs))
            except KeyboardInterrupt:
                raise StoppedWatching(self.submitted) from None
            for name in ("completed", "pruned", "failed", "diverged"):
                setattr(summary, name, getattr(summary, name) + getattr(part, name))
            summary.stopped.update(part.stopped)
            left = left_over(storage_url, study_names)  # every task has left
            if not left or round_ == _RESUBMITS:
                break
            print(f"{left} trial(s) left after every array task ended (a lost trial): submitting "
                  f"{min(self.workers, left)} array task(s) for them", flush=True)
            jobs = self.submit(storage_url, study_names, min(self.workers, left))
            every += jobs
        jobs = every
        dead = [(j, how) for j in jobs if (how := _ended(j)) is not None]
        if dead:
            job, how = dead[0]
            more = f" (and {len(dead) - 1} more)" if len(dead) > 1 else ""
            raise WorkerDied(f"SLURM array task {job.job_id} ended {how}{more}: see {job.paths.stderr}")
        return summary
