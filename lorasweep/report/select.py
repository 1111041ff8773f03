"""Tidy rows -> per-variant summaries: the selection rule (choose on validation, report on test).

For each (sweep, task, model, variant configuration) and learning rate :math:`\\eta`, over the
completed seeds :math:`s = 1..n`:

.. math::

    \\bar v(\\eta) = \\tfrac1n \\sum_s v_s(\\eta), \\qquad
    \\bar t(\\eta) = \\tfrac1n \\sum_s t_s(\\eta), \\qquad
    \\eta^\\star = \\arg\\max_{\\eta \\notin D} \\bar v(\\eta)

where :math:`v` is the validation score, :math:`t` the test score and :math:`D` the learning rates
with a diverged seed (used only when every learning rate diverged). The variant's tuned result is
:math:`\\bar t(\\eta^\\star) \\pm \\mathrm{std}_s\\, t_s(\\eta^\\star)`; the test score never chooses.
The good-LR band is the span of non-diverged :math:`\\eta` with
:math:`\\bar v(\\eta) \\ge \\bar v(\\eta^\\star) - \\tau\\,(\\bar v(\\eta^\\star) - c)`: within a fraction
:math:`\\tau` of the variant's rise above chance :math:`c` (the task's chance level where its
metric has one, else its worst score). A variant whose best :math:`\\bar v` is not above
:math:`c`, or whose every :math:`\\bar v` is equal, has no band, only a remark. Δ vs tuned LoRA is
:math:`\\bar t(\\eta^\\star) - \\bar t_{LoRA}(\\eta^\\star_{LoRA})`, marked significant when both
have >= 3 seeds and Welch's t-test gives :math:`p < 0.05`.

A study that minimizes (a loss: its recorded ``direction``) is the mirror image:
:math:`\\eta^\\star = \\arg\\min \\bar v(\\eta)`, the band is
:math:`\\bar v(\\eta) \\le \\bar v(\\eta^\\star) + \\tau\\,(c - \\bar v(\\eta^\\star))`, and a negative Δ is
better. There :math:`c` is the loss training started from: the validation loss each trial measures
before its first step (the model with the adapter at its init), averaged over the variant's
trials. A pretrained model's loss sits far below a uniform predictor's (SmolLM2 on HumanEval:
about 1.1 against ln 49152 = 10.8), so a band measured from the uniform predictor would count an
LR that barely moved the model as good; trials that predate the measurement fall back to the
uniform predictor's loss (what a diverged trial records).

Tasks without a separate validation split (GLUE's convention: the validation split is the test
set) follow the study's protocol: one number per trial, the best score over the trial's
evaluations, both chooses and is reported; the selection says so (``best-over-evaluations``).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections import defaultdict
from typing import Any

__all__ = ["BAND_TOLERANCE", "SELECTION_RULE", "Cell", "VariantSummary", "band_rule", "chance_level",
           "chance_score", "delta_rule", "selection_rule", "summarise"]


def selection_rule(minimize: bool = False) -> str:
    """How the best learning rate is chosen, in words (a loss: the lowest)."""
    return (f"best learning rate = {'lowest' if minimize else 'highest'} mean validation "
            f"{'loss' if minimize else 'score'} over seeds (diverged learning rates only if all "
            f"diverged); reported: mean ± std test {'loss' if minimize else 'score'} at it")


def delta_rule(minimize: bool = False) -> str:
    """The sign convention of Δ vs tuned LoRA."""
    return ("Δ LoRA = variant − tuned LoRA on test: " +
            ("a loss, lower is better (a negative Δ beats LoRA)" if minimize
             else "higher is better (a positive Δ beats LoRA)"))


SELECTION_RULE = selection_rule()
_EQUAL = 1e-9
#: The default tolerance of the good-LR band, as a fraction of the variant's rise above chance: a
#: learning rate is good while it keeps 90% of the best learning rate's gain over guessing. A
#: fraction of the rise (not an absolute score) means the same on every task and metric, and a
#: variant that never left chance gets no band from a small bump.
BAND_TOLERANCE = 0.1


def band_rule(tolerance: float, minimize: bool = False) -> str:
    """The good-LR band's rule in words, for the reports."""
    if minimize:
        return (f"good-LR band: learning rates whose validation loss is within {tolerance:g} of "
                "the best one's fall below the loss training started from (measured before the "
                "first step, else a uniform predictor's; none for a variant not below it)")
    return (f"good-LR band: learning rates whose validation score is within {tolerance:g} of the "
            "best one's rise above chance (none for a variant not above chance)")


@dataclasses.dataclass
class Cell:
    """Scores of one (variant, lr) over seeds: reported (test) and selecting (validation)."""

    mean: float  # mean reported (test) score
    std: float
    n: int
    diverged: int
    validation: float = math.nan  # mean selecting (validation) score
    scores: list[float] = dataclasses.field(default_factory=list)  # per-seed reported scores


@dataclasses.dataclass
class VariantSummary:
    sweep: str
    task: str
    model: str
    variant: str
    variant_tag: str
    metric: str
    cells: dict[float, Cell]
    best_lr: float | None  # the selected learning rate (on validation)
    peak: float | None  # the test score at the selected learning rate (mean over seeds)
    band: tuple[float, float] | None  # lowest and highest LR within tolerance, on validation
    delta_vs_lora: float | None = None
    selection: str = "validation"  # or "best-over-evaluations" (validation is the test set)
    remark: str | None = None
    lr_ratio_vs_lora: float | None = None
    p_value: float | None = None  # Welch's t-test of the delta, with >= 3 seeds on both sides
    pruner: str | None = None
    #: An adaptive search's stopped rungs: fidelity -> learning rate -> mean validation score.
    #: Its good-LR band is not measured (few learning rates ran to the end): ``band`` is None.
    rungs: dict[float, dict[float, float]] = dataclasses.field(default_factory=dict)
    #: Pruned full-budget trials: learning rate -> (step, validation score) of each where the
    #: pruner stopped it (its last report). Drawn in the plots; never in the cells.
    pruned: dict[float, list[tuple[int, float]]] = dataclasses.field(default_factory=dict)
    #: The sweep's search: ``grid``, ``adaptive`` or ``transfer`` (the plots name it).
    search: str = "grid"
    #: The study's recorded direction (``maximize`` for stores that predate it) and the score
    #: of guessing (None where the metric has none): the plots' chance line.
    direction: str = "maximize"
    chance: float | None = None
    #: The study's objective name (``validation_accuracy``, ``best_validation_accuracy``);
    #: None for a store that predates it.
    objective: str | None = None

    @property
    def minimize(self) -> bool:
        return self.direction == "minimize"

    @property
    def sign(self) -> float:
        """+1 to maximize, -1 to minimize: ``sign * value`` is higher-is-better."""
        return -1.0 if self.minimize else 1.0

    @property
    def band_decades(self) -> float | None:
        return None if self.band is None else math.log10(self.band[1] / self.band[0])

    @property
    def test_std(self) -> float | None:
        return None if self.best_lr is None else self.cells[self.best_lr].std

    @property
    def validation_score(self) -> float | None:
        return None if self.best_lr is None else self.cells[self.best_lr].validation

    @property
    def seeds(self) -> int:
        return 0 if self.best_lr is None else self.cells[self.best_lr].n

    @property
    def significant(self) -> bool | None:
        return None if self.p_value is None else self.p_value < 0.05


def chance_level(task: str, metric: str, labels: list | None = None,
                 direction: str = "maximize", worst: float | None = None) -> float | None:
    """The score of guessing, where the metric has one; None otherwise (and for task groups).

    Accuracy: ``1 / classes``, the classes from ``labels`` (the study's recorded label list, a
    task on the user's data) else the task class's count. A minimized loss: the uniform
    predictor's, which is what a diverged trial records (``worst``)."""
    if direction == "minimize":
        return worst
    if metric in ("matthews_correlation", "pearson", "spearman"):
        return 0.0
    if metric != "accuracy":
        return None
    if labels:
        classes = len(labels)
    else:
        from ..tasks import find_task

        cls = find_task(task)
        classes = getattr(cls, "num_labels", 0) if cls is not None else 0
    return 1.0 / classes if classes and classes >= 2 else None


def chance_score(task: str, metric: str, labels: list | None = None,
                 direction: str = "maximize", worst: float | None = None) -> float:
    """The score of guessing on ``task`` (its chance level), else the study's worst score (0
    for a store that predates it, and for a group)."""
    chance = chance_level(task, metric, labels, direction, worst)
    if chance is not None:
        return chance
    return float(worst) if worst is not None else 0.0


def _choose(cells: dict[float, Cell], tolerance: float, chance: float,
            minimize: bool = False, reference: str = "chance"
            ) -> tuple[float, tuple | None, str | None]:
    """Selected LR, good-LR band and remark, all on the validation means. A minimized metric
    is the mirror image: the lowest mean, the band within ``tolerance`` of its fall below
    chance (``sign`` turns every value into higher-is-better)."""
    sign = -1.0 if minimize else 1.0
    fine = {lr: c for lr, c in cells.items() if not c.diverged} or cells
    best_lr = max(fine, key=lambda lr: sign * fine[lr].validation)  # ties: the lowest LR
    values = [c.validation for c in cells.values()]
    if len(values) > 1 and max(values) - min(values) < _EQUAL:
        return best_lr, None, ("every learning rate scored the same (the model never left "
                               "chance?): no good-LR band")
    top = fine[best_lr].validation
    if sign * top <= sign * chance + _EQUAL:
        what, side = ("loss", "below") if minimize else ("score", "above")
        return best_lr, None, (f"the best validation {what} ({top:.3f}) is not {side} "
                               f"{reference} ({chance:.4g}): no good-LR band")
    good = [lr for lr, c in fine.items()
            if sign * c.validation >= sign * top - tolerance * sign * (top - chance)]
    return best_lr, (min(good), max(good)), None


def _summary(key: tuple, cells: dict[float, Cell], tolerance: float, selection: str,
             pruner: str | None, study: dict[str, Any] | None = None) -> VariantSummary:
    """``study``: what the rows carry of the study's record (``direction``, ``worst_score``,
    ``labels``); none for a store that predates it (maximize)."""
    sweep, task, model, variant, tag, metric = key
    study = study or {}
    direction = study.get("direction") or "maximize"
    chance = chance_level(task, metric, study.get("labels"), direction, study.get("worst_score"))
    start = study.get("initial")  # a minimized task's loss before training (a finite mean)
    if direction == "minimize" and start is not None:
        reference, name = start, "the loss training started from"
    else:
        reference = chance_score(task, metric, study.get("labels"), direction,
                                 study.get("worst_score"))
        name = "chance"
    best_lr, band, remark = _choose(cells, tolerance, reference, direction == "minimize", name)
    return VariantSummary(sweep, task, model, variant, tag, metric, cells, best_lr,
                          cells[best_lr].mean, band, selection=selection, remark=remark,
                          pruner=pruner, direction=direction, chance=chance,
                          objective=study.get("objective"))


def _group_averages(summaries: list[VariantSummary], rows: list[dict[str, Any]],
                    tolerance: float) -> list[VariantSummary]:
    """For task groups (``glue``): per variant and LR, the mean over the group's tasks.

    A learning rate enters the average only where every task of the group has a score, as the
    study averages the nine GLUE tasks; the average's validation chooses, as for one task.
    """
    groups: dict[tuple, set[str]] = defaultdict(set)
    for r in rows:
        if r.get("task_group"):
            groups[(r["sweep"], r["task_group"], r["model"])].add(r["task"])
    out = []
    for (sweep, group, model), tasks in sorted(groups.items()):
        by_variant: dict[str, list[VariantSummary]] = defaultdict(list)
        for s in summaries:
            if (s.sweep, s.model) == (sweep, model) and s.task in tasks:
                by_variant[s.variant_tag].append(s)
        for tag, members in sorted(by_variant.items()):
            if {m.task for m in members} != tasks:
                continue  # not every task has results yet
            lrs = set.intersection(*(set(m.cells) for m in members))
            if not lrs:
                continue
            cells = {lr: Cell(statistics.fmean(m.cells[lr].mean for m in members),
                              statistics.fmean(m.cells[lr].std for m in members),
                              min(m.cells[lr].n for m in members),
                              sum(m.cells[lr].diverged for m in members),
                              statistics.fmean(m.cells[lr].validation for m in members))
                     for lr in sorted(lrs)}
            selections = {m.selection for m in members}
            key = (sweep, f"{group} (avg of {len(tasks)})", model, members[0].variant, tag,
                   "average")
            out.append(dataclasses.replace(
                _summary(key, cells, tolerance, "/".join(sorted(selections)),
                         members[0].pruner, {"direction": members[0].direction}),
                search=members[0].search))
    return out


def _welch_p(a: list[float], b: list[float]) -> float | None:
    if len(a) < 3 or len(b) < 3:
        return None
    if statistics.pvariance(a) == 0 and statistics.pvariance(b) == 0:
        return 0.0 if statistics.fmean(a) != statistics.fmean(b) else 1.0
    from scipy.stats import ttest_ind

    return float(ttest_ind(a, b, equal_var=False).pvalue)


def summarise(rows: list[dict[str, Any]],
              band_tolerance: float = BAND_TOLERANCE) -> list[VariantSummary]:
    """Per (sweep, task, model, variant configuration): cells, selected LR, band, Δ vs LoRA.

    Only full-budget trials make the cells: the adaptive search's rungs (``budget`` < 1, runs
    stopped at that fraction of the schedule, scored on validation only) are not comparable with
    them; they make the summary's ``rungs`` (and stay in the rows).
    """
    groups: dict[tuple, dict[float, list[dict]]] = defaultdict(lambda: defaultdict(list))
    meta: dict[tuple, tuple[str, str | None, dict[str, Any]]] = {}
    rungs: dict[tuple, dict[float, dict[float, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list)))
    pruned: dict[tuple, dict[float, list]] = defaultdict(lambda: defaultdict(list))
    searches: dict[tuple, str] = {}
    initials: dict[tuple, list[float]] = defaultdict(list)  # before the first step (a loss)
    for r in rows:
        key = (r["sweep"], r["task"], r["model"], r["variant"], r["variant_tag"], r["metric"])
        searches[key] = r.get("search") or "grid"
        start = r.get("initial_score")
        if isinstance(start, (int, float)) and math.isfinite(start):
            initials[key].append(float(start))
        if r.get("budget", 1.0) < 1.0:
            if r["state"] == "complete" and r["select_score"] is not None:
                rungs[key][r["budget"]][r["lr"]].append(r["select_score"])
            continue
        if r["state"] == "complete" and r["score"] is not None and r["select_score"] is not None:
            groups[key][r["lr"]].append(r)
            meta[key] = (r.get("selection", "validation"), r.get("pruner"),
                         {k: r.get(k) for k in ("direction", "worst_score", "labels", "objective")})
        elif r["state"] == "pruned" and r.get("pruned_score") is not None:
            pruned[key][r["lr"]].append((r["pruned_step"], r["pruned_score"]))
    out = []
    for key, by_lr in sorted(groups.items()):
        cells = {}
        for lr, rs in sorted(by_lr.items()):
            scores = [r["score"] for r in rs]
            std = statistics.stdev(scores) if len(scores) > 1 else 0.0
            cells[lr] = Cell(statistics.fmean(scores), std, len(scores),
                             sum(bool(r["diverged"]) for r in rs),
                             statistics.fmean(r["select_score"] for r in rs), scores)
        selection, pruner, study = meta[key]
        if initials.get(key):
            study = {**study, "initial": statistics.fmean(initials[key])}
        summary = _summary(key, cells, band_tolerance, selection, pruner, study)
        summary.pruned = {lr: sorted(v) for lr, v in sorted(pruned[key].items())}
        summary.search = searches[key]
        if key in rungs:
            summary.band = None
            summary.rungs = {f: {lr: statistics.fmean(v) for lr, v in sorted(by.items())}
                             for f, by in sorted(rungs[key].items())}
        out.append(summary)
    out += _group_averages(out, rows, band_tolerance)
    for s in out:
        lora = [o for o in out if (o.sweep, o.task, o.model) == (s.sweep, s.task, s.model)
                and o.variant == "lora" and o.best_lr is not None]
        if lora and s.peak is not None:
            base = max(lora, key=lambda o: o.sign * o.cells[o.best_lr].validation)
            s.delta_vs_lora = s.peak - base.peak
            s.lr_ratio_vs_lora = s.best_lr / base.best_lr
            if s is not base:
                s.p_value = _welch_p(s.cells[s.best_lr].scores, base.cells[base.best_lr].scores)
    return out
