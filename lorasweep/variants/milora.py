"""MiLoRA: LoRA initialised on the minor singular components of the weight."""

from __future__ import annotations

import torch

from ._svd import principal_components, start_from_components
from .base import AdapterLayer, Variant, VariantError, register

__all__ = ["Milora", "MiloraLayer", "minor_components"]


def minor_components(weight: torch.Tensor, rank: int):
    """Bottom-``rank`` singular triplets ``U_r, S_r, V_r`` of ``weight`` (``out × in``), in fp32.

    A randomised SVD finds the dominant subspace only, so this is the exact SVD (``principal_components``
    with ``niter=0``, asked for every component), of which the last ``rank`` are kept.
    """
    full = min(weight.shape)
    if rank > full:
        raise VariantError(
            f"milora rank {rank} exceeds min(out, in) = {full} of a {tuple(weight.shape)} layer"
        )
    u, s, v = principal_components(weight, full, niter=0)
    return u[:, -rank:], s[-rank:], v[:, -rank:]


class MiloraLayer(AdapterLayer):
    @torch.no_grad()
    def reset_adapter(self) -> None:
        start_from_components(self, *minor_components(self.base.weight, self.rank))


@register
class Milora(Variant):
    """MiLoRA (Wang et al., 2024): adapt the minor singular subspace, freeze the rest.

    As PiSSA with the bottom ``r`` singular components: with the exact SVD
    ``W = U S Vᵀ`` (singular values descending) and ``U_r, S_r, V_r`` its last ``r`` triplets,
    ``B = U_r sqrt(S_r / s)``, ``A = sqrt(S_r / s) V_rᵀ``, so ``s · B A = U_r S_r V_rᵀ`` and the
    frozen weight becomes the residual ``W - s · B A`` (the principal part): the model starts as
    the base model. Exports to peft as a rank-``2r`` LoRA of the untouched weight
    ``[B | B0] [A ; -A0]``.

    Reference: ``milora.py`` of the study's code, matched with its exact SVD; its fast-SVD
    path returns the top components instead (MiLoRA would become PiSSA), never used here.
    """

    key = "milora"
    axis = "initialization"
    summary = "LoRA on the bottom-r (minor) singular components of W; residual frozen"
    layer = MiloraLayer
    quantized_base = "residual"
