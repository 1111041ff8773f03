"""LoRA-One: LoRA initialised on one step of full fine-tuning, the top-r SVD of -G."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import ClassVar

import torch
from torch import nn

from ._gradients import GradientInitLayer, SvdGradientOptions, gradient_components
from .base import Variant, register

__all__ = ["LoraOne"]


@dataclasses.dataclass
class LoraOneOptions(SvdGradientOptions):
    key: ClassVar[str] = "lora-one"
    #: The init's size: ``s·B0 A0 = -(s / (gamma σ₁)) G_r``.
    gamma: float = 128.0


@register
class LoraOne(Variant):
    """LoRA-One (Zhang et al., 2025): start the adapter on one full fine-tuning step.

    ``G`` is the mean gradient of the loss w.r.t. ``W`` over the training batches ``prepare`` is
    given (as LoRA-GA; a trial's ``train.estimation_batches``, study: 64). With
    ``U S Vᵀ = svd(-G)`` and ``σ₁ = S[0]``: ``B = U_r sqrt(S_r) / sqrt(σ₁) / sqrt(gamma)``,
    ``A = sqrt(S_r) V_rᵀ / sqrt(σ₁) / sqrt(gamma)`` (gamma 128), so ``B A = -G_r / (gamma σ₁)``:
    the initial update is a normalised gradient-descent step restricted to ``G``'s top-``r``
    subspace. The frozen weight becomes the residual ``W - s·B0 A0`` (``s = alpha / r``), so the
    model starts as the base model; exported to peft as rank ``2r``, ``[B | B0] [A ; -A0]``.
    The SVD is randomised with ``niter`` subspace iterations (``0``: exact).

    Reference: ``lora_one.py`` of the study's code: the same init formula, but its estimation
    loop never calls ``backward()``, so no gradient is stored and its layers keep the plain
    LoRA init; lorasweep computes the gradient, as the paper.
    """

    key = "lora-one"
    axis = "initialization"
    study = {"options": {"gamma": 128.0}}
    summary = "LoRA on the top-r SVD of the negative estimated gradient; residual frozen"
    layer = GradientInitLayer
    quantized_base = "after-prepare"
    Options = LoraOneOptions

    def prepare(self, model: nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> dict:
        parts, facts = gradient_components(self, model, batches, self.rank, negate=True)
        for layer, u, s, v in parts:
            root = torch.sqrt(s / (s[0] * self.options.gamma))
            layer.start_from(u * root, root[:, None] * v.t())
        return facts
