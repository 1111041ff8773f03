"""OLoRA: LoRA initialised from the QR decomposition of the weight."""

from __future__ import annotations

import torch

from .base import AdapterLayer, Variant, VariantError, register

__all__ = ["Olora", "OloraLayer"]


class OloraLayer(AdapterLayer):
    @torch.no_grad()
    def reset_adapter(self) -> None:
        full = min(self.out_features, self.in_features)
        if self.rank > full:
            raise VariantError(
                f"olora rank {self.rank} exceeds min(out, in) = {full} of a "
                f"{self.in_features}->{self.out_features} layer"
            )
        q, r = torch.linalg.qr(self.base.weight.detach().float())  # reduced: q out×k, r k×in
        self.lora_B.copy_(q[:, : self.rank].to(self.lora_B.dtype))
        self.lora_A.copy_(r[: self.rank].to(self.lora_A.dtype))
        self.keep_initial_update()


@register
class Olora(Variant):
    """OLoRA (Büyükakyüz, 2024): orthonormal B from the weight's QR decomposition.

    With the reduced QR ``W = Q R`` (``Q`` ``out × k`` orthonormal columns, ``R`` ``k × in``
    upper-trapezoidal, ``k = min(out, in)``; fp32, ``torch.linalg.qr``'s sign convention):
    ``B = Q[:, :r]``, ``A = R[:r]``. The factors are not rescaled (as peft's
    ``init_lora_weights="olora"``), so the initial update is ``s · Q_r R_r`` with the usual
    ``s = alpha / r``; the frozen weight becomes the residual ``W - s · Q_r R_r`` and the model
    starts as the base model. Exports to peft as a rank-``2r`` LoRA of the untouched weight
    ``[B | B0] [A ; -A0]``.

    Reference: ``olora.py`` of the study's code, matched (``Q_r``, ``R_r``, residual ``W - s·Q_r R_r``).
    """

    key = "olora"
    axis = "initialization"
    summary = "LoRA with B = Q[:, :r], A = R[:r] from the QR of W; residual frozen"
    layer = OloraLayer
    quantized_base = "residual"
