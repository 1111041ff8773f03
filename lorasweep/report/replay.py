"""``lorasweep export --to tensorboard|mlflow|wandb``: a sweep's finished trials replayed into a tracker.

For clusters without network: run the sweep with its event logs alone, then replay the store and
the run folders' ``events.jsonl`` from a machine that has the tracker. Each trial goes through the
same sinks as live logging (:mod:`lorasweep.train.trackers`), so the data is the same. Replaying
again adds nothing: MLflow finds each point's run by its tags and skips the steps it has;
TensorBoard's new event file purges from step 1, so each step reads back once. The options the
sweep was run with (``log.project``, ``log.artifacts``, recorded in each study) apply again.
"""

from __future__ import annotations

from typing import Any

__all__ = ["replay_sweep"]

_STATES = {"COMPLETE": "completed", "PRUNED": "pruned"}


def replay_sweep(storage_url: str | None, sweep: str | None, backend: str) -> int:
    """Replay the finished trials of ``sweep`` (every sweep when None) into ``backend``; returns
    how many trials were replayed. A backend that fails raises (this is not a trial)."""
    from ..config import TrialSpec
    from ..sweep.status import open_read, sweep_studies
    from ..sweep.study import LOG_ATTR
    from ..sweep.urls import mask_secrets
    from ..train.events import read_events
    from ..train.trackers import Sinks, check_trackers, prepare

    check_trackers([backend])
    storage = open_read(storage_url)
    studies = list(sweep_studies(storage, sweep))
    by_sweep: dict[str, list[str]] = {}
    options = {}  # per study: what its sweep was run with
    for study in studies:
        by_sweep.setdefault(study.user_attrs["sweep"], []).append(study.study_name)
        logged = study.user_attrs.get(LOG_ATTR) or {}
        options[study.study_name] = {**{k: v for k, v in logged.items() if k != "backends"},
                                     "search": str(study.user_attrs.get("search") or "")}
    for name, names in by_sweep.items():
        prepare([backend], name, names, mask_secrets, options[names[0]])
    errors: list[str] = []
    count = 0
    for study in studies:
        for trial in study.get_trials(deepcopy=False):
            u = trial.user_attrs
            if trial.state.name not in _STATES or "config" not in u or not u.get("run_dir"):
                continue
            spec = TrialSpec.from_dict(u["config"])
            records = read_events(u["run_dir"])
            steps = [r for r in records if r.get("event") == "step"]
            sinks = Sinks([backend], on_error=lambda n, m: errors.append(m), replay=True,
                          options=options[study.study_name])
            sinks.open(spec, 0, int(steps[-1]["step"]) if steps else 0)
            for record in records:
                sinks.log(record)
            state = "diverged" if u.get("diverged") else _STATES[trial.state.name]
            sinks.close(_summary(u), state)
            if errors:
                raise RuntimeError(f"export to {backend} failed: {errors[0]}")
            count += 1
    return count


def _summary(u: dict[str, Any]) -> dict[str, Any]:
    """The trial's final metrics as the worker handed them to the sinks."""
    metric = u.get("metric")
    keys = [f"validation_{metric}", f"test_{metric}", f"best_validation_{metric}", "final_loss",
            "validation_loss", "recent_loss", "steps", "diverged", "tokens_per_second"]
    return {k: u[k] for k in keys if k in u}
