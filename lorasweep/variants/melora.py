"""MELoRA: several mini-LoRAs side by side, a block-diagonal update."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from .base import AdapterLayer, AInitOptions, Variant, VariantError, init_lora_A, register

__all__ = ["MeLora", "MeLoraLayer"]


@dataclasses.dataclass
class MeLoraOptions(AInitOptions):
    #: Number ``n`` of mini-LoRAs (diagonal blocks); each has rank ``r / n``.
    blocks: int = 2

    def validate(self) -> None:
        super().validate()
        if self.blocks < 1:
            raise VariantError(f"melora blocks must be a positive integer, got {self.blocks}")


class MeLoraLayer(AdapterLayer):
    """``lora_A``: ``(n, r/n, in/n)``, ``lora_B``: ``(n, out/n, r/n)``, block ``i`` maps input
    slice ``i`` to output slice ``i``."""

    def __init__(self, base: nn.Linear, variant: Variant):
        super().__init__(base, variant)
        n = self.blocks = self.options.blocks
        factory = {"device": self.lora_A.device, "dtype": self.lora_A.dtype}
        r, i, o = self.rank // n, self.in_features // n, self.out_features // n
        self.lora_A = nn.Parameter(torch.empty(n, r, i, **factory))
        self.lora_B = nn.Parameter(torch.zeros(n, o, r, **factory))

    @torch.no_grad()
    def reset_adapter(self) -> None:
        # Kaiming-uniform per mini-LoRA (fan-in: the block's ``in / n``), or the reference
        # code's N(0, 1/in) with the layer's full ``in``.
        init_lora_A(self.lora_A.view(-1, self.lora_A.shape[-1]), self.options, self.in_features)
        nn.init.zeros_(self.lora_B)

    def delta_weight(self) -> torch.Tensor:
        blocks = self.scaling * torch.bmm(self.lora_B, self.lora_A)  # (n, out/n, in/n)
        return torch.block_diag(*blocks.unbind(0))

    def adapter_output(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(x)
        if x.dtype != self.lora_A.dtype and not torch.is_autocast_enabled(x.device.type):
            x = x.to(self.lora_A.dtype)
        xb = x.unflatten(-1, (self.blocks, -1))  # (..., n, in/n)
        h = torch.einsum("...ni,nri->...nr", xb, self.lora_A)
        y = torch.einsum("...nr,nor->...no", h, self.lora_B)
        return self.scaling * y.flatten(-2)


@register
class MeLora(Variant):
    """MELoRA (Ren et al., 2024): ``n`` mini-LoRAs on a block diagonal.

    The input is cut into ``n`` slices of ``in/n`` features and the output into ``n`` slices of
    ``out/n``; mini-LoRA ``i`` (``A_i ∈ R^{r/n × in/n}`` Kaiming-uniform, ``B_i ∈ R^{out/n × r/n}``
    zero) maps input slice ``i`` to output slice ``i``::

        dW = s · blockdiag(B_1 A_1, ..., B_n A_n),   s = alpha / r

    ``rank`` is the total rank ``r`` (study: ``n = 2``, total rank 16), so the update's rank can
    reach ``r`` while it trains only ``r (in + out) / n`` numbers. ``n`` must divide ``r``,
    ``in`` and ``out``. The forward runs all blocks at once (two batched einsums), never forming
    ``dW``. ``B = 0``: the model starts as the base model. No peft LoRA equivalent.

    Reference: ``melora.py`` of the study's code: the same scale ``alpha / r`` over the total
    rank (its base layer divides by the rank it is built with, the total). Difference: the
    mini ``A_i`` are Kaiming-uniform with their own fan-in ``in/n``; the reference draws
    ``N(0, 1/in)`` with the full ``in`` (``a_init="gaussian"``). At the sweep's ``r = 8`` it warns once: the study ran
    total rank 16.
    """

    key = "melora"
    axis = "rank"
    study = {"rank": 16, "options": {"blocks": 2, "a_init": "gaussian"}}
    summary = "n block-diagonal mini-LoRAs of rank r/n each (n = 2), B zero"
    layer = MeLoraLayer
    Options = MeLoraOptions
    peft_flags = None

    def __init__(self, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0, **options: Any):
        super().__init__(rank, alpha, dropout, **options)
        n = self.options.blocks
        if self.rank % n:
            raise VariantError(
                f"melora rank {self.rank} is not divisible by blocks={n}: the rank is the total "
                f"rank of {n} mini-LoRAs (pass e.g. --rank {n * max(1, self.rank // n)})"
            )

    def build_layer(self, name: str, base: nn.Linear) -> AdapterLayer:
        n = self.options.blocks
        shape = (getattr(base, "in_features", None), getattr(base, "out_features", None))
        if isinstance(base, nn.Linear) and (shape[0] % n or shape[1] % n):
            raise VariantError(
                f"melora blocks={n} must divide the in and out features of every target layer; "
                f"{name!r} is {shape[0]} -> {shape[1]}: choose blocks dividing both, or other "
                "target modules"
            )
        return super().build_layer(name, base)
