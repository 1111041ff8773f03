r"""Prior shifts: where each variant's best learning rate sits against LoRA's, as evidence says.

A variant's *shift* is :math:`\log_{10}(\eta^\star_{variant} / \eta^\star_{LoRA})` in decades.
The evidence is the study's four published tables (:func:`lorasweep.published.table_shifts`:
one shift per benchmark) and every sweep in the store that tuned both LoRA and the variant on the
same task and model (its best LRs: a finished search's answer, or a grid's best mean validation
score over its seeds). The prior is the median over all of them; ``low``/``high`` are their range.
A variant with no evidence has no prior (the transfer search gives it the full adaptive search).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections import defaultdict
from typing import Any

from ..published import table_shifts
from .objective import objective_of
from .search import PLANNED
from .template import trial_template

__all__ = ["Prior", "TunedStudy", "priors", "store_priors", "store_shifts", "tuned_studies",
           "tuned_study"]

REFERENCE = "lora"


@dataclasses.dataclass(frozen=True)
class Prior:
    variant: str
    shift: float  # the median shift, decades
    low: float
    high: float
    tables: int  # the study's tables it rests on
    sweeps: int  # the store's sweeps it rests on

    @property
    def factor(self) -> float:
        return 10.0 ** self.shift

    def text(self) -> str:
        """``x0.1 (x0.02-x0.1; 4 tables, 1 sweep)``."""
        sweeps = f"{self.sweeps} sweep{'s' if self.sweeps != 1 else ''}"
        return (f"x{self.factor:.2g} (x{10 ** self.low:.2g}-x{10 ** self.high:.2g}; "
                f"{self.tables} tables, {sweeps})")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "factor": self.factor}


@dataclasses.dataclass(frozen=True)
class TunedStudy:
    """A study of the store whose best learning rate is known."""

    name: str
    sweep: str
    task: str
    model: str
    variant: str
    tag: str
    train: dict[str, Any]
    best_lr: float
    chance: float | None  # its worst score better than a diverged run's: where nothing was learnt


def _best_lr(attrs: dict[str, Any], trials: list[Any]) -> float | None:
    """A finished search's answer; a grid's LR with the best mean full-budget validation score,
    once every (lr, seed) of its grid is done."""
    if attrs.get("search") in PLANNED:
        state = attrs.get("search_state") or {}
        return state.get("best_lr") if state.get("finished") else None
    objective = objective_of(attrs)
    values: dict[float, list[float]] = defaultdict(list)
    for t in trials:
        if float(t.user_attrs.get("budget", 1.0)) >= 1.0 and t.value is not None:
            values[float(t.params["lr"])].append(float(t.value))
    lrs, seeds = attrs.get("lrs") or [], attrs.get("seeds") or []
    if not lrs or any(len(values.get(float(lr), [])) < len(seeds) for lr in lrs):
        return None
    # the best mean (ties: the lowest LR)
    return max(lrs, key=lambda lr: (objective.sign * statistics.fmean(values[float(lr)]), -lr))


def tuned_studies(storage: Any) -> list[TunedStudy]:
    """Every study of the store with a known best LR (read-only)."""
    from optuna.trial import TrialState

    out = []
    for frozen in storage.get_all_studies():
        if "variant" not in frozen.user_attrs or "task" not in frozen.user_attrs:
            continue  # not a lorasweep study
        trials = storage.get_all_trials(frozen._study_id, deepcopy=False,
                                        states=(TrialState.COMPLETE,))
        found = tuned_study(frozen.study_name, frozen.user_attrs, trials)
        if found is not None:
            out.append(found)
    return out


def tuned_study(name: str, attrs: dict[str, Any], trials: list[Any]) -> TunedStudy | None:
    """The study ``name`` (its user attributes and complete trials) if its best LR is known."""
    best = _best_lr(attrs, trials)
    if best is None:
        return None
    objective = objective_of(attrs)  # chance: its worst score that is better than a diverged run's
    above = [t.value for t in trials
             if t.value is not None and objective.better(t.value, objective.worst)]
    return TunedStudy(name, attrs.get("sweep", ""), attrs["task"], attrs.get("model", ""),
                      attrs["variant"], attrs.get("variant_tag", attrs["variant"]),
                      trial_template(attrs).get("train") or {}, float(best),
                      (max(above) if objective.minimize else min(above)) if above else None)


def store_shifts(tuned: list[TunedStudy], exclude_sweep: str | None = None
                 ) -> dict[str, list[tuple[str, float]]]:
    """Per variant: (sweep, shift) for each sweep (task, model) that tuned LoRA and it."""
    groups: dict[tuple[str, str, str], list[TunedStudy]] = defaultdict(list)
    for t in tuned:
        if t.sweep != exclude_sweep:
            groups[(t.sweep, t.task, t.model)].append(t)
    out: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for (sweep, _, _), studies in sorted(groups.items()):
        loras = sorted((t for t in studies if t.variant == REFERENCE),
                       key=lambda t: (t.tag != REFERENCE, t.tag))
        if not loras:
            continue
        for t in studies:
            if t.variant != REFERENCE:
                out[t.variant].append((sweep, math.log10(t.best_lr / loras[0].best_lr)))
    return dict(out)


def store_priors(storage_url: str | None) -> dict[str, Prior]:
    """:func:`priors` with the sweeps of the store at ``storage_url`` (read-only); with None,
    the default store's where it exists, else the study's tables alone."""
    from .status import open_read
    from .store import StorageError

    try:
        storage = open_read(storage_url)
    except StorageError:
        if storage_url is not None:
            raise
        storage = None
    return priors(storage)


def priors(storage: Any = None, exclude_sweep: str | None = None,
           exclude_families: tuple[str, ...] = ()) -> dict[str, Prior]:
    """Each variant's prior shift from the study's tables (less ``exclude_families``) and, with
    a ``storage``, the store's sweeps (less ``exclude_sweep``)."""
    tables = table_shifts(exclude_families)
    learned = store_shifts(tuned_studies(storage), exclude_sweep) if storage is not None else {}
    out = {}
    for variant in sorted(set(tables) | set(learned)):
        values = list(tables.get(variant, {}).values()) + [s for _, s in learned.get(variant, [])]
        out[variant] = Prior(variant, statistics.median(values), min(values), max(values),
                             len(tables.get(variant, {})), len(learned.get(variant, [])))
    return out
