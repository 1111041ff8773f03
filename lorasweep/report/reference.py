"""The study's published learning-rate curves, shipped as package data, beside a sweep's own.

``study/*.csv`` (one row per variant and learning rate, scores in percent as printed; the first
line says what the score is) come from "A Unified Study of LoRA Variants": GSM8K and HumanEval on
Llama-3.1-8B, the GLUE average on RoBERTa-base and the image average on CLIP ViT-B/16, all r=8.
A sweep's task belongs to a family when its key is the family's (``gsm8k``, ``humaneval``) or
starts with it (``glue-*``, ``ic-*`` and their group averages).

The comparison a user reads at a glance is the *shift* of each variant's best learning rate
against LoRA's, :math:`\\rho = \\eta^\\star_{variant} / \\eta^\\star_{LoRA}`, in the study and here
(scores differ with model and budget; the shifts are what should reproduce).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import math
from importlib import resources
from typing import Any

from .select import VariantSummary

__all__ = ["FAMILIES", "StudyCurves", "compare", "study_curves"]

#: Task-key prefix -> the study's CSV for that family.
FAMILIES = {
    "glue": "glue_avg_roberta-base_r8.csv",
    "ic": "ic_avg_clip-vit-b16_r8.csv",
    "gsm8k": "gsm8k_llama3.1-8b_r8.csv",
    "humaneval": "humaneval_llama3.1-8b_r8.csv",
}


@dataclasses.dataclass(frozen=True)
class StudyCurves:
    family: str
    caption: str  # what the score is, and the study's setting
    curves: dict[str, list[tuple[float, float]]]  # variant key -> [(lr, score %)], lr ascending

    def best_lr(self, variant: str) -> float | None:
        curve = self.curves.get(variant)
        return max(curve, key=lambda p: p[1])[0] if curve else None


def family_of(task: str) -> str | None:
    for family in FAMILIES:
        if task == family or task.startswith((family + "-", family + " ")):
            return family
    return None


@functools.cache
def _load(family: str) -> StudyCurves:
    text = resources.files(__package__).joinpath("study", FAMILIES[family]).read_text()
    lines = text.splitlines()
    caption = lines[0].lstrip("# ").strip() if lines and lines[0].startswith("#") else family
    curves: dict[str, list[tuple[float, float]]] = {}
    for row in csv.DictReader(line for line in lines if not line.startswith("#")):
        curves.setdefault(row["variant"], []).append((float(row["lr"]), float(row["score"])))
    return StudyCurves(family, caption, {k: sorted(v) for k, v in curves.items()})


def study_curves(task: str) -> StudyCurves | None:
    """The study's curves for ``task``'s family, or None when the study has none."""
    family = family_of(task)
    return _load(family) if family else None


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
