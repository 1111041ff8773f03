"""HiRA: a Hadamard product of the frozen weight and a low-rank matrix, a high-rank update."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .base import AdapterLayer, AInitOptions, Variant, register

__all__ = ["Hira", "HiraLayer"]


class HiraLayer(AdapterLayer):
    def delta_weight(self) -> torch.Tensor:
        """``W ⊙ (s · B A)`` in the adapter's dtype (``W`` the frozen, unmerged weight)."""
        low_rank = self.scaling * (self.lora_B @ self.lora_A)
        return self.base.weight.to(low_rank.dtype) * low_rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base(x)
        weight = self.base.weight
        if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
            x = x.to(weight.dtype)
        if isinstance(self.dropout, nn.Identity) or not self.training:
            # One matmul with the effective weight ``W + W ⊙ (s·BA)``.
            return F.linear(x, self.merged_weight(), self.base.bias)
        # Dropout acts on the update's input only, as in LoRA: ``W x + b + dW dropout(x)``.
        update = F.linear(self.dropout(x), self.delta_weight().to(weight.dtype))
        return self.base(x) + update


@register
class Hira(Variant):
    """HiRA (Huang et al., 2025): high-rank adaptation through a Hadamard product.

    ``W' = W + W ⊙ (s · B A)`` with ``A ∈ R^{r×in}`` Kaiming-uniform, ``B ∈ R^{out×r}`` zero
    and ``s = alpha / r``. The update's rank is bounded by ``rank(W) · r``, not ``r``, yet it
    trains only ``r (in + out)`` numbers. ``B = 0`` makes the model start as the base model.
    The update cannot be applied to ``x`` without forming ``W ⊙ BA``, so the forward builds the
    effective weight and runs one ``F.linear`` (with dropout > 0 in training:
    ``W x + b + (W ⊙ sBA) dropout(x)``). Merging writes ``W'``; there is no peft LoRA
    equivalent.

    Reference: ``hira.py`` of the study's code, matched (bias kept, merged-weight forward).
    """

    key = "hira"
    axis = "rank"
    study = {"options": {"a_init": "gaussian"}}
    Options = AInitOptions
    summary = "high-rank Hadamard update W ⊙ (s·BA), A Kaiming, B zero"
    layer = HiraLayer
    peft_flags = None
