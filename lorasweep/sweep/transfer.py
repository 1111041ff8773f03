"""The transfer search: each variant's first rung starts where its prior shift says its best LR is.

LoRA is the reference: its study runs the adaptive search first (or, when the store already holds
a LoRA tuned on the same task, model and training budget in another sweep, that one's answer is
reused and nothing of LoRA runs again: :func:`reference_of`). Once LoRA's best LR is known, each
other variant's study fixes, once and for all (its ``transfer`` attribute, so a rerun resumes the
same plan): the prior shift (:mod:`.priors`, this sweep's own results left out), the predicted
LR (LoRA's times the shift) and the window of ``search.window`` lattice points around it
(:func:`.search.window_around`). Its plan (:func:`.search.plan` with that window) probes the
window, extends it outward from an edge, widens a flat one, then halves as the adaptive search
does. A variant without a prior, or whose reference found no best LR, gets the full adaptive
search (and its notes say so).
"""

from __future__ import annotations

from typing import Any

from .priors import REFERENCE, priors, tuned_studies, tuned_study
from .search import window_around
from .states import STOPPED_ATTR

__all__ = ["REFERENCE", "REFERENCE_ATTR", "TRANSFER_ATTR", "reference_of", "transfer_notes",
           "transfer_state"]

#: A variant study's attribute: ``{"study": LoRA's study name, "reused": bool}``.
REFERENCE_ATTR = "transfer_reference"
#: A variant study's attribute, fixed when LoRA's best LR is first known (see the module doc).
TRANSFER_ATTR = "transfer"


def no_reference(task: str) -> str:
    """Why a transfer search cannot start on ``task``: no LoRA in the sweep and none to reuse."""
    return (f"--search transfer needs LoRA's best learning rate on {task}: add lora to "
            "--variant (it is searched first), or sweep lora on this task and model with the "
            "same training settings first")


def reference_of(storage: Any, sweep: str, task: str, model: str, train: dict[str, Any]
                 ) -> tuple[str, float] | None:
    """A LoRA study of another sweep tuned on ``task`` and ``model`` with the same training
    settings (checkpointing aside): (its name, its best LR), or None."""
    def same(a: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in a.items() if k != "checkpoint_every"}

    found = [t for t in tuned_studies(storage) if t.variant == REFERENCE and t.sweep != sweep
             and t.task == task and t.model == model and same(t.train) == same(train)]
    found.sort(key=lambda t: (t.tag != REFERENCE, t.name))
    return (found[0].name, found[0].best_lr) if found else None


def transfer_state(study: Any, storage: Any) -> dict[str, Any] | None:
    """The variant study's transfer settings (fixed at the first call that finds LoRA's best
    LR), or None while LoRA's search runs. ``window`` None: the full adaptive search."""
    import optuna
    from optuna.trial import TrialState

    attrs = study.user_attrs
    if TRANSFER_ATTR in attrs:
        return attrs[TRANSFER_ATTR]
    ref = attrs.get(REFERENCE_ATTR) or {}
    state: dict[str, Any] = {"reference": ref.get("study"), "reused": bool(ref.get("reused")),
                             "reference_lr": None, "chance": None, "prior": None,
                             "predicted_lr": None, "window": None}
    try:  # LoRA's study alone (each call while it runs: the whole store is read only once)
        lora = optuna.load_study(study_name=ref.get("study"), storage=storage)
    except KeyError:
        lora = None
    reference = None if lora is None else tuned_study(
        lora.study_name, lora.user_attrs,
        lora.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if reference is None:
        if lora is not None and not lora.user_attrs.get(STOPPED_ATTR) and not (
                (lora.user_attrs.get("search_state") or {}).get("finished")):
            return None  # LoRA's search still runs: wait for it
        state["note"] = "LoRA's search found no best learning rate: the full adaptive search"
    else:
        prior = priors(storage, exclude_sweep=attrs.get("sweep")).get(attrs["variant"])
        state.update(reference_lr=reference.best_lr, chance=reference.chance)
        if prior is None:
            state["note"] = (f"no prior shift for {attrs['variant']} (not in the study's tables nor "
                             "in a sweep of this store): the full adaptive search")
        else:
            predicted = reference.best_lr * prior.factor
            state.update(prior=prior.to_dict(), predicted_lr=predicted,
                         window=window_around(attrs["lrs"], predicted, attrs.get("search_options")))
    study.set_user_attr(TRANSFER_ATTR, state)
    return state


def transfer_notes(state: dict[str, Any]) -> list[str]:
    """What the search trusted, as the run's notes say it."""
    out = []
    if state.get("reused"):
        out.append(f"LoRA's lr={state['reference_lr']:.3g} reused from study "
                   f"{state['reference']!r} (not run again)")
    if state.get("window"):
        prior = state["prior"]
        window = ", ".join(f"{lr:.3g}" for lr in state["window"])
        out.append(f"prior shift x{prior['factor']:.2g} ({prior['tables']} tables, "
                   f"{prior['sweeps']} sweeps) x LoRA's lr={state['reference_lr']:.3g}: predicted "
                   f"lr={state['predicted_lr']:.3g}, window {window}")
    if state.get("note"):
        out.append(state["note"])
    return out
