"""LoRA+: LoRA whose B matrix learns faster than A."""

from __future__ import annotations

import dataclasses
from typing import Any

from .base import AdapterLayer, AInitOptions, Variant, VariantError, register

__all__ = ["LoraPlus"]


@dataclasses.dataclass
class LoraPlusOptions(AInitOptions):
    ratio: float = 16.0  # lr(B) / lr(A)

    def validate(self) -> None:
        super().validate()
        if self.ratio <= 0:
            raise VariantError(f"loraplus ratio must be positive, got {self.ratio}")


@register
class LoraPlus(Variant):
    """LoRA+ (Hayou et al., 2024).

    Same update as LoRA, ``W' = W + s · B A``, but the optimizer gives ``B`` the learning rate
    ``ratio · lr`` while ``A`` keeps ``lr`` (study default ``ratio = 16``). The swept learning
    rate is therefore A's.

    Reference: ``lora.py`` plus the optimizer groups of the study's code (B at
    ``ratio · lr``), matched.
    """

    key = "loraplus"
    axis = "optimization"
    study = {"options": {"ratio": 16.0, "a_init": "gaussian"}}
    summary = "LoRA with B trained at ratio x the learning rate of A (ratio 16)"
    layer = AdapterLayer
    Options = LoraPlusOptions

    def param_groups(self, lr: float, weight_decay: float = 0.0) -> list[dict[str, Any]]:
        params = self.adapter_parameters()
        a = [p for n, p in params if not n.endswith("lora_B")]
        b = [p for n, p in params if n.endswith("lora_B")]
        return [
            {"params": a, "lr": lr, "weight_decay": weight_decay, "name": "adapter_A"},
            {"params": b, "lr": lr * self.options.ratio, "weight_decay": weight_decay,
             "name": "adapter_B"},
            *self.head_groups(lr, weight_decay),
        ]
