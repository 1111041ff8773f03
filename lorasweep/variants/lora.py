"""LoRA: the baseline every variant is compared with."""

from __future__ import annotations

from .base import AdapterLayer, Variant, register

__all__ = ["Lora"]


@register
class Lora(Variant):
    """Low-rank adaptation (Hu et al., 2021).

    ``W' = W + s · B A`` with ``A ∈ R^{r×in}`` Kaiming-uniform, ``B ∈ R^{out×r}`` zero and
    ``s = alpha / r``; the model starts exactly as the base model.
    """

    key = "lora"
    axis = "baseline"
    summary = "low-rank update s·BA, A Kaiming, B zero, s = alpha/r"
    layer = AdapterLayer
