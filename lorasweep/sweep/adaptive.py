"""The adaptive search against the study store: read the trials, plan, enqueue under the lock.

The plan (:func:`.search.plan`) is a pure function of the study's trials; this module turns the
trials into observations and the proposals into ordinary enqueued trials (``lr``, ``seed``; user
attributes ``grid_point``, ``search``, ``budget``, ``retry``). Reading and enqueueing happen under
the study's lock, so concurrent workers never enqueue the same proposal twice.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from ..train.checkpoint import delete_checkpoint
from .lock import study_lock
from .objective import objective_of
from .search import Observation, Plan, plan, window_around
from .states import counted, failures, live_points
from .transfer import REFERENCE, transfer_notes, transfer_state

__all__ = ["ProposeResult", "observations", "propose"]

_STATE = {"COMPLETE": "complete", "PRUNED": "complete", "WAITING": "pending", "RUNNING": "pending",
          "FAIL": "failed"}


@dataclasses.dataclass
class ProposeResult:
    plan: Plan
    enqueued: int


def observations(study: Any) -> list[Observation]:
    """The study's trials that belong to a search or grid point, as the planner sees them: its
    values higher-is-better (a minimized loss negated; the planner always maximizes)."""
    sign = objective_of(study.user_attrs).sign
    out = []
    for t in counted(study.get_trials(deepcopy=False)):
        u = t.user_attrs
        fixed = t.system_attrs.get("fixed_params", {})
        lr, seed = t.params.get("lr", fixed.get("lr")), t.params.get("seed", fixed.get("seed"))
        if lr is None or seed is None:
            continue
        out.append(Observation(float(lr), int(seed), float(u.get("budget", 1.0)),
                               _STATE.get(t.state.name, "failed"),
                               None if t.value is None else sign * t.value,
                               _finite(u.get("recent_loss"), u.get("final_loss"))))
    return out


def _finite(*values: Any) -> float | None:
    """The first finite number (a probe's recent training loss, else its final one)."""
    return next((float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)), None)


def propose(study: Any, storage: Any, storage_url: str, retry_failed: int = 1) -> ProposeResult:
    """Plan the study's next proposals and enqueue the new ones, atomically per study."""
    attrs = study.user_attrs
    objective = objective_of(attrs)  # the planner maximizes: a loss, its worst and chance negated
    worst = objective.sign * objective.worst
    with study_lock(storage, storage_url, study.study_name):
        trials = study.get_trials(deepcopy=False)
        obs = observations(study)
        transfer = (transfer_state(study, storage)
                    if attrs.get("search") == "transfer" and attrs.get("variant") != REFERENCE
                    else {})
        if transfer is None:  # LoRA's search (the reference) is not finished: wait
            lrs = attrs["lrs"]  # the trials a window's rungs will run, for the progress
            ahead = plan(lrs, attrs["seeds"], [], attrs.get("search_options"), worst,
                         window=window_around(lrs, lrs[0], attrs.get("search_options")))
            return ProposeResult(Plan([], False, None, 0.0, ahead.cap, ahead.grid,
                                      ["waiting for LoRA's best learning rate"], ahead.trials), 0)
        result = plan(attrs["lrs"], attrs["seeds"], obs, attrs.get("search_options"), worst,
                      retry_failed, window=transfer.get("window"),
                      chance=None if transfer.get("chance") is None
                      else objective.sign * transfer["chance"])
        result.notes[:0] = transfer_notes(transfer)
        live, failed = live_points(trials), failures(trials)
        enqueued = 0
        for p in result.proposals:
            if p.key in live:
                continue
            study.enqueue_trial({"lr": p.lr, "seed": p.seed},
                                user_attrs={"grid_point": p.key, "search": p.phase,
                                            "budget": p.budget, "retry": failed[p.key]})
            live.add(p.key)
            enqueued += 1
        summary = {"finished": result.finished, "best_lr": result.best_lr,
                   "spent": round(result.spent, 4), "cap": round(result.cap, 4), "grid": result.grid,
                   "notes": result.notes}
        before = study.user_attrs.get("search_state") or {}
        if before != summary:
            study.set_user_attr("search_state", summary)
    if result.finished and not before.get("finished"):  # file work: outside the lock
        _drop_rung_checkpoints(trials)
    return ProposeResult(result, enqueued)


def _drop_rung_checkpoints(trials: list[Any]) -> None:
    """Once the search is over, the checkpoints its rungs kept for promotions that did not come
    (the promoted points' last trials removed their own)."""
    for t in trials:
        run_dir = t.user_attrs.get("run_dir")
        if run_dir and float(t.user_attrs.get("budget", 1.0)) < 1.0:
            delete_checkpoint(Path(run_dir))
