"""LoRA-Pro: LoRA gradients adjusted so that the update best matches the full gradient."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from .base import AdapterLayer, AInitOptions, Variant, VariantError, register

__all__ = ["LoraPro", "adjusted_gradients"]


@dataclasses.dataclass
class LoraProOptions(AInitOptions):
    #: Added to the eigenvalues of BᵀB and AAᵀ before inverting them (and the floor of the
    #: Sylvester denominators): B = 0 at the start makes BᵀB singular. The method's code: 1e-8.
    damping: float = 1e-8

    def validate(self) -> None:
        super().validate()
        if not self.damping >= 0:
            raise VariantError(f"lora-pro damping must be >= 0, got {self.damping}")


@torch.no_grad()
def adjusted_gradients(
    a: Sequence[torch.Tensor],
    b: Sequence[torch.Tensor],
    grad_a: Sequence[torch.Tensor],
    grad_b: Sequence[torch.Tensor],
    scales: Sequence[float],
    damping: float = 1e-8,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """LoRA-Pro's ``(g̃A, g̃B)`` for layers of one rank ``r`` (shapes may differ otherwise).

    The ``r × r`` algebra is batched over the layers and done in float64: with the eigen-
    decompositions ``BᵀB = P Λ Pᵀ`` and ``AAᵀ = Q M Qᵀ`` (symmetric, positive semidefinite),
    ``(BᵀB)⁻¹ ≈ P (Λ + δ)⁻¹ Pᵀ``, ``(AAᵀ)⁻¹ ≈ Q (M + δ)⁻¹ Qᵀ`` and the Sylvester equation
    ``BᵀB X + X AAᵀ = C`` is solved exactly by ``X = P [(Pᵀ C Q)_ij / (λ_i + μ_j)] Qᵀ``
    (denominators floored at ``δ``; 0 where both are 0).
    """
    if not a:
        return []
    f64 = torch.float64
    device = a[0].device
    btb = torch.stack([(bi.t() @ bi).to(device, f64) for bi in b])
    aat = torch.stack([(ai @ ai.t()).to(device, f64) for ai in a])
    ga_at = torch.stack([(gi @ ai.t()).to(device, f64) for gi, ai in zip(grad_a, a, strict=True)])
    bt_gb = torch.stack([(bi.t() @ gi).to(device, f64) for bi, gi in zip(b, grad_b, strict=True)])
    inv_s2 = torch.tensor([1.0 / s**2 for s in scales], dtype=f64, device=device)[:, None, None]

    lam, p = torch.linalg.eigh(btb)
    mu, q = torch.linalg.eigh(aat)
    lam, mu = lam.clamp_min(0), mu.clamp_min(0)
    b_inv = (p / (lam + damping)[:, None, :]) @ p.mT
    a_inv = (q / (mu + damping)[:, None, :]) @ q.mT

    c = -inv_s2 * (b_inv @ ga_at)
    denom = (lam[:, :, None] + mu[:, None, :]).clamp_min(damping)
    rotated = p.mT @ c @ q
    y = torch.where(denom > 0, rotated / torch.where(denom > 0, denom, 1.0), 0.0)
    x = p @ y @ q.mT
    # g̃B = s⁻² (gB - B (BᵀB)⁻¹ Bᵀ gB) (AAᵀ)⁻¹ - B X, never forming the out × out projector.
    proj = b_inv @ bt_gb

    out = []
    for i, (ai, bi, gai, gbi) in enumerate(zip(a, b, grad_a, grad_b, strict=True)):
        dt, dev = ai.dtype, ai.device
        new_a = (inv_s2[i] * b_inv[i]).to(dev, dt) @ gai + x[i].to(dev, dt) @ ai
        residual = gbi - bi @ proj[i].to(dev, dt)
        new_b = residual @ (inv_s2[i] * a_inv[i]).to(dev, dt) - bi @ x[i].to(dev, dt)
        out.append((new_a, new_b))
    return out


@register
class LoraPro(Variant):
    """LoRA-Pro (Wang et al., 2024): adjust LoRA's gradients towards the full fine-tuning one.

    A LoRA step moves the weight by ``s (B ΔA + ΔB A)``: an "equivalent gradient". With the
    raw gradients ``gA = s BᵀG`` and ``gB = s G Aᵀ`` (``G`` the full gradient), the adjusted

        g̃A = s⁻² (BᵀB)⁻¹ gA + X A
        g̃B = s⁻² (I - B (BᵀB)⁻¹ Bᵀ) gB (AAᵀ)⁻¹ - B X

    make the equivalent gradient ``s (B g̃A + g̃B A) = P_B G + (I - P_B) G P_A``, the closest
    one to ``G`` (``P_B``, ``P_A`` the projectors on the column space of ``B`` and the row space
    of ``A``). ``X`` (``r × r``, free in that product) solves the Sylvester equation
    ``(BᵀB) X + X (AAᵀ) = -s⁻² (BᵀB)⁻¹ gA Aᵀ`` (the choice closest to full fine-tuning's step).
    ``s = alpha / r`` is each layer's real scale (the reference code hard-codes ``s = 2``).

    The loop calls ``before_optimizer_step`` after backward and clipping: the adapter gradients
    are rewritten there (see :func:`adjusted_gradients`: batched eigendecompositions, float64
    ``r × r`` algebra), then AdamW steps as usual on ``A`` and ``B`` (the method's "efficient"
    mode; its "full" mode keeps Adam moments of the ``out × in`` equivalent gradient). ``B = 0``
    at the start makes ``BᵀB`` singular: the inverses are damped, ``(BᵀB + δI)⁻¹`` with
    ``δ = damping = 1e-8`` as in the method's code; there ``gA = 0`` so ``g̃A = 0`` and ``X = 0``,
    and only ``B`` moves in the first step.

    The weights are plain LoRA weights with the usual scale: exported to peft as a LoRA.

    Reference: ``lorapro_optim.py`` of the study's code: the same adjusted gradients and
    Sylvester solve; its optimizer's ``lora_scaler`` defaults to 2 whatever the layers' scale
    (equal to ``alpha / r`` only at the study's r 8, alpha 16); lorasweep uses each layer's.
    """

    key = "lora-pro"
    axis = "optimization"
    study = {"options": {"a_init": "gaussian"}}
    summary = "LoRA with gradients adjusted (Sylvester-optimal) to match the full gradient"
    layer = AdapterLayer
    Options = LoraProOptions

    @torch.no_grad()
    def before_optimizer_step(self) -> None:
        layers = [layer for layer in self.layers.values()
                  if layer.lora_A.grad is not None and layer.lora_B.grad is not None]
        if not layers:
            return
        new = adjusted_gradients(
            [layer.lora_A for layer in layers],
            [layer.lora_B for layer in layers],
            [layer.lora_A.grad for layer in layers],
            [layer.lora_B.grad for layer in layers],
            [layer.scaling for layer in layers],
            self.options.damping,
        )
        for layer, (grad_a, grad_b) in zip(layers, new, strict=True):
            layer.lora_A.grad.copy_(grad_a)
            layer.lora_B.grad.copy_(grad_b)
