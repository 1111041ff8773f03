"""The study's published learning-rate curves beside a sweep's own (the data and its loader:
:mod:`lorasweep.published`).

The comparison a user reads at a glance is the *shift* of each variant's best learning rate
against LoRA's, :math:`\\rho = \\eta^\\star_{variant} / \\eta^\\star_{LoRA}`, in the study and here
(scores differ with model and budget; the shifts are what should reproduce).
"""

from __future__ import annotations

import math
from typing import Any

from ..published import FAMILIES, StudyCurves, family_of, study_curves
from .select import VariantSummary

__all__ = ["FAMILIES", "StudyCurves", "compare", "family_of", "study_curves"]


def compare(summaries: list[VariantSummary]) -> list[dict[str, Any]]:
    """Per swept (task, variant) with a study curve: best LR and its ratio to LoRA's, both sides.

    ``agrees``: the shift has the same direction in the study and here (both above LoRA's, both
    below, or both within a factor of 2), None when either side has no LoRA to compare to or
    the variant's or LoRA's curve here is flat (every learning rate scored the same).
    """
    out = []
    flat = {(s.sweep, s.task, s.model) for s in summaries if s.variant == "lora" and s.remark}
    for s in summaries:
        ref = study_curves(s.task)
        if ref is None or s.best_lr is None:
            continue
        study_lr, study_lora = ref.best_lr(s.variant), ref.best_lr("lora")
        study_ratio = study_lr / study_lora if study_lr and study_lora else None
        here_ratio = s.lr_ratio_vs_lora
        out.append({
            "sweep": s.sweep, "task": s.task, "model": s.model, "variant": s.variant,
            "variant_tag": s.variant_tag, "study": ref.caption,
            "study_best_lr": study_lr, "study_lora_best_lr": study_lora, "study_ratio": study_ratio,
            "here_best_lr": s.best_lr, "here_ratio": here_ratio,
            # a flat curve (here or LoRA's) has no best learning rate to compare
            "agrees": None if s.remark or (s.sweep, s.task, s.model) in flat
            else _same_shift(study_ratio, here_ratio),
        })
    return out


def _same_shift(study: float | None, here: float | None) -> bool | None:
    if study is None or here is None:
        return None

    def direction(ratio: float) -> int:
        return 0 if abs(math.log2(ratio)) <= 1 else (1 if ratio > 1 else -1)

    return direction(study) == direction(here)
