"""NZLoRA: LoRA with non-zero random A and B, the initial update subtracted from the weight."""

from __future__ import annotations

import dataclasses
import math

import torch

from .base import AdapterLayer, Variant, VariantError, register

__all__ = ["NzLora", "NzLoraLayer"]


@dataclasses.dataclass
class NzLoraOptions:
    gamma_a: float = 16.0  # A ~ U(±sqrt(gamma_a / in))
    gamma_b: float = 16.0  # B ~ U(±sqrt(gamma_b / in))

    def validate(self) -> None:
        for name in ("gamma_a", "gamma_b"):
            value = getattr(self, name)
            if not value > 0 or not math.isfinite(value):
                raise VariantError(f"nzlora {name} must be positive and finite, got {value}")


class NzLoraLayer(AdapterLayer):
    @torch.no_grad()
    def reset_adapter(self) -> None:
        bound_a = math.sqrt(self.options.gamma_a / self.in_features)
        bound_b = math.sqrt(self.options.gamma_b / self.in_features)
        torch.nn.init.uniform_(self.lora_A, -bound_a, bound_a)
        torch.nn.init.uniform_(self.lora_B, -bound_b, bound_b)
        self.keep_initial_update()


@register
class NzLora(Variant):
    """Non-zero LoRA (Li et al., 2025, "Beyond zero initialization").

    Both factors start random: ``A ~ U(-sqrt(gamma_A / in), sqrt(gamma_A / in))`` and
    ``B ~ U(-sqrt(gamma_B / in), sqrt(gamma_B / in))``, ``in`` the wrapped layer's input width
    for both (as the study's reference code; study: ``gamma_A = gamma_B = 16``). The update is
    LoRA's ``s · B A``, ``s = alpha / r``; the initial ``s · B0 A0`` is subtracted from the frozen
    weight, so the model starts as the base model. Exports to peft as a rank-``2r`` LoRA of the
    untouched weight ``[B | B0] [A ; -A0]``.

    Reference: ``nzlora.py`` of the study's code: the same bounds; it subtracts the initial
    update only with ``lora_reset_weight``, lorasweep always does.
    """

    key = "nzlora"
    axis = "initialization"
    study = {"options": {"gamma_a": 16.0, "gamma_b": 16.0}}
    summary = "LoRA with A, B ~ U(±sqrt(16/in)); initial update subtracted from W"
    layer = NzLoraLayer
    quantized_base = "residual"
    Options = NzLoraOptions
