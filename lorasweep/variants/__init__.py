"""Variants: one file per variant, one registry key each: the key is the file's name with ``-``
for ``_`` (``lora_ga.py`` registers ``lora-ga``). ``base.py`` holds the adapter base and its hooks;
files starting with ``_`` hold what several variants share (options, module types, the SVD, the
gradient estimate); ``inject.py`` wraps the target modules; ``export.py`` writes adapters."""

from typing import Any

# Each import registers one variant (adding a variant: its file and one name here).
from . import (  # noqa: F401
    adalora,
    aurora,
    delora,
    denselora,
    dora,
    eva,
    goat,
    gora,
    hira,
    lora,
    lora_ga,
    lora_one,
    lora_pro,
    loramoe,
    loraplus,
    melora,
    milora,
    moslora,
    nzlora,
    olora,
    pissa,
    randlora,
    rasa,
    relora,
    rslora,
)
from ._quant import BASE_TREATMENTS, base_storage, dense_weight, is_quantized, quantize_linear
from .base import AXES, AdapterLayer, Variant, VariantError, get_variant_class, register, registry
from .export import export_peft, load_adapter, save_adapter
from .inject import apply_variant, get_variant, merge_and_unload, remove_variant, resolve_targets

__all__ = [
    "AXES",
    "BASE_TREATMENTS",
    "AdapterLayer",
    "Variant",
    "VariantError",
    "apply_variant",
    "base_storage",
    "dense_weight",
    "export_peft",
    "get_variant",
    "get_variant_class",
    "is_quantized",
    "list_variants",
    "load_adapter",
    "merge_and_unload",
    "qlora_table",
    "quantize_linear",
    "register",
    "registry",
    "remove_variant",
    "resolve_targets",
    "save_adapter",
]


def list_variants() -> list[dict[str, Any]]:
    """The registry's entries: key, taxonomy axis, one-line summary, option defaults, and the
    study's settings beside lorasweep's defaults (``study_settings``: one line of them), and how
    it treats a quantized base (``quantized_base``)."""
    from .study import STUDY_ALPHA, STUDY_RANK, describe_study, study_settings

    return [
        {
            "key": k,
            "axis": c.axis,
            "summary": c.summary,
            "options": c.option_defaults(),
            "defaults": {"rank": STUDY_RANK, "alpha": STUDY_ALPHA, "options": c.option_defaults()},
            "study": study_settings(c),
            "study_settings": describe_study(c),
            "quantized_base": c.quantized_base,  # over model.quantize=nf4 (README "QLoRA")
        }
        for k, c in sorted(registry().items())
    ]


def qlora_table() -> str:
    """What a 4-bit base does to each variant, as a Markdown table generated from the variants'
    ``quantized_base`` declarations (the README's "QLoRA" table is this text)."""
    by: dict[str, list[str]] = {t: [] for t in BASE_TREATMENTS}
    for key, cls in sorted(registry().items()):
        by[cls.quantized_base].append(f"`{key}`")
    lines = ["| over NF4 | variants | what happens |", "|---|---|---|"]
    lines += [f"| {t} | {', '.join(keys)} | {BASE_TREATMENTS[t]} |" for t, keys in by.items() if keys]
    return "\n".join(lines)
