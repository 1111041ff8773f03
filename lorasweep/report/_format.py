"""Text pieces shared by the terminal, Markdown and HTML reports."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from ..text import format_lr
from .select import VariantSummary, band_rule, delta_rule

__all__ = ["RUNG_NOTE", "rung_note", "band_text", "by_task", "cell_text", "delta_text", "lr_text",
           "lrs_of", "probed_lrs", "ratio_text", "rules_text", "selection_note", "selection_title",
           "short_names", "times", "tuned_text", "unlisted_trials"]

#: What a rung's cell (``0.52@30%``) and an adaptive search's band word mean, said once per table.
RUNG_NOTE = ("score@F%: the validation score of a learning rate the adaptive search stopped at F% "
             "of the schedule (a rung); band 'unmeasured': few learning rates ran the whole "
             "schedule")


def rung_note(group: list) -> str:
    """:data:`RUNG_NOTE` in the words of the search that ran ``group``'s rungs (a transfer
    search's or the adaptive search's)."""
    if any(getattr(s, "search", None) == "transfer" for s in group):
        return RUNG_NOTE.replace("the adaptive search", "the transfer search")
    return RUNG_NOTE


def lr_text(lr: float | None) -> str:
    """``1e-4``, ``3e-3``, ``2.5e-5`` (:func:`lorasweep.text.format_lr`); ``-`` for none."""
    return "-" if lr is None else format_lr(lr)


def by_task(summaries: list[VariantSummary]) -> dict[tuple[str, str, str], list[VariantSummary]]:
    """One table (and one plot) per sweep, task and model; LoRA first, as the baseline."""
    grouped: dict[tuple[str, str, str], list[VariantSummary]] = defaultdict(list)
    for s in summaries:
        grouped[(s.sweep, s.task, s.model)].append(s)
    return {k: sorted(g, key=lambda s: (s.variant != "lora", s.variant_tag))
            for k, g in grouped.items()}


def lrs_of(group: list[VariantSummary]) -> list[float]:
    return sorted({lr for s in group for lr in s.cells})


def probed_lrs(group: list[VariantSummary]) -> list[float]:
    """Every learning rate any variant of ``group`` ran: full-budget cells and rungs."""
    return sorted({lr for s in group for lr in s.cells}
                  | {lr for s in group for by_lr in s.rungs.values() for lr in by_lr})


def short_names(group: list[VariantSummary]) -> tuple[dict[str, str], str | None]:
    """Each variant tag's name in a table, and the caption that says what was cut: the
    configuration every variant of the group shares (``lora-r8-a16``, ``loraplus-r8-a16``:
    ``lora``, ``loraplus``; caption ``each variant: r8-a16``). Full tags when they differ."""
    tags = {s.variant_tag: s.variant for s in group}
    rests = {tag[len(key) + 1:] for tag, key in tags.items() if tag.startswith(key + "-")}
    short = {tag: key for tag, key in tags.items()}
    if len(rests) != 1 or not all(t.startswith(k + "-") for t, k in tags.items()) \
            or len(set(short.values())) != len(short):
        return {tag: tag for tag in tags}, None
    return short, f"each variant: {rests.pop()}"


def cell_text(s: VariantSummary, lr: float, validation: bool = False) -> str:
    """The score at ``lr``: the full-budget one; else the highest rung's validation score
    marked with its fraction of the schedule (``0.52@33%``); else ``-``."""
    c = s.cells.get(lr)
    if c is None:
        rung = max((f for f, by_lr in s.rungs.items() if lr in by_lr), default=None)
        return "-" if rung is None else f"{s.rungs[rung][lr]:.2f}@{rung:.0%}"
    if validation:
        return f"{c.validation:.3f}" + (" (div)" if c.diverged else "")
    text = f"{c.mean:.3f}" + (f" ± {c.std:.3f}" if c.n > 1 else "")
    return text + (" (div)" if c.diverged else "")


def tuned_text(s: VariantSummary) -> str:
    if s.peak is None:
        return "-"
    return f"{s.peak:.3f}" + (f" ± {s.test_std:.3f}" if s.seeds > 1 else "")


def band_text(s: VariantSummary) -> str:
    if s.band is None:
        return "unmeasured" if s.rungs else "none" if s.remark else "-"
    return f"{lr_text(s.band[0])}–{lr_text(s.band[1])} ({s.band_decades:.1f} dec)"


def times(value: float | None) -> str:
    """A ratio of learning rates: ``3x``, ``0.3x``, ``1000x``, ``1/1000x`` (never ``1e+03x``)."""
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value:.0f}x"
    if value < 0.001:
        return f"1/{1 / value:.0f}x"
    return f"{value:.3g}x"


def ratio_text(s: VariantSummary) -> str:
    if s.variant == "lora" or s.lr_ratio_vs_lora is None:
        return "-"
    return times(s.lr_ratio_vs_lora)


def delta_text(s: VariantSummary) -> str:
    if s.variant == "lora":
        return "baseline"
    if s.delta_vs_lora is None:
        return "-"
    mark = "" if s.p_value is None else (" *" if s.p_value < 0.05 else " (n.s.)")
    return f"{s.delta_vs_lora:+.3f}{mark}"


def selection_note(group: list[VariantSummary]) -> str:
    kinds = {s.selection for s in group}
    if kinds == {"validation"}:
        return ("Selected on validation: each variant's learning rate is the one with the best "
                "mean validation score over seeds; its test score is reported.")
    if _final(group):
        return ("This task has no separate test split: each trial's validation score both "
                "selects the learning rate and is reported. Read it as an upper bound.")
    return ("This task has no separate validation split (its validation split is the test set): "
            "as in the study, each trial's best score over its evaluations both selects the "
            "learning rate and is reported. Read it as an upper bound.")


def selection_title(group: list[VariantSummary]) -> str:
    """How the tuned results were chosen, in a title's words (the task's objective's)."""
    kinds = {s.selection for s in group}
    if kinds == {"validation"}:
        return "selected on validation"
    if _final(group):
        return f"no separate test split: selected and reported on validation {group[0].metric}"
    return "no separate validation split: best over evaluations"


def _final(group: list[VariantSummary]) -> bool:
    """Whether the group's objective is the validation score at the end (not the best over
    evaluations, GLUE's protocol): known from the studies' recorded objective name."""
    names = {s.objective for s in group}
    return None not in names and not any(n.startswith("best_") for n in names)


def rules_text(group: list[VariantSummary], tolerance: float) -> str:
    """The band's rule and Δ's sign convention, in the group's direction."""
    minimize = any(s.minimize for s in group)
    return f"{band_rule(tolerance, minimize)}; {delta_rule(minimize)}"


def unlisted_trials(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Trials not in the curves (failed, pruned, unfinished), each with its reason."""
    return [r for r in rows if r["state"] != "complete"]
