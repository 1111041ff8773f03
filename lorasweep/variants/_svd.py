"""Singular components of a weight, shared by the SVD-seeded variants (PiSSA, MiLoRA, GOAT,
LoRA-GA, LoRA-One, EVA's incremental PCA)."""

from __future__ import annotations

import torch

from .base import VariantError

__all__ = ["check_niter", "principal_components", "start_from_components"]


def principal_components(weight: torch.Tensor, rank: int, niter: int):
    """Top-``rank`` singular triplets ``U_r, S_r, V_r`` of ``weight`` (``out × in``), in fp32.

    ``niter = 0`` is the exact SVD; otherwise a randomised subspace iteration (Halko et al., as
    ``torch.svd_lowrank``) with ``rank + 8`` probes and ``niter`` iterations, seeded from the
    weight's own values, so that the same weight always gives the same adapter whatever the
    global RNG state (reloading relies on it).
    """
    w = weight.detach().float()
    if niter == 0:
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        return u[:, :rank], s[:rank], vh[:rank].t()
    # A private generator: torch.manual_seed would also reseed (and not restore) every CUDA
    # generator, giving all trials of a seed sweep the same CUDA random stream after init.
    generator = torch.Generator(device=w.device)
    generator.manual_seed(int(w.abs().sum().item() * 1e3) % (2**31))
    probes = torch.randn(w.shape[1], min(rank + 8, *w.shape), generator=generator, device=w.device)
    basis = torch.linalg.qr(w @ probes).Q
    for _ in range(niter):
        basis = torch.linalg.qr(w @ torch.linalg.qr(w.t() @ basis).Q).Q
    u, s, vh = torch.linalg.svd(basis.t() @ w, full_matrices=False)
    return (basis @ u)[:, :rank], s[:rank], vh[:rank].t()


@torch.no_grad()
def start_from_components(layer, u: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> None:
    """Make ``U S Vᵀ`` the layer's initial update and freeze the residual: with the layer's
    scale ``s``, ``B = U sqrt(S / s)``, ``A = sqrt(S / s) Vᵀ`` (so ``s · B A = U S Vᵀ``), then
    ``W <- W - s · B A`` (:meth:`AdapterLayer.keep_initial_update`)."""
    root = torch.sqrt(s / layer.scaling)
    layer.lora_B.copy_((u * root).to(layer.lora_B.dtype))
    layer.lora_A.copy_((root[:, None] * v.t()).to(layer.lora_A.dtype))
    layer.keep_initial_update()


def check_niter(key: str, niter: int) -> None:
    if niter < 0:
        raise VariantError(f"{key} niter must be >= 0 (0 = exact SVD), got {niter}")
