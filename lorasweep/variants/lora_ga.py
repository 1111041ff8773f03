"""LoRA-GA: LoRA initialised on the singular vectors of the estimated full-weight gradient."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import ClassVar

import torch
from torch import nn

from ._gradients import GradientInitLayer, SvdGradientOptions, gradient_components
from .base import Variant, register

__all__ = ["LoraGa"]


@dataclasses.dataclass
class LoraGaOptions(SvdGradientOptions):
    key: ClassVar[str] = "lora-ga"
    #: ``gamma`` of the "stable" scale ``out^(1/4) / sqrt(gamma)``.
    gamma: float = 16.0


@register
class LoraGa(Variant):
    """LoRA-GA (Wang et al., 2024): align the first LoRA step with full fine-tuning's.

    ``G`` is the mean gradient of the loss w.r.t. ``W`` over ``n`` training batches
    (the batches ``prepare`` is given: a trial's ``train.estimation_batches``, study: 64).
    With ``U S Vᵀ = svd(G)`` and the "stable" scale ``ζ = out^(1/4) / sqrt(gamma)`` (gamma 16):
    ``B = ζ · U[:, r:2r]``, ``A = ζ · Vᵀ[:r]``. Then ``B Bᵀ G + G Aᵀ A = ζ² G_2r`` (the best
    rank-``2r`` approximation of ``G``): the first gradient step moves ``s·B A`` along ``G_2r``.
    The frozen weight becomes the residual ``W - s·B0 A0`` (``s = alpha / r``), so the model
    starts as the base model; exported to peft as rank ``2r``, ``[B | B0] [A ; -A0]``.
    The SVD is randomised with ``niter`` subspace iterations (``0``: exact).

    Differences from peft 0.21's ``init_lora_weights="lora_ga"`` (same orientation "ArB2r"):
    peft multiplies ``B`` by ``diag(S[r:2r])`` and applies ``ζ`` to ``B`` only; here, as in the
    method's reference code, ``A`` and ``B`` are both scaled by ``ζ`` and carry no ``S``.

    Reference: ``lora_ga.py`` of the study's code: the same SVD (``q = 4r``), orientation and
    stable scale. Differences: lorasweep averages every target layer's exact gradient (the
    reference's hooks never store the first adapted layer's gradient, which keeps the plain
    init); the residual is always subtracted (reference: only with ``lora_ga_reset_weight``).
    """

    key = "lora-ga"
    axis = "initialization"
    study = {"options": {"gamma": 16.0}}
    summary = "LoRA on the top-2r singular vectors of the estimated gradient; residual frozen"
    layer = GradientInitLayer
    quantized_base = "after-prepare"
    Options = LoraGaOptions

    def prepare(self, model: nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> dict:
        r = self.rank
        parts, facts = gradient_components(self, model, batches, 2 * r)
        for layer, u, _, v in parts:
            zeta = u.shape[0] ** 0.25 / math.sqrt(self.options.gamma)  # out^(1/4) / sqrt(gamma)
            layer.start_from(zeta * u[:, r : 2 * r], zeta * v[:, :r].t())
        return facts
