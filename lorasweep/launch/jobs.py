"""A sweep's SLURM jobs: which were submitted (recorded in its studies), their states, cancelling.

``lorasweep status`` shows :func:`sweep_jobs`; ``lorasweep cancel`` calls :func:`cancel_sweep`,
which cancels the jobs (``scancel``) and frees their running trials at once: each is marked FAIL
(reason ``cancelled``, not counted against its retries) and its grid point waits again, so the
next run (or a live worker) takes it up without waiting for the heartbeat's grace period.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from collections import Counter
from typing import Any

__all__ = ["CancelOutcome", "SweepJob", "cancel_sweep", "job_states", "jobs_table", "sweep_jobs"]

_ACTIVE = ("PENDING", "RUNNING", "REQUEUED", "RESIZING", "SUSPENDED", "COMPLETING", "CONFIGURING")


@dataclasses.dataclass
class SweepJob:
    sweep: str
    job: str
    tasks: int
    folder: str
    states: dict[str, int]  # array-task state -> how many (sacct), {"UNKNOWN": n} without it

    @property
    def active(self) -> bool:
        return any(state in _ACTIVE for state in self.states)

    def describe(self) -> str:
        return ", ".join(f"{n} {state.lower()}" for state, n in sorted(self.states.items()))


def job_states(jobs: list[str]) -> dict[str, Counter]:
    """Per job id, how many of its array tasks are in each state (from ``sacct``)."""
    out: dict[str, Counter] = {job: Counter() for job in jobs}
    if not jobs or shutil.which("sacct") is None:
        return out
    proc = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(jobs)],
                          capture_output=True, text=True, timeout=60)
    for line in proc.stdout.splitlines():
        job_id, _, state = line.partition("|")
        base, _, index = job_id.partition("_")
        if base in out and state:
            # A pending range ("12_[0-2]") is one line for several tasks.
            count = _range_size(index) if index.startswith("[") else 1
            out[base][state.split()[0]] += count
    return out


def _range_size(spec: str) -> int:
    total = 0
    for part in spec.strip("[]").split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        try:
            total += int(hi) - int(lo) + 1 if hi else 1
        except ValueError:
            total += 1
    return total


def _recorded(storage: Any, sweep: str | None) -> list[tuple[str, dict, list[Any]]]:
    """(sweep, job entry, studies) for every job recorded in the store's (or one sweep's) studies."""
    from ..sweep.status import sweep_summaries

    found: dict[str, tuple[str, dict, list[Any]]] = {}
    for summary in sweep_summaries(storage, sweep):
        attrs = summary.user_attrs
        for entry in attrs.get("slurm_jobs", []):
            item = found.setdefault(entry["job"], (attrs["sweep"], entry, []))
            item[2].append(summary.study_name)
    return list(found.values())


def sweep_jobs(storage_url: str | None, sweep: str | None = None) -> list[SweepJob]:
    """The SLURM jobs of the store's sweeps (or one sweep), with their array tasks' states."""
    from ..sweep.store import default_storage_url, open_storage

    storage = open_storage(storage_url or default_storage_url(), create=False)
    recorded = _recorded(storage, sweep)
    states = job_states([entry["job"] for _, entry, _ in recorded])
    return [SweepJob(name, entry["job"], entry["tasks"], entry["folder"],
                     dict(states[entry["job"]]) or {"UNKNOWN": entry["tasks"]})
            for name, entry, _ in recorded]


def jobs_table(jobs: list[SweepJob]):
    """A rich table of the jobs: sweep, job id, array tasks, their states, the log folder."""
    from rich.table import Table

    from ..text import plain

    table = Table(title="SLURM jobs")
    for col in ("sweep", "job", "array tasks", "states", "logs"):
        table.add_column(col)
    for j in jobs:
        table.add_row(plain(j.sweep), j.job, str(j.tasks), j.describe(), plain(j.folder))
    return table


@dataclasses.dataclass
class CancelOutcome:
    jobs: list[str]  # the jobs scancel was asked to cancel
    freed: int  # running trials of those jobs put back to waiting


def cancel_sweep(storage_url: str | None, sweep: str | None) -> CancelOutcome:
    """Cancel the sweep's active SLURM jobs and free their running trials at once."""
    import optuna
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    from ..sweep.store import default_storage_url, open_storage
    from ..sweep.study import locked, retry_point

    url = storage_url or default_storage_url()
    storage = open_storage(url, create=False)
    recorded = _recorded(storage, sweep)
    states = job_states([entry["job"] for _, entry, _ in recorded])
    jobs = [entry["job"] for _, entry, _ in recorded
            if not states[entry["job"]] or any(s in _ACTIVE for s in states[entry["job"]])]
    if jobs and shutil.which("scancel") is not None:
        subprocess.run(["scancel", *jobs], capture_output=True, text=True, timeout=60)
    owners = {f"slurm:{job}" for job in jobs}
    freed = 0
    for name in sorted({s for _, _, studies in recorded for s in studies}):
        study = optuna.load_study(study_name=name, storage=storage)
        with locked(study, url, storage):
            for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                worker = str(trial.user_attrs.get("worker", "")).split("_")[0]
                if worker not in owners or "grid_point" not in trial.user_attrs:
                    continue
                try:
                    storage.set_trial_user_attr(trial._trial_id, "fail_reason", "cancelled")
                    storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
                except UpdateFinishedTrialError:  # it finished meanwhile
                    continue
                retry_point(study, trial)
                freed += 1
    return CancelOutcome(jobs, freed)
