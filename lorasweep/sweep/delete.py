"""delete_sweep: remove a sweep's studies from the store and its run folders from disk.

Deleting is planned first (:func:`plan_delete`, which changes nothing and refuses while a trial
of the sweep still runs), shown to the user, then done (:func:`delete_sweep`): run folders
first, studies last, so an interrupted delete can simply be run again.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from .spec import SweepError

__all__ = ["DeletePlan", "delete_sweep", "plan_delete"]


@dataclasses.dataclass
class DeletePlan:
    sweep: str
    storage_url: str
    studies: list[str]
    trials: int
    folders: list[Path]  # existing folders that will be removed


def plan_delete(storage_url: str | None, sweep: str) -> DeletePlan:
    """What deleting ``sweep`` removes; a :class:`~lorasweep.sweep.spec.SweepError` if it is
    unknown or still running.

    A trial counts as running while its worker beats its heartbeat; one whose worker died is
    marked failed first (as every ``run`` does), so a crashed sweep can be deleted.
    """
    import optuna
    from optuna.trial import TrialState

    from .heartbeat import fail_stale
    from .status import sweep_summaries
    from .store import default_storage_url, open_storage

    url = storage_url or default_storage_url()
    storage = open_storage(url, create=False)
    studies, trials, folders = [], 0, set()
    for summary in sweep_summaries(storage, sweep):
        attrs = summary.user_attrs
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        fail_stale(study, storage)
        all_trials = study.get_trials(deepcopy=False)
        running = [t for t in all_trials if t.state == TrialState.RUNNING]
        if running:
            raise SweepError(
                f"sweep {sweep!r} has {len(running)} running trial(s) in study "
                f"{summary.study_name!r}: wait for them to finish (or stop their workers), then delete"
            )
        studies.append(summary.study_name)
        trials += len(all_trials)
        if attrs.get("runs_dir"):
            folders.add(Path(attrs["runs_dir"]) / sweep)
        folders.update(Path(t.user_attrs["run_dir"]) for t in all_trials if t.user_attrs.get("run_dir"))
    if not studies:
        raise SweepError(f"no sweep named {sweep!r} in the store: see `lorasweep status` for the sweeps")
    existing = sorted({f.resolve() for f in folders if f.exists()})
    # A trial folder inside the sweep's folder goes with it: list only the outermost ones.
    outermost = [f for f in existing if not any(o != f and o in f.parents for o in existing)]
    return DeletePlan(sweep, url, sorted(studies), trials, outermost)


def delete_sweep(plan: DeletePlan) -> None:
    """Remove the planned run folders, then the studies (checking again that none runs)."""
    import optuna

    from .store import open_storage

    plan_delete(plan.storage_url, plan.sweep)  # a run may have started since the plan was shown
    for folder in plan.folders:
        if folder.exists():
            shutil.rmtree(folder)
    storage = open_storage(plan.storage_url, create=False)
    for name in plan.studies:
        optuna.delete_study(study_name=name, storage=storage)
