"""A sweep's studies as they stand, read-only (``lorasweep status``, and the report's reading).

:func:`study_status`: per study, how many trials wait, run, completed, failed (not since retried)
and were pruned (counted by :mod:`~lorasweep.sweep.states`), and each running trial's last
checkpoint. A RUNNING trial whose last heartbeat is older than the grace period
(:mod:`~lorasweep.sweep.heartbeat`) has no process behind it: it counts as ``lost``, not
``running``, with the seconds since its last beat, until a worker's next pop fails and retries it. Reading never writes: the store is opened read-only (:func:`open_read`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .heartbeat import beat_ages, grace_s
from .states import STATES, count_states

__all__ = ["open_read", "study_status", "sweep_studies", "sweep_summaries"]


def open_read(storage_url: str | None) -> Any:
    """The store at ``storage_url`` (the default one when None), opened without creating it."""
    from .store import default_storage_url, open_storage

    return open_storage(storage_url or default_storage_url(), create=False)


def sweep_summaries(storage: Any, sweep: str | None) -> Iterator[Any]:
    """The summaries (name, user attributes) of the studies lorasweep made in ``storage`` (of
    ``sweep`` only, when given)."""
    import optuna

    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        attrs = summary.user_attrs
        if "sweep" in attrs and (sweep is None or attrs["sweep"] == sweep):
            yield summary


def sweep_studies(storage: Any, sweep: str | None) -> Iterator[Any]:
    """The studies lorasweep made in ``storage`` (of ``sweep`` only, when given)."""
    import optuna

    for summary in sweep_summaries(storage, sweep):
        yield optuna.load_study(study_name=summary.study_name, storage=storage)


def study_status(storage_url: str | None, sweep: str | None = None) -> list[dict[str, Any]]:
    """Per study: how many trials wait, run, completed, failed (not since retried), pruned."""
    out = []
    storage = open_read(storage_url)
    for study in sweep_studies(storage, sweep):
        trials = study.get_trials(deepcopy=False)
        states = count_states(trials)  # a failure since retried: the retry is what counts
        counts = {state: states[state] for state in STATES}
        running = _running(trials, beat_ages(storage, trials))
        counts["lost"] = sum(t["lost"] for t in running)
        counts["running"] -= counts["lost"]
        s = study.user_attrs
        out.append({"study": study.study_name, "sweep": s["sweep"], "task": s["task"],
                    "model": s["model"], "variant": s["variant_tag"],
                    "search": s.get("search") or "grid", **counts,
                    **_best(s, trials), "running_trials": running})
    return out


def _best(attrs: dict[str, Any], trials: list) -> dict[str, Any]:
    """The study's objective (its name and recorded direction) and its best full-budget trial
    so far: the highest value, or the lowest for a minimized loss (ties: the lower LR)."""
    from .objective import objective_of

    objective = objective_of(attrs)
    done = [t for t in trials if t.state.name == "COMPLETE" and t.value is not None
            and float(t.user_attrs.get("budget", 1.0)) >= 1.0]
    best = max(done, key=lambda t: (objective.sign * t.value, -float(t.params.get("lr", 0.0))),
               default=None)
    return {"objective": attrs.get("objective") or "validation_score",
            "direction": objective.direction,
            "best_value": None if best is None else best.value,
            "best_lr": None if best is None else best.params.get("lr")}


def _running(trials: list, ages: dict[int, float]) -> list[dict[str, Any]]:
    """Per running trial: its grid point, its last checkpoint (step, age in seconds, bytes; None
    before the first), seconds since its last heartbeat, and whether it is lost (that is over
    the grace period), the tracker runs it writes to (backend -> run id or folder;
    ``{}`` without ``--log``)."""
    import time

    grace = grace_s()
    now, out = time.time(), []
    for t in trials:
        if t.state.name != "RUNNING" or "grid_point" not in t.user_attrs:
            continue
        saved = t.user_attrs.get("checkpoint") or {}
        age = round(ages[t.number], 1)  # lost by the age it shows: never "1.0 s, lost" at 1 s
        out.append({
            "trial": t.number, "grid_point": t.user_attrs["grid_point"],
            "checkpoint_step": saved.get("step"),
            "checkpoint_age_s": round(now - saved["time"], 1) if "time" in saved else None,
            "checkpoint_bytes": saved.get("bytes"),
            "heartbeat_age_s": age,
            "lost": age > grace,
            "tracker": t.user_attrs.get("tracker") or {},
        })
    return out
