"""PiSSA: LoRA initialised on the principal singular components of the weight."""

from __future__ import annotations

import dataclasses

import torch

from ._svd import check_niter, principal_components, start_from_components
from .base import AdapterLayer, Variant, register

__all__ = ["Pissa", "PissaLayer"]


@dataclasses.dataclass
class PissaOptions:
    #: Subspace iterations of the randomised SVD; 0 computes the exact SVD.
    niter: int = 64

    def validate(self) -> None:
        check_niter("pissa", self.niter)


class PissaLayer(AdapterLayer):
    @torch.no_grad()
    def reset_adapter(self) -> None:
        start_from_components(self, *principal_components(self.base.weight, self.rank,
                                                          self.options.niter))


@register
class Pissa(Variant):
    """PiSSA (Meng et al., 2024): adapt the principal subspace, freeze the residual.

    With the top-``r`` SVD ``W ≈ U_r S_r V_rᵀ``: ``B = U_r sqrt(S_r / s)``,
    ``A = sqrt(S_r / s) V_rᵀ``, so ``s · B A = U_r S_r V_rᵀ``; the frozen weight becomes the
    residual ``W - s · B A`` and the model starts as the base model. The SVD is randomised with
    ``niter`` subspace iterations (study: 64; ``niter=0`` is exact, as peft's ``"pissa"``).
    Exports to peft as a rank-``2r`` LoRA of the untouched base weight: ``[B | B0] [A ; -A0]``.

    Reference: ``pissa.py`` of the study's code, matched (factors, residual, fast SVD).
    """

    key = "pissa"
    axis = "initialization"
    study = {"options": {"niter": 64}}
    summary = "LoRA on the top-r singular components of W; residual frozen"
    layer = PissaLayer
    quantized_base = "residual"
    Options = PissaOptions
