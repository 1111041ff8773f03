"""PiSSA: LoRA initialised on the principal singular components of the weight."""

from __future__ import annotations

import dataclasses

import torch

from .base import AdapterLayer, Variant, VariantError, register

__all__ = ["Pissa", "PissaLayer", "principal_components"]


@dataclasses.dataclass
class PissaOptions:
    #: Subspace iterations of the randomised SVD; 0 computes the exact SVD.
    niter: int = 64

    def validate(self) -> None:
        if self.niter < 0:
            raise VariantError(f"pissa niter must be >= 0 (0 = exact SVD), got {self.niter}")


def principal_components(weight: torch.Tensor, rank: int, niter: int):
    """Top-``rank`` singular triplets ``U_r, S_r, V_r`` of ``weight`` (``out × in``), in fp32.

    The randomised SVD is seeded from the weight's own values, so that the same weight always
    gives the same adapter whatever the global RNG state (reloading relies on it).
    """
    w = weight.detach().float()
    if niter == 0:
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        return u[:, :rank], s[:rank], vh[:rank].t()
    # A private generator: torch.manual_seed would also reseed (and not restore) every CUDA
    # generator, giving all trials of a seed sweep the same CUDA random stream after init.
    generator = torch.Generator(device=w.device)
    generator.manual_seed(int(w.abs().sum().item() * 1e3) % (2**31))
    # Randomised subspace iteration (Halko et al., as torch.svd_lowrank) with rank + 8 probes.
    probes = torch.randn(w.shape[1], min(rank + 8, *w.shape), generator=generator, device=w.device)
    basis = torch.linalg.qr(w @ probes).Q
    for _ in range(niter):
        basis = torch.linalg.qr(w @ torch.linalg.qr(w.t() @ basis).Q).Q
    u, s, vh = torch.linalg.svd(basis.t() @ w, full_matrices=False)
    return (basis @ u)[:, :rank], s[:rank], vh[:rank].t()


class PissaLayer(AdapterLayer):
    @torch.no_grad()
    def reset_adapter(self) -> None:
        u, s, v = principal_components(self.base.weight, self.rank, self.options.niter)
        root = torch.sqrt(s / self.scaling)
        self.lora_B.copy_((u * root).to(self.lora_B.dtype))
        self.lora_A.copy_((root[:, None] * v.t()).to(self.lora_A.dtype))
        self.keep_initial_update()


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
    Options = PissaOptions
