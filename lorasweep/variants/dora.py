"""DoRA: weight-decomposed low-rank adaptation."""

from __future__ import annotations

import torch
from torch import nn

from ._quant import base_matmul, quantize_linear
from .base import AdapterLayer, AInitOptions, Variant, dense_weight, register

__all__ = ["Dora", "DoraLayer"]


class DoraLayer(AdapterLayer):
    def __init__(self, base: nn.Linear, variant: Variant):
        super().__init__(base, variant)
        self.lora_magnitude = nn.Parameter(
            torch.empty(self.out_features, dtype=self.lora_A.dtype, device=self.lora_A.device)
        )

    @torch.no_grad()
    def reset_adapter(self) -> None:
        super().reset_adapter()
        weight = dense_weight(self.base)
        if self.quantize != "none":  # the norm of the W the layer will hold: starts as that base
            weight = dense_weight(quantize_linear(self.base, self.quantize))
        self.lora_magnitude.copy_(weight.float().norm(dim=1).to(self.lora_magnitude))

    def _column_scale(self) -> torch.Tensor:
        """``m / ‖W + s·B A‖_row``, the norm detached from the graph (as the paper advises);
        ``W`` read through the seam (a quantized base: a transient dequantized copy)."""
        with torch.no_grad():
            weight = dense_weight(self.base)
            combined = weight + self.delta_weight().to(weight.dtype)
            norm = combined.float().norm(dim=1)
            del weight, combined
        return self.lora_magnitude / norm.to(self.lora_magnitude.dtype)

    def delta_weight(self) -> torch.Tensor:
        return self.scaling * (self.lora_B @ self.lora_A)

    def peft_tensors(self) -> dict[str, torch.Tensor]:
        """peft's LoRA tensors plus the magnitude, as ``lora_magnitude_vector``."""
        return {**super().peft_tensors(), "lora_magnitude_vector": self.lora_magnitude.detach()}

    def merged_weight(self) -> torch.Tensor:
        combined = self.base.weight + self.delta_weight().to(self.base.weight.dtype)
        return (self._column_scale()[:, None] * combined).to(self.base.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base(x)
        bias = self.base.bias
        base_out = base_matmul(self.base, x)
        out = base_out + self.adapter_output(x).to(base_out.dtype)
        out = out * self._column_scale().to(out.dtype)
        return out if bias is None else out + bias


@register
class Dora(Variant):
    """DoRA (Liu et al., 2024): learn a magnitude and a LoRA-updated direction separately.

    ``W' = m ⊙ (W + s·B A) / ‖W + s·B A‖_row``: the norm is taken per output row and detached
    from the graph; ``m ∈ R^{out}`` starts at ``‖W‖_row`` so the model starts as the base model.
    Over a quantized base ``m`` starts at the row norms of the dequantized 4-bit ``W`` (so the
    model starts exactly as the quantized base), ``W x`` is the 4-bit kernel's and the row norm is taken from a
    dequantized ``W`` without gradient, freed before the backward (as peft and torchtune's
    QDoRA: time, not memory). The forward never forms ``W'``: ``y = (m / ‖W + s·BA‖) ⊙ (W x + s·B A x) + b``; only the
    row norm needs ``B A`` (``out × in``), once per forward.

    Reference: ``dora.py`` of the study's code. Deliberate difference: it normalises per
    input column and recomputes the magnitude from the frozen weight at every forward (no
    trainable ``m``); lorasweep follows the paper and peft (trainable ``m`` per output row,
    the count of the study's Table II, 22.35M on Llama-3.1-8B).
    """

    key = "dora"
    axis = "optimization"
    study = {"options": {"a_init": "gaussian"}}
    Options = AInitOptions
    summary = "magnitude m times the normalised LoRA-updated direction (row norms, detached)"
    layer = DoraLayer
    peft_flags = {"use_dora": True}
    quantized_base = "dequantize"
