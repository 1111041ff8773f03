"""rsLoRA: LoRA with a rank-stabilised scale."""

from __future__ import annotations

import math

from .base import AdapterLayer, AInitOptions, Variant, register

__all__ = ["RsLora", "RsLoraLayer"]


class RsLoraLayer(AdapterLayer):
    @property
    def scaling(self) -> float:
        return self.alpha / math.sqrt(self.rank)


@register
class RsLora(Variant):
    """Rank-stabilised LoRA (Kalajdzievski, 2023).

    As LoRA, ``W' = W + s · B A``, but with ``s = alpha / sqrt(r)`` so that the update's scale
    does not collapse as the rank grows.

    Reference: ``rslora.py`` of the study's code, matched (``alpha / sqrt(r)``).
    """

    key = "rslora"
    axis = "optimization"
    study = {"options": {"a_init": "gaussian"}}
    Options = AInitOptions
    summary = "LoRA with rank-stabilised scale s = alpha/sqrt(r)"
    layer = RsLoraLayer
    peft_flags = {"use_rslora": True}
