"""RaSA: low-rank adaptation that shares part of every layer's rank across layers."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from .base import (
    AdapterLayer,
    AInitOptions,
    Variant,
    VariantError,
    init_lora_A,
    module_type,
    module_types,
    new_factors,
    register,
)

__all__ = ["Rasa", "RasaLayer"]


@dataclasses.dataclass
class RasaOptions(AInitOptions):
    #: Ranks each layer gives to the pool its module type shares (study: 1); 0 < k < rank.
    k: int = 1

    def validate(self) -> None:
        super().validate()
        if self.k < 1:
            raise VariantError(f"rasa k must be a positive integer below the rank, got {self.k}")


class RasaLayer(AdapterLayer):
    """Private ``A (r-k × in)``, ``B (out × r-k)``, the type's shared ``A_S``, ``B_S`` and the
    layer's own scales ``E`` over all ``r - k + kL`` ranks."""

    def __init__(self, base: nn.Linear, variant: Variant, shared_A: nn.Parameter,
                 shared_B: nn.Parameter):
        super().__init__(base, variant)
        private = variant.rank - variant.options.k
        factory = {"device": self.lora_A.device, "dtype": self.lora_A.dtype}
        self.lora_A = nn.Parameter(torch.empty(private, self.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, private, **factory))
        self.lora_A_shared = shared_A  # the same Parameter in every layer of this module type
        self.lora_B_shared = shared_B
        self.lora_E = nn.Parameter(torch.empty(private + shared_A.shape[0], **factory))

    @property
    def scaling(self) -> float:
        return 1.0  # the scales live in the trainable E

    @torch.no_grad()
    def reset_adapter(self) -> None:
        """Private ``A`` Kaiming, ``B`` zero; ``E``: ``alpha/2`` spread over each part's ranks.
        (``A_S``, ``B_S`` are initialised once, by the variant, when the type's first layer is
        built.)"""
        init_lora_A(self.lora_A, self.options)
        nn.init.zeros_(self.lora_B)
        private, shared = self.lora_A.shape[0], self.lora_A_shared.shape[0]
        self.lora_E[:private] = self.alpha / 2 / private
        self.lora_E[private:] = self.alpha / 2 / shared

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, B_S]`` and ``diag(E) [A; A_S]``: the update is their product."""
        a = self.lora_E[:, None] * torch.cat([self.lora_A, self.lora_A_shared])
        return torch.cat([self.lora_B, self.lora_B_shared], dim=1), a

    def delta_weight(self) -> torch.Tensor:
        b, a = self._factors()
        return b @ a

    def adapter_output(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(x)
        if x.dtype != self.lora_A.dtype and not torch.is_autocast_enabled(x.device.type):
            x = x.to(self.lora_A.dtype)
        b, a = self._factors()
        return (x @ a.t()) @ b.t()


@register
class Rasa(Variant):
    """RaSA (He et al., 2025): every layer lends ``k`` of its ``r`` ranks to a pool that all layers
    of its module type share, so each layer adapts with rank ``r - k + kL`` for LoRA's parameters.

    A module type is the module's name with the block indices starred
    (``layers.*.self_attn.q_proj``, see :func:`~lorasweep.variants.base.module_type`); it has
    ``L`` layers, all of one shape.
    Per layer: private ``A ∈ R^{(r-k)×in}`` (Kaiming), ``B ∈ R^{out×(r-k)}`` (zero); per type,
    shared ``A_S ∈ R^{kL×in}`` (Kaiming) and ``B_S ∈ R^{out×kL}`` (zero); per layer, trainable
    scales ``E ∈ R^{r-k+kL}``::

        y = W x + b + [B, B_S] · diag(E) · [A; A_S] · dropout(x)

    Scaling. There is no fixed ``s``: ``E`` is the scale, and it trains. It starts at
    ``alpha/2/(r-k)`` on the private ranks and ``alpha/2/(kL)`` on the shared ones: scale times
    ranks is ``alpha/2`` for each part, ``alpha`` in all, as LoRA's ``alpha/r`` times ``r``; so
    under AdamW (whose steps do not scale with the gradient) the first steps change a layer's
    output about as much as LoRA's do, whatever ``L`` is. Unlike LoRA's ``s``, ``E`` trains at
    the swept learning rate: an AdamW step moves each entry by about ``lr`` (entries start near
    ``alpha/r``), so at large learning rates the scales drift too, which the sweep measures.

    ``B = B_S = 0``: the model starts as the base model. Trainable parameters of a type:
    ``L·r·(in+out)`` (LoRA's) plus ``L·(r-k+kL)`` scales. The update is linear, so layers merge;
    the gradients of all ``L`` layers accumulate into ``A_S``, ``B_S``. The study uses ``k = 1``.

    Reference: ``rasa.py`` of the study's code, matched (ranks, shared pool, ``E``'s init, no
    other scale).
    """

    key = "rasa"
    axis = "rank"
    study = {"options": {"k": 1, "a_init": "gaussian"}}
    summary = "rank sharing: k ranks per layer pooled across the layers of a module type (k=1)"
    layer = RasaLayer
    Options = RasaOptions
    peft_flags = None  # per-type ranks r-k+kL and trained scales: no plain peft LoRA config

    def __init__(self, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0, **options: Any):
        super().__init__(rank, alpha, dropout, **options)
        if self.options.k >= rank:
            raise VariantError(
                f"rasa k must be below the rank (0 < k < r), got k={self.options.k} with rank "
                f"{rank}: each layer keeps r - k private ranks"
            )
        self._types: dict[str, list[str]] = {}
        self._shared: dict[str, tuple[nn.Parameter, nn.Parameter]] = {}

    def plan_layers(self, targets: dict[str, nn.Linear]) -> None:
        self._types = module_types(targets, self.key)

    def build_layer(self, name: str, base: nn.Linear) -> AdapterLayer:
        kind = module_type(name)
        if name not in self._types.get(kind, ()):
            raise VariantError(
                "rasa sizes the shared ranks by the number of layers of each module type: wrap "
                "models with lorasweep.apply_variant (it plans the layers first)"
            )
        if kind not in self._shared:
            rows = self.options.k * len(self._types[kind])
            self._shared[kind] = new_factors(base, rows, self.options)
        layer = RasaLayer(base, self, *self._shared[kind])
        layer.reset_adapter()
        self.layers[name] = layer
        return layer
