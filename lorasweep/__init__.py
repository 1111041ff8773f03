"""lorasweep: learning-rate sweeps of LoRA variants, from a laptop to a SLURM cluster.

The adapters alone::

    import lorasweep
    lorasweep.apply_variant(model, "dora", rank=8, alpha=16)

Heavy libraries (torch, transformers) load on first use, so the CLI starts instantly.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "apply_variant", "get_variant", "list_variants", "load_adapter",
           "save_adapter"]

_LAZY = {"apply_variant", "get_variant", "list_variants", "load_adapter", "save_adapter"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import variants

        return getattr(variants, name)
    raise AttributeError(f"module 'lorasweep' has no attribute {name!r}")
