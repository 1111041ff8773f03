"""Variants: one file per variant, one registry key each (the key is the file name)."""

from . import aurora, delora, denselora, dora, hira, lora, loraplus, melora, pissa, randlora, rasa, rslora  # noqa: F401  (each import registers a variant)
from . import goat, loramoe, milora, moslora, nzlora, olora  # noqa: F401  (initialization, moe)
from . import adalora, lora_pro, relora  # noqa: F401  (variants driven by the loop hooks)
from . import eva, gora, lora_ga, lora_one  # noqa: F401  (data-driven inits: prepare hook)
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
