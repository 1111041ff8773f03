"""The study's settings of each variant, beside lorasweep's defaults.

Each variant class declares ``study``: the settings with which the study ("A Unified Study of
LoRA Variants", arXiv 2601.22708) ran it, where they differ from the shared protocol
(``r = 8``, ``alpha = 16``) or from the variant's option defaults. ``rank``/``alpha`` entries are
settings of the whole sweep, never overridden silently: a variant built at another rank warns
once per process, naming the study's setting (the ``recipes/study-*.yaml`` set them).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

__all__ = [
    "STUDY_ALPHA",
    "STUDY_RANK",
    "StudySettingWarning",
    "check_study_fields",
    "describe_study",
    "study_settings",
    "warn_if_off_study_rank",
]

#: The study's shared protocol: every variant at ``r = 8``, ``alpha = 16`` unless it says so.
STUDY_RANK, STUDY_ALPHA = 8, 16.0

_warned: set[tuple[str, int]] = set()


class StudySettingWarning(UserWarning):
    """A variant runs at a rank the study did not use for it."""


def study_settings(cls: Any) -> dict[str, Any]:
    """The variant's settings in the study, complete: rank, alpha and every option."""
    declared = dict(getattr(cls, "study", {}) or {})
    options = {**cls.option_defaults(), **declared.pop("options", {})}
    return {
        "rank": declared.pop("rank", STUDY_RANK),
        "alpha": float(declared.pop("alpha", STUDY_ALPHA)),
        "options": options,
        **declared,  # e.g. "note"
    }


def describe_study(cls: Any) -> str:
    """One line for ``lorasweep variants``: what the study set, differing from the defaults."""
    declared = dict(getattr(cls, "study", {}) or {})
    parts = []
    if "rank" in declared:
        parts.append(f"rank {declared['rank']} (not the sweep's {STUDY_RANK})")
    if "alpha" in declared:
        parts.append(f"alpha {declared['alpha']:g}")
    defaults = cls.option_defaults()
    for name, value in (declared.get("options") or {}).items():
        marker = "" if defaults.get(name) == value else " (default differs)"
        parts.append(f"{name}={value}{marker}")
    if declared.get("note"):
        parts.append(declared["note"])
    return "; ".join(parts) or "protocol only (r 8, alpha 16)"


def warn_if_off_study_rank(variant: Any) -> None:
    """Warn once per variant and rank when a variant with a study rank runs at another rank."""
    declared = getattr(variant, "study", {}) or {}
    rank = declared.get("rank")
    if rank is None or variant.rank == rank or (variant.key, variant.rank) in _warned:
        return
    _warned.add((variant.key, variant.rank))
    alpha = declared.get("alpha")
    setting = f"rank {rank}" + (f", alpha {alpha:g}" if alpha is not None else "")
    warnings.warn(
        f"{variant.key} runs at rank {variant.rank}, but the study ran it at {setting} "
        f"(pass --rank {rank}{f' --alpha {alpha:g}' if alpha is not None else ''} "
        f"or use recipes/study-*.yaml to reproduce the study)",
        StudySettingWarning,
        stacklevel=3,
    )


def check_study_fields(cls: Any) -> None:
    """Study options must be real options of the variant (checked at registration)."""
    names = {f.name for f in dataclasses.fields(cls.Options)}
    unknown = set((getattr(cls, "study", {}) or {}).get("options", {})) - names
    if unknown:
        raise TypeError(f"{cls.__name__}.study names unknown options {sorted(unknown)}")
