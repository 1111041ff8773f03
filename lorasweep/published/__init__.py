r"""The study's published learning-rate curves (package data), read by the report and the search.

``*.csv`` here (one row per variant and learning rate, scores in percent as printed; the first
line says what the score is) come from "A Unified Study of LoRA Variants": GSM8K and HumanEval on
Llama-3.1-8B, the GLUE average on RoBERTa-base and the image average on CLIP ViT-B/16, all r=8.
A sweep's task belongs to a family when its key is the family's (``gsm8k``, ``humaneval``) or
starts with it (``glue-*``, ``ic-*`` and their group averages).

What transfers between benchmarks is the *shift* of a variant's best learning rate against
LoRA's, :math:`\log_{10}(\eta^\star_{variant} / \eta^\star_{LoRA})` in decades
(:func:`table_shifts`): the report shows it beside a sweep's own, and the transfer search starts
each variant where LoRA's best LR times that shift puts it. This is the one loader of the files.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import math
from importlib import resources

__all__ = ["FAMILIES", "StudyCurves", "family_of", "load", "study_curves", "table_shifts"]

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

    def shift(self, variant: str) -> float | None:
        """log10 of the variant's best LR over LoRA's, None when either has no curve."""
        lr, lora = self.best_lr(variant), self.best_lr("lora")
        return math.log10(lr / lora) if lr and lora else None


def family_of(task: str) -> str | None:
    for family in FAMILIES:
        if task == family or task.startswith((family + "-", family + " ")):
            return family
    return None


@functools.cache
def load(family: str) -> StudyCurves:
    """One family's table (cached; ``KeyError`` for a family the study has not)."""
    text = resources.files(__package__).joinpath(FAMILIES[family]).read_text()
    lines = text.splitlines()
    caption = lines[0].lstrip("# ").strip() if lines and lines[0].startswith("#") else family
    curves: dict[str, list[tuple[float, float]]] = {}
    for row in csv.DictReader(line for line in lines if not line.startswith("#")):
        curves.setdefault(row["variant"], []).append((float(row["lr"]), float(row["score"])))
    return StudyCurves(family, caption, {k: sorted(v) for k, v in curves.items()})


def study_curves(task: str) -> StudyCurves | None:
    """The study's curves for ``task``'s family, or None when the study has none."""
    family = family_of(task)
    return load(family) if family else None


def table_shifts(exclude: tuple[str, ...] = ()) -> dict[str, dict[str, float]]:
    """Per variant (LoRA excluded): family -> its shift in that table, over the families not in
    ``exclude`` (a leave-one-out replay excludes the held-out one)."""
    out: dict[str, dict[str, float]] = {}
    for family in FAMILIES:
        if family in exclude:
            continue
        table = load(family)
        for variant in table.curves:
            shift = table.shift(variant)
            if variant != "lora" and shift is not None:
                out.setdefault(variant, {})[family] = shift
    return out
