"""DenseLoRA: one dense adapter per module type, a small trainable matrix per layer."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .base import (
    AdapterLayer,
    AInitOptions,
    Variant,
    VariantError,
    module_type,
    module_types,
    new_factors,
    register,
)

__all__ = ["DenseLora", "DenseLoraLayer"]


class DenseLoraLayer(AdapterLayer):
    """The type's shared ``lora_A`` (``r × in``) and ``lora_B`` (``out × r``), and the layer's
    own ``lora_M`` (``r × r``)."""

    def __init__(self, base: nn.Linear, variant: Variant, shared_A: nn.Parameter,
                 shared_B: nn.Parameter):
        super().__init__(base, variant)
        self.lora_A = shared_A  # the same Parameters in every layer of this module type
        self.lora_B = shared_B
        self.lora_M = nn.Parameter(torch.empty(self.rank, self.rank, dtype=shared_A.dtype,
                                               device=shared_A.device))

    @torch.no_grad()
    def reset_adapter(self) -> None:
        """``M`` Kaiming-uniform (``A``, ``B`` are initialised once, by the variant, when the
        type's first layer is built)."""
        nn.init.kaiming_uniform_(self.lora_M, a=math.sqrt(5))

    def delta_weight(self) -> torch.Tensor:
        raise VariantError("denselora is nonlinear in its input: no weight update reproduces it")

    def adapter_output(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(x)
        if x.dtype != self.lora_A.dtype and not torch.is_autocast_enabled(x.device.type):
            x = x.to(self.lora_A.dtype)
        hidden = F.gelu(x @ self.lora_A.t())
        # B M (out × r) is formed once per call: cheaper than a second r × r pass per token
        return self.scaling * F.gelu(hidden @ (self.lora_B @ self.lora_M).t())


@register
class DenseLora(Variant):
    """DenseLoRA (Mu et al., 2025): a dense adapter shared by the layers of one module type.

    A module type is the module's name with the block indices starred (see
    :func:`~lorasweep.variants.base.module_type`); its ``L`` layers have one shape and share
    an encoder ``A ∈ R^{r×in}`` (Kaiming-uniform) and a decoder ``B ∈ R^{out×r}`` (zero); each
    layer has its own ``M ∈ R^{r×r}`` (Kaiming-uniform)::

        y = W x + b + s · GELU(B M GELU(A dropout(x))),     s = alpha / r

    ``B = 0`` and ``GELU(0) = 0`` exactly, so the model starts as the base model (and, as in
    LoRA, only ``B`` gets a gradient at the first step: ``GELU'(0) = 1/2``). The update is
    nonlinear in ``x``: no weight reproduces it, so the layers do not merge. Trainable parameters
    of a type: ``r·(in+out) + L·r²``. The gradients of all ``L`` layers accumulate into ``A``,
    ``B``.

    Rank and alpha are the sweep's global settings, never overridden here: the study ran
    DenseLoRA at ``r = 192``, ``alpha = 384`` (``s = 2``), which its recipes set explicitly.

    Reference: ``dense_lora.py`` of the study's code, matched (shared ``A``/``B`` per module
    type, per-layer mixer Kaiming ``a = sqrt(5)``, ``GELU(B M GELU(A x))``). At ``r = 192``,
    ``alpha = 384`` it trains 23.99M parameters on Llama-3.1-8B, the study's Table II; at another
    rank it warns once.
    """

    key = "denselora"
    axis = "rank"
    study = {"rank": 192, "alpha": 384, "options": {"a_init": "gaussian"}}
    Options = AInitOptions
    summary = "shared GELU adapter per module type, per-layer r x r mixer (study: r 192, alpha 384)"
    layer = DenseLoraLayer
    peft_flags = None  # nonlinear: no peft LoRA equivalent
    mergeable = False

    def __init__(self, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0, **options: Any):
        super().__init__(rank, alpha, dropout, **options)
        self._shared: dict[str, tuple[nn.Parameter, nn.Parameter]] = {}

    def plan_layers(self, targets: dict[str, nn.Linear]) -> None:
        module_types(targets, self.key)  # one shape per module type, or a clear error now

    def build_layer(self, name: str, base: nn.Linear) -> AdapterLayer:
        kind = module_type(name)
        if kind not in self._shared:
            self._shared[kind] = new_factors(base, self.rank, self.options)
        shared_A, shared_B = self._shared[kind]
        if (shared_A.shape[1], shared_B.shape[0]) != (base.in_features, base.out_features):
            raise VariantError(
                f"denselora shares A, B between the layers {kind}, but {name} is "
                f"{base.in_features}->{base.out_features}, not "
                f"{shared_A.shape[1]}->{shared_B.shape[0]}"
            )
        layer = DenseLoraLayer(base, self, shared_A, shared_B)
        layer.reset_adapter()
        self.layers[name] = layer
        return layer
