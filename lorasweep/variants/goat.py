"""GOAT: LoRA experts seeded from slices of the weight's SVD, with GOAT's scale."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from ._svd import principal_components
from .base import Variant, VariantError, register
from .loramoe import LoraMoe, LoraMoeLayer, MoeOptions

__all__ = ["Goat", "GoatLayer"]


@dataclasses.dataclass
class GoatOptions(MoeOptions):
    rho: float = 10.0  # the experts' initial update is the SVD slice / rho
    eta: float = 1.0  # scale s = sqrt(3 · eta · in / re)
    #: Also subtract, in the forward, the routed part of the frozen initial experts, so that the
    #: model starts exactly as the base model (not the paper's method; see Goat's docstring).
    exact_start: bool = False

    def validate(self) -> None:
        super().validate()
        for name in ("rho", "eta"):
            value = getattr(self, name)
            if not value > 0 or not math.isfinite(value):
                raise VariantError(f"goat {name} must be positive and finite, got {value}")


class GoatLayer(LoraMoeLayer):
    def __init__(self, base: nn.Linear, variant: Variant):
        super().__init__(base, variant)
        full = min(self.in_features, self.out_features)
        if self.num_experts * self.expert_rank > full:
            raise VariantError(
                f"goat needs num_experts x ceil(rank / num_experts) = "
                f"{self.num_experts} x {self.expert_rank} <= min(in, out) = {full} of a "
                f"{self.in_features}->{self.out_features} layer: lower the rank or num_experts"
            )

    def rank_per_expert(self) -> int:
        """GOAT: ``re = ceil(r / E)`` (the reference's ``goat.py`` rounds up)."""
        return math.ceil(self.rank / self.num_experts)

    @property
    def scaling(self) -> float:
        return math.sqrt(3 * self.options.eta * self.in_features / self.expert_rank)

    def slices(self) -> list[range]:
        """The singular components each expert starts from: the spectrum (``k = min(out, in)``
        components) cut into ``E`` segments of ``k // E``; expert ``e`` takes the first ``re``
        components of segment ``e``."""
        segment = min(self.in_features, self.out_features) // self.num_experts
        return [range(e * segment, e * segment + self.expert_rank) for e in range(self.num_experts)]

    @torch.no_grad()
    def reset_adapter(self) -> None:
        self.reset_router()
        u, s, v = principal_components(self.base.weight, min(self.base.weight.shape), niter=0)
        index = torch.tensor([i for piece in self.slices() for i in piece], device=u.device)
        root = torch.sqrt(s[index] / (self.scaling * self.options.rho))
        self.lora_B.copy_((u[:, index] * root).to(self.lora_B.dtype))
        self.lora_A.copy_((root[:, None] * v[:, index].t()).to(self.lora_A.dtype))
        self.keep_initial_update()  # W <- W - s · Σ_e B_e A_e = W - (1/rho) Σ_e U_e S_e V_eᵀ

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """GOAT: softmax over all ``E`` logits, keep the top-k, renormalise them to sum to 1."""
        probs = torch.softmax(nn.functional.linear(x, self.lora_router).float(), dim=-1)
        top, selected = probs.topk(self.top_k, dim=-1)
        gates = torch.zeros_like(probs).scatter(-1, selected, top / top.sum(-1, keepdim=True))
        return gates, probs, selected

    def adapter_output(self, x: torch.Tensor) -> torch.Tensor:
        if not self.options.exact_start:
            return super().adapter_output(x)
        x, gates = self._routed(x)
        x = self.dropout(x)
        trained = self._expert_sum(x, gates, self.lora_A, self.lora_B)
        initial = self._expert_sum(x, 1 - gates, self.lora_A0, self.lora_B0)
        return self.scaling * (trained + initial)


@register
class Goat(LoraMoe):
    """GOAT (Fan et al., 2025): SVD-structured LoRA experts with a theoretical scale.

    ``E`` experts of rank ``re = ceil(r / E)`` (study: ``E = 8``, top-2), stored and computed
    batched as in ``loramoe``. Init, from the exact SVD ``W = U S Vᵀ`` (``k = min(out, in)``
    components, descending): the spectrum is cut into ``E`` segments of ``k // E`` components and
    expert ``e`` takes the first ``re`` of segment ``e`` (indices ``e·(k//E) ... + re``; needs
    ``E·re <= k``): ``B_e = U_e sqrt(S_e / (s·rho))``, ``A_e = sqrt(S_e / (s·rho)) V_eᵀ``, so
    ``s · B_e A_e = U_e S_e V_eᵀ / rho`` (``rho = 10``). Scale ``s = sqrt(3 · eta · in / re)``
    (GOAT's, ``eta = 1``), not ``alpha / r``. Router ``G ∈ R^{E×in}`` (no bias, uniform
    ``[0, 1)`` as the reference; ``router_init="kaiming"``: ``nn.Linear``'s): ``p = softmax(G x)`` over all experts, keep the top-``k``, renormalise:
    ``g_e = p_e / Σ_{topk} p``. Forward ``y = W_res x + b + s · Σ_{e ∈ topk(x)} g_e B_e A_e x``.
    Balance: ``extra_loss = aux_loss_weight · mean over layers of E · Σ_i f_i P_i`` with
    ``aux_loss_weight = 1e-3`` (``f``, ``P`` as in ``loramoe``; ``P`` from the full softmax).

    What is subtracted (as the paper and both reference codes): the unrouted sum of all initial
    experts, ``W_res = W - s · Σ_e B0_e A0_e = W - (1/rho) Σ_e U_e S_e V_eᵀ``. The routed
    initial contribution ``s · Σ_e g_e(x) B0_e A0_e x`` depends on the input, so no fixed
    residual cancels it, and GOAT does NOT start exactly as the base model: at init
    ``y = W x + b - s · Σ_e (1 - g_e(x)) B0_e A0_e x``: each seeded singular component is
    missing with weight ``(1 - g_e(x)) / rho ∈ [0, 1/rho]`` (the router re-adds the segments it
    picks: the method's "adaptive prior"). ``exact_start=True`` (off by default; not the paper's method)
    adds the frozen ``s · Σ_e (1 - g_e(x)) B0_e A0_e x`` in the forward, i.e.
    ``y = W x + b + s · Σ_e g_e(x) (B_e A_e - B0_e A0_e) x``: exactly the base model at init, at
    twice the adapter's forward cost, and the router then learns only from the balance loss until
    the experts move. Routing depends on the input: no merge, no peft export.

    Reference (``common/lora_modules/goat.py``): followed for the expert rank (rounded up), the
    SVD slices (``init_type="goat"``), ``rho = 10``, ``eta = 1``, the subtracted unrouted sum
    (``init_cof = 1``), the router (``torch.rand``, full softmax, top-k, renormalised) and the
    balance term ``E · Σ f_i P_i``. Differences: the reference's scale is GOAT's only when the
    experiment passes ``scaling_type="goat"`` (its default is LoRA's ``ceil(alpha/re)/re``);
    lorasweep always uses GOAT's, as the study describes it. The reference reads ``eta`` before
    setting it (a bug); lorasweep sets it first.
    """

    key = "goat"
    axis = "moe"
    summary = "routed experts from SVD slices of W, scale sqrt(3·in/re), balance loss (8, top-2)"
    layer = GoatLayer
    quantized_base = "residual"
    Options = GoatOptions
    study = {"options": {"num_experts": 8, "top_k": 2}}
