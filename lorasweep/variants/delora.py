"""DeLoRA: a normalised low-rank update whose strength is one bounded, trainable scalar."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from .base import AdapterLayer, Variant, VariantError, register

__all__ = ["Delora", "DeloraLayer"]

#: Added to ``‖a_i‖ ‖b_i‖`` so that a vanishing rank-1 component cannot divide by zero.
EPS = 1e-8


@dataclasses.dataclass
class DeloraOptions:
    #: Initial value of the trainable per-layer strength ``lambda``.
    lambda_: float = 8.0

    def validate(self) -> None:
        if not math.isfinite(self.lambda_) or self.lambda_ == 0:
            raise VariantError(
                f"delora lambda_ must be a finite non-zero number, got {self.lambda_}: with "
                "lambda = 0 the update is zero and its A and B never learn"
            )


class DeloraLayer(AdapterLayer):
    def __init__(self, base: nn.Linear, variant: Variant):
        super().__init__(base, variant)
        factory = {"device": self.lora_A.device, "dtype": self.lora_A.dtype}
        self.delora_lambda = nn.Parameter(torch.empty((), **factory))
        # ``‖W‖_col``: the norm of each input column of the original weight, frozen.
        self.register_buffer("delora_wnorm", torch.empty(self.in_features, **factory))

    @torch.no_grad()
    def reset_adapter(self) -> None:
        self.delora_wnorm.copy_(self.base.weight.float().norm(dim=0))  # before the residual
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.lora_B, a=math.sqrt(5))
        self.delora_lambda.fill_(self.options.lambda_)
        self.register_buffer("delora_lambda0", self.delora_lambda.detach().clone())
        self.keep_initial_update()  # records B0, A0; W <- W - dW(lambda0, A0, B0)

    def _component_scale(self, lam, a, b) -> torch.Tensor:
        """``lambda / (r ‖a_i‖ ‖b_i‖)`` per rank-1 component ``i``."""
        return lam / (self.rank * (a.norm(dim=1) * b.norm(dim=0) + EPS))

    def _delta(self, lam, a, b) -> torch.Tensor:
        return ((b * self._component_scale(lam, a, b)) @ a) * self.delora_wnorm

    def delta_weight(self) -> torch.Tensor:
        return self._delta(self.delora_lambda, self.lora_A, self.lora_B)

    def initial_update(self) -> torch.Tensor:
        return self._delta(self.delora_lambda0, self.lora_A0, self.lora_B0)

    def adapter_output(self, x: torch.Tensor) -> torch.Tensor:
        """``B diag(c) A (‖W‖_col ⊙ x)``: the column norms scale the input, ``dW`` is never
        formed."""
        x = self.dropout(x)
        if x.dtype != self.lora_A.dtype and not torch.is_autocast_enabled(x.device.type):
            x = x.to(self.lora_A.dtype)
        scale = self._component_scale(self.delora_lambda, self.lora_A, self.lora_B)
        h = (x * self.delora_wnorm) @ self.lora_A.t()
        return (h * scale) @ self.lora_B.t()


@register
class Delora(Variant):
    """DeLoRA (Bini et al., 2025): decouple the update's direction from its strength.

    ``dW = [B · diag(lambda / (r ‖a_i‖ ‖b_i‖)) · A] ⊙ ‖W‖_col``, with ``a_i`` the rows of
    ``A ∈ R^{r×in}``, ``b_i`` the columns of ``B ∈ R^{out×r}`` (both Kaiming-uniform),
    ``‖W‖_col ∈ R^{in}`` the norms of the original weight's input columns (frozen, broadcast
    over rows) and ``lambda`` one trainable scalar per layer (study: initialised to 8). Each
    normalised rank-1 term has unit Frobenius norm, so ``‖dW‖_F <= |lambda| · max_j ‖W_:,j‖``
    whatever ``A`` and ``B`` become: the learning rate moves the angle, ``lambda`` the strength.
    ``alpha`` is not used. An ``EPS = 1e-8`` is added to ``‖a_i‖ ‖b_i‖``.

    The initial update ``dW_0 = dW(lambda_0, A_0, B_0)`` is not zero: ``A_0``, ``B_0`` and
    ``lambda_0`` are kept as buffers and the frozen weight becomes ``W - dW_0``, so the model
    starts as the base model (``dW_0`` is recomputed from them, never stored as ``out × in``).
    No peft LoRA equivalent.

    Reference: ``delora.py`` of the study's code: the same update and subtracted ``dW_0``.
    Differences: ``A`` and ``B`` are both Kaiming as the paper (the reference's shared init
    gives ``B = 0`` and divides by ``‖b_i‖ = 0``); ``‖W‖_col`` is the original weight's (the
    reference recomputes it from the residual weight at every forward).
    """

    key = "delora"
    axis = "optimization"
    study = {"options": {"lambda_": 8.0}}
    summary = "normalised rank-1 terms times a trainable strength lambda (8) and ‖W‖_col"
    layer = DeloraLayer
    quantized_base = "residual"
    Options = DeloraOptions
    peft_flags = None
