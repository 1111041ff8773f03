"""Store -> tidy table: one row per grid-point trial (summaries: :mod:`lorasweep.report.select`).

The report reads the study store only (never a worker's memory), so it can be made at any time,
from any machine that reaches the store, while a sweep is still running. Reading never writes:
the store is opened read-only (no schema is created in an empty file, no journal file made).

Each row carries both scores: ``validation_score`` (chooses) and ``test_score`` (is reported).
For tasks whose validation split is their test set, ``select_score`` and ``score`` are both the
best score over the trial's evaluations (the study's protocol) and ``selection`` says so.
"""

from __future__ import annotations

from typing import Any

from ..sweep.states import counted, live_points
from ..sweep.status import open_read, sweep_studies
from ..train.events import loss_curve
from .select import Cell, VariantSummary, summarise

__all__ = ["Cell", "VariantSummary", "collect_rows", "summarise"]


def _fail_reason(trial: Any) -> str | None:
    from ..sweep.study import fail_reason as reason  # lost on RDB: failed by Optuna's heartbeat

    return reason(trial)


def collect_rows(storage_url: str | None, sweep: str | None = None) -> list[dict[str, Any]]:
    """One row per trial of a grid point (stray and superseded failures excluded)."""
    rows = []
    storage = open_read(storage_url)
    for study in sweep_studies(storage, sweep):
        s = study.user_attrs
        recorded = _recorded(s)
        trials = counted(study.get_trials(deepcopy=False))
        retried = live_points(trials)
        for t in trials:
            if t.state.name == "FAIL" and t.user_attrs["grid_point"] in retried:
                continue
            u = t.user_attrs
            rows.append({
                "sweep": s["sweep"], "task": s["task"], "task_group": s.get("task_group"),
                "model": s["model"],
                "variant": s["variant"], "variant_tag": s["variant_tag"], "study": study.study_name,
                "trial": t.number, "state": t.state.name.lower(),
                "lr": t.params.get("lr", u.get("config", {}).get("lr")),
                "seed": t.params.get("seed"),
                **_scores(u, t.value),
                "diverged": bool(u.get("diverged", False)),
                "pruner": s.get("pruner"),
                "search": s.get("search") or "grid",  # the sweep's: grid, adaptive, transfer
                **recorded,
                "steps": u.get("steps"), "train_time_s": u.get("train_time_s"),
                "wall_time_s": u.get("wall_time_s"), "peak_memory_mb": u.get("peak_memory_mb"),
                "base": u.get("base"),  # the frozen base's storage: quantize, bits, bytes
                "tokens_per_second": u.get("tokens_per_second"),
                "trainable_params": u.get("trainable_params"),
                "fail_reason": _fail_reason(t) if t.state.name == "FAIL" else None,
                # a pruned trial: its last reported (validation) score and step, where it stopped
                **_pruned_at(t),
                "run_dir": u.get("run_dir"),
                # the trial's event log, each step; trials that predate it keep 100 points
                "loss_curve": loss_curve(u.get("run_dir")) or u.get("loss_curve"),
                "provenance": _provenance(u),
                # < 1: a rung of the adaptive search, stopped at that fraction of the schedule
                "budget": float(u.get("budget", 1.0)),
            })
    return rows


def _recorded(attrs: dict[str, Any]) -> dict[str, Any]:
    """What the study recorded of its objective: its direction and a diverged trial's score
    (a store that predates them: maximize, 0), and its label list (a task on the user's data)."""
    from ..sweep.objective import objective_of
    from ..sweep.template import trial_template

    objective = objective_of(attrs)
    labels = (trial_template(attrs).get("task_options") or {}).get("labels")
    return {"direction": objective.direction, "worst_score": objective.worst,
            "objective": attrs.get("objective"),
            "labels": labels if isinstance(labels, list) else None}


def _pruned_at(trial: Any) -> dict[str, Any]:
    """``pruned_score`` and ``pruned_step``: a pruned trial's last intermediate score (what the
    pruner judged) and its step; None for other trials and for a pruned one that reported none."""
    steps = trial.intermediate_values if trial.state.name == "PRUNED" else {}
    last = max(steps) if steps else None
    return {"pruned_score": steps[last] if steps else None, "pruned_step": last}


_PROVENANCE = ("config", "variant_config", "lorasweep_version", "torch_version",
               "transformers_version", "python_version", "host", "device", "run_dir")


def _provenance(u: dict[str, Any]) -> dict[str, Any]:
    """What made the trial, with any storage URL's password masked."""
    from ..sweep.store import storage_label

    prov = {k: u[k] for k in _PROVENANCE if k in u}
    config = prov.get("config")
    if isinstance(config, dict) and config.get("storage"):
        prov["config"] = {**config, "storage": storage_label(config["storage"])}
    return prov


def _scores(u: dict[str, Any], value: float | None) -> dict[str, Any]:
    """The trial's scores and which of them choose (``select_score``) and report (``score``)."""
    metric = u.get("metric")
    validation = u.get(f"validation_{metric}", value) if metric else value
    test = u.get(f"test_{metric}") if metric else None
    best = u.get(f"best_validation_{metric}") if metric else None
    initial = u.get(f"initial_validation_{metric}") if metric else None  # a minimized task's
    if u.get("validation_is_test"):  # no separate validation split: the study's protocol
        one = best if best is not None else validation
        return {"metric": metric, "value": value, "validation_score": validation,
                "test_score": test, "best_validation_score": best, "initial_score": initial,
                "selection": "best-over-evaluations", "select_score": one, "score": one}
    return {"metric": metric, "value": value, "validation_score": validation, "test_score": test,
            "best_validation_score": best, "initial_score": initial, "selection": "validation",
            "select_score": validation, "score": test if test is not None else value}
