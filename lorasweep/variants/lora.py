"""LoRA: the baseline every variant is compared with."""

from __future__ import annotations

from .base import AdapterLayer, AInitOptions, Variant, register

__all__ = ["Lora"]


@register
class Lora(Variant):
    """Low-rank adaptation (Hu et al., 2021).

    ``W' = W + s · B A`` with ``A ∈ R^{r×in}`` Kaiming-uniform, ``B ∈ R^{out×r}`` zero and
    ``s = alpha / r``; the model starts exactly as the base model.

    Reference: ``common/lora_modules/lora.py`` of the study's code: same scale and ``B = 0``;
    its ``A`` is ``N(0, 1/in)`` (Kaiming-uniform here, as peft: a ``sqrt(3)`` smaller spread,
    kept for peft parity); ``a_init="gaussian"`` draws the reference's (docs/fidelity.md).
    """

    key = "lora"
    axis = "baseline"
    study = {"options": {"a_init": "gaussian"}}
    Options = AInitOptions
    summary = "low-rank update s·BA, A Kaiming, B zero, s = alpha/r"
    layer = AdapterLayer
