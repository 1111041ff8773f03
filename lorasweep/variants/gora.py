"""GoRA: gradient-driven rank allocation and initialisation."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import torch
from torch import nn

from ._gradients import GradientInitLayer, GradientOptions, check_positive, estimate_gradients
from .base import AInitOptions, Variant, VariantError, init_lora_A, register

__all__ = ["Gora", "GoraLayer", "allocate_ranks"]


@dataclasses.dataclass
class GoraOptions(AInitOptions, GradientOptions):
    #: The init's size: ``s·B0 A0 = -(gamma / r) G P_A``. variants.md gives none for GoRA: 0.02 is
    #: the reference implementation's default (``--gora-stable-gemma``).
    gamma: float = 0.02
    #: Bounds of a layer's rank (a rank never exceeds min(in, out) either).
    r_min: int = 4
    r_max: int = 32

    def validate(self) -> None:
        super().validate()
        self.check("gora")
        check_positive("gora", "gamma", self.gamma)
        if not 1 <= self.r_min <= self.r_max:
            raise VariantError(
                f"gora needs 1 <= r_min <= r_max, got r_min={self.r_min}, r_max={self.r_max}"
            )


def allocate_ranks(
    importance: dict[str, float],
    features: dict[str, int],
    rank: int,
    r_min: int,
    r_max: int,
    caps: dict[str, int],
) -> dict[str, int]:
    """``r_i = round(Σ f · r · I_i / Σ I) // f_i`` clipped to ``[r_min, min(r_max, cap_i)]``,
    with ``f_i = in_i + out_i``: layer ``i`` gets its importance's share of the budget
    ``Σ f · r`` (LoRA's parameter count at rank ``r``), in units of its own cost per rank."""
    total = sum(importance.values())
    budget = rank * sum(features.values())
    return {
        name: min(max(round(budget * imp / total) // features[name], r_min), r_max, caps[name])
        for name, imp in importance.items()
    }


class GoraLayer(GradientInitLayer):
    """Every layer keeps the scale of the configured rank, ``s = alpha / r``, whatever its own
    rank ``r_i`` (GoRA's default; its ``dynamic_scaling`` variant is not implemented)."""

    def __init__(self, base: nn.Linear, variant: Variant):
        super().__init__(base, variant)
        self.reference_rank = variant.rank

    @property
    def scaling(self) -> float:
        return self.alpha / self.reference_rank


@register
class Gora(Variant):
    """GoRA (He et al., 2025): ranks and initial adapters from the estimated gradient.

    ``G_i`` is the mean gradient of the loss w.r.t. layer ``i``'s weight ``W_i`` over ``n``
    training batches (as LoRA-GA: the batches ``prepare`` is given, a trial's
    ``train.estimation_batches``).

    Ranks: importance ``I_i = ‖W_i ⊙ G_i‖_F``, normalised to sum 1; with ``f_i = in_i + out_i``,
    ``r_i = round(Σ_j f_j · r · I_i) // f_i`` clipped to ``[r_min, r_max]`` (study: 4, 32) and to
    ``min(in_i, out_i)``. Before clipping, the budget ``Σ f · r`` (LoRA's parameter count) is
    kept up to the rounding: ``budget - Σ f < Σ r_i f_i <= budget + #layers / 2`` (the floor
    loses under one rank per layer). The clipping can move it either way: a layer raised to
    ``r_min`` costs more, one cut to ``r_max`` less (the reference code does not repair this).
    ``prepare`` returns the ranks, the importances and the budget (target and used).

    Init: ``A_i`` Kaiming-uniform of rank ``r_i``, ``B_i = -G_i A_iᵀ (A_i A_iᵀ)⁻¹ · gamma / alpha``
    (the minus sign is the method's; the study's reference code, as read, keeps it too).
    Every layer keeps the scale ``s = alpha / r`` of the configured rank, so
    ``s·B_i A_i = -(gamma / r) · G_i P_i`` with ``P_i = A_iᵀ (A_i A_iᵀ)⁻¹ A_i`` the projection on
    ``A_i``'s rows: a gradient-descent step compressed into the adapter's subspace. The frozen
    weight becomes the residual ``W - s·B0 A0``, so the model starts as the base model. The
    layers are re-created with their ranks in ``prepare`` (before the optimizer exists); a saved
    adapter loads its ranks back.
    No peft export: peft would need per-layer ``rank_pattern``/``alpha_pattern``.

    Reference: ``gora.py`` of the study's code: the same ranks and ``B`` (the version read keeps
    the minus sign). Differences: it does not subtract the initial update (``reinit_weight``
    off); lorasweep does. ``A`` is Kaiming-uniform (the reference: ``N(0, 1/in)``, ``a_init="gaussian"``).
    """

    key = "gora"
    axis = "initialization"
    study = {"options": {"r_min": 4, "r_max": 32, "a_init": "gaussian"}}
    summary = "ranks by gradient importance; B from the gradient on a random A; residual frozen"
    layer = GoraLayer
    quantized_base = "after-prepare"
    Options = GoraOptions
    peft_flags = None

    def prepare(self, model: nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> dict:
        o = self.options
        grads, facts = estimate_gradients(model, self.layers, batches, o.grad_device)
        importance = {}
        with torch.no_grad():
            for name, layer in self.layers.items():
                w = layer.base.weight.float() + layer.delta_weight().float()  # the effective W
                importance[name] = float((w * grads[name].to(w.device)).norm())
        total = sum(importance.values())
        if not total > 0 or total == float("inf"):
            raise VariantError(f"gora importances ‖W ⊙ G‖ sum to {total}: cannot allocate ranks")
        features = {n: layer.in_features + layer.out_features for n, layer in self.layers.items()}
        caps = {n: min(layer.in_features, layer.out_features) for n, layer in self.layers.items()}
        ranks = allocate_ranks(importance, features, self.rank, o.r_min, o.r_max, caps)
        with torch.no_grad():
            for name, layer in self.layers.items():
                g = grads.pop(name).to(layer.base.weight.device)
                layer.set_rank(ranks[name])  # Kaiming A of the new rank, B = 0, residual undone
                if o.a_init == "gaussian" and ranks[name]:
                    init_lora_A(layer.lora_A, o)  # the reference code's N(0, 1/in)
                a = layer.lora_A.detach().double()
                b = -(g.double() @ a.t()) @ torch.linalg.pinv(a @ a.t()) * (o.gamma / self.alpha)
                layer.start_from(b, a)
        return {
            **facts,
            "ranks": ranks,
            "importance": {n: round(i / total, 6) for n, i in importance.items()},
            "budget": {
                "target": self.rank * sum(features.values()),
                "used": sum(ranks[n] * features[n] for n in ranks),
            },
            "scaling": self.alpha / self.rank,
        }
