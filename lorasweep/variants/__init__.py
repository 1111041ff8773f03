"""Variants: one file per variant, one registry key each (the key is the file name)."""

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
from .base import AXES, AdapterLayer, Variant, VariantError, get_variant_class, register, registry
from .export import export_peft, load_adapter, save_adapter
from .inject import apply_variant, get_variant, resolve_targets

__all__ = [
    "AXES",
    "AdapterLayer",
    "Variant",
    "VariantError",
    "apply_variant",
    "export_peft",
    "get_variant",
    "get_variant_class",
    "list_variants",
    "load_adapter",
    "register",
    "registry",
    "resolve_targets",
    "save_adapter",
]


def list_variants() -> list[dict[str, str]]:
    """The registry's entries: key, taxonomy axis, one-line summary, option defaults."""
    return [
        {"key": k, "axis": c.axis, "summary": c.summary, "options": c.option_defaults()}
        for k, c in sorted(registry().items())
    ]
