"""Read sweep progress from the store (for launchers whose workers run elsewhere)."""

from __future__ import annotations

from collections import Counter

__all__ = ["count_finished"]


def count_finished(storage_url: str, study_names: list[str]) -> Counter:
    """Finished trials of the studies by outcome: completed, diverged, pruned, failed."""
    import optuna
    from optuna.trial import TrialState

    from ..sweep.store import open_storage

    storage = open_storage(storage_url, create=False)
    counts: Counter = Counter()
    for name in study_names:
        for t in optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False):
            if t.state == TrialState.COMPLETE:
                counts["completed"] += 1
                counts["diverged"] += bool(t.user_attrs.get("diverged"))
            elif t.state == TrialState.PRUNED:
                counts["pruned"] += 1
            elif t.state == TrialState.FAIL and not t.user_attrs.get("stray"):
                counts["failed"] += 1
    return counts
