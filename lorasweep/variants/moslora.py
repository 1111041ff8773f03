"""MoSLoRA: LoRA with a trainable r × r mixer between A and B."""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import AdapterLayer, AInitOptions, Variant, register

__all__ = ["MosLora", "MosLoraLayer"]


class MosLoraLayer(AdapterLayer):
    def __init__(self, base: nn.Linear, variant: Variant):
        super().__init__(base, variant)
        self.lora_mixer = nn.Parameter(
            torch.empty(self.rank, self.rank, dtype=self.lora_A.dtype, device=self.lora_A.device)
        )

    @torch.no_grad()
    def reset_adapter(self) -> None:
        super().reset_adapter()
        nn.init.kaiming_uniform_(self.lora_mixer, a=math.sqrt(5))

    def delta_weight(self) -> torch.Tensor:
        return self.scaling * (self.lora_B @ self.lora_mixer @ self.lora_A)

    def adapter_output(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(x)
        if x.dtype != self.lora_A.dtype and not torch.is_autocast_enabled(x.device.type):
            x = x.to(self.lora_A.dtype)
        return self.scaling * (((x @ self.lora_A.t()) @ self.lora_mixer.t()) @ self.lora_B.t())


@register
class MosLora(Variant):
    """MoSLoRA (Wu et al., 2024): mixture-of-subspaces LoRA.

    ``W' = W + s · B M A`` with a trainable mixer ``M ∈ R^{r×r}`` that fuses the ``r`` subspaces
    of ``A`` into those of ``B``: ``A`` and ``M`` Kaiming-uniform (``a = sqrt(5)``), ``B`` zero,
    ``s = alpha / r``; the model starts as the base model. The forward never forms ``B M A``:
    ``y = W x + b + s · B (M (A x))``. The update is linear, so it merges into ``W``.

    Reference: ``mos_lora.py`` of the study's code, matched (mixer Kaiming ``a = sqrt(5)``).
    """

    key = "moslora"
    axis = "moe"
    study = {"options": {"a_init": "gaussian"}}
    Options = AInitOptions
    summary = "LoRA with a trainable r×r mixer between A and B: s·B M A"
    layer = MosLoraLayer
    peft_flags = None
