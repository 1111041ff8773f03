"""HiRA: a Hadamard product of the frozen weight and a low-rank matrix, a high-rank update."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ._quant import is_quantized
from .base import AdapterLayer, AInitOptions, Variant, dense_weight, register

__all__ = ["Hira", "HiraLayer"]


class _HiraLinear(torch.autograd.Function):
    """``y = (c·W + W ⊙ s·B A) x + b`` (``c = 1``: the layer; ``c = 0``: the update alone) that keeps neither ``W`` nor ``W ⊙ s·BA`` for backward: it
    saves ``x``, ``B``, ``A`` and reads ``W`` again through the seam (for a quantized base, a
    fresh dequantization of the 4-bit weight), so the only dense ``out × in`` tensors are
    transients of one layer. Backward, with ``G = gᵀ x`` and ``M = s·BA``: ``∂x = g (W ⊙ (c+M))``,
    ``∂M = G ⊙ W``, ``∂B = s ∂M Aᵀ``, ``∂A = s Bᵀ ∂M``."""

    @staticmethod
    def forward(ctx, x, lora_B, lora_A, layer, bias, c):  # noqa: D102
        ctx.layer, ctx.c = layer, c
        ctx.save_for_backward(x, lora_B, lora_A)
        return F.linear(x, layer.effective_weight(lora_B, lora_A, c).to(x.dtype), bias)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        x, lora_B, lora_A = ctx.saved_tensors
        layer, s = ctx.layer, ctx.layer.scaling
        grad_x = grad @ layer.effective_weight(lora_B, lora_A, ctx.c).to(grad.dtype)
        g = grad.reshape(-1, grad.shape[-1]).to(lora_A.dtype)
        d_m = (g.t() @ x.reshape(-1, x.shape[-1]).to(lora_A.dtype))
        d_m.mul_(dense_weight(layer.base).to(lora_A.dtype))
        return grad_x, s * (d_m @ lora_A.t()), s * (lora_B.t() @ d_m), None, None, None


class HiraLayer(AdapterLayer):
    @torch.no_grad()
    def effective_weight(self, lora_B: torch.Tensor, lora_A: torch.Tensor,
                         c: float = 1.0) -> torch.Tensor:
        """``W ⊙ (c + s·B A)`` in the adapter's dtype, no gradient (for :class:`_HiraLinear`)."""
        weight = dense_weight(self.base).to(lora_A.dtype)
        return weight.mul_(torch.addmm(torch.full_like(weight, c), lora_B, lora_A,
                                       alpha=self.scaling))

    def delta_weight(self) -> torch.Tensor:
        """``W ⊙ (s · B A)`` in the adapter's dtype (``W`` the frozen, unmerged weight)."""
        low_rank = self.scaling * (self.lora_B @ self.lora_A)
        return self.base.weight.to(low_rank.dtype) * low_rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base(x)
        if is_quantized(self.base):  # no dense W kept for backward
            if isinstance(self.dropout, nn.Identity) or not self.training:
                bias = None if self.base.bias is None else self.base.bias.to(x.dtype)
                return _HiraLinear.apply(x, self.lora_B, self.lora_A, self, bias, 1.0)
            update = _HiraLinear.apply(self.dropout(x), self.lora_B, self.lora_A, self, None, 0.0)
            return self.base(x) + update
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
    equivalent. Over a quantized base the product goes through an autograd function that saves
    ``x``, ``B``, ``A`` only and dequantizes ``W`` again in backward (``_HiraLinear``), so no
    dense ``W`` or ``W ⊙ sBA`` survives between forward and backward (as written above, autograd
    would keep both, ~6 bytes per target weight).

    Reference: ``hira.py`` of the study's code, matched (bias kept, merged-weight forward).
    """

    key = "hira"
    axis = "rank"
    study = {"options": {"a_init": "gaussian"}}
    Options = AInitOptions
    summary = "high-rank Hadamard update W ⊙ (s·BA), A Kaiming, B zero"
    layer = HiraLayer
    peft_flags = None
    quantized_base = "dequantize"
