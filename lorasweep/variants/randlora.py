"""RandLoRA: a full-rank update from frozen random bases and small trainable scales."""

from __future__ import annotations

import dataclasses
import math
import zlib
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ._quant import is_quantized
from .base import (
    AdapterLayer,
    Variant,
    VariantError,
    adapter_dtype,
    module_type,
    module_types,
    register,
)

__all__ = ["RandLora", "RandLoraLayer", "ScaledBases", "random_bases"]


@dataclasses.dataclass
class RandLoraOptions:
    #: U: the update's rank is at most min(out, in, U), from ceil(min(out, in, U) / r) bases.
    max_full_rank: int = 1024
    #: Seed of the frozen random bases (with the module type's name; they are never saved).
    seed: int = 0
    #: "bases": s = (alpha / r) / sqrt(n), the paper's; "rank": s = alpha / r, the reference code's.
    scale: str = "bases"

    def validate(self) -> None:
        if self.scale not in ("bases", "rank"):
            raise VariantError(f"randlora scale must be bases or rank, got {self.scale!r}")
        if self.max_full_rank < 1:
            raise VariantError(f"randlora max_full_rank must be >= 1, got {self.max_full_rank}")
        if self.seed < 0:
            raise VariantError(f"randlora seed must be >= 0, got {self.seed}")


def random_bases(seed: int, kind: str, n_bases: int, rank: int, d_min: int, d_max: int):
    """The frozen bases of one module type: ``A`` (``n × r × d_min``) and ``B``
    (``d_max × n·r``), uniform, each divided by its standard deviation. Drawn on the CPU from a
    private generator seeded by ``seed`` and the type's name: the same on every device and after
    every reload, whatever the global RNG state."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(kind.encode()))
    a = torch.rand(n_bases, rank, d_min, generator=generator) * 2 - 1
    b = torch.rand(d_max, n_bases * rank, generator=generator) * 2 - 1
    return a / a.std(), b / b.std()


class _Bases(nn.Module):
    """The frozen bases of one module type, a submodule of every layer of that type (one module
    object: ``model.to()`` moves it once and the layers keep sharing it). Not saved."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor):
        super().__init__()
        self.register_buffer("A", a, persistent=False)
        self.register_buffer("B", b, persistent=False)


class ScaledBases(torch.autograd.Function):
    """``S[i, j, :] = lambda[j, i] · A_i[j, :] ⊙ gamma[i, :]`` for all bases at once. Saves only
    its inputs for backward (autograd would also keep the ``n × r × d_min`` intermediate)."""

    @staticmethod
    def forward(ctx, bases, lam, gamma):
        ctx.save_for_backward(bases, lam, gamma)
        return bases * lam.t()[:, :, None] * gamma[:, None, :]

    @staticmethod
    def backward(ctx, grad):
        bases, lam, gamma = ctx.saved_tensors
        weighted = grad * bases.to(grad.dtype)
        grad_lam = torch.einsum("nrd,nd->rn", weighted, gamma.to(grad.dtype))
        grad_gamma = torch.einsum("nrd,rn->nd", weighted, lam.to(grad.dtype))
        return None, grad_lam.to(lam.dtype), grad_gamma.to(gamma.dtype)


class RandLoraLayer(AdapterLayer):
    """Trainable ``lora_lambda`` (``r × n``) and ``lora_gamma`` (``n × d_min``); the frozen bases
    of the module type in ``randlora_bases``."""

    def __init__(self, base: nn.Linear, variant: Variant, bases: _Bases):
        super().__init__(base, variant)
        factory = {"device": self.lora_A.device, "dtype": self.lora_A.dtype}
        del self.lora_A, self.lora_B  # no trainable low-rank factors: the bases are fixed
        self.n_bases = bases.A.shape[0]
        self.randlora_bases = bases
        self.lora_lambda = nn.Parameter(torch.empty(self.rank, self.n_bases, **factory))
        self.lora_gamma = nn.Parameter(
            torch.empty(self.n_bases, min(self.in_features, self.out_features), **factory)
        )

    @property
    def scaling(self) -> float:
        if self.options.scale == "rank":
            return self.alpha / self.rank
        return self.alpha / self.rank / math.sqrt(self.n_bases)

    @torch.no_grad()
    def reset_adapter(self) -> None:
        nn.init.zeros_(self.lora_lambda)
        nn.init.constant_(self.lora_gamma, 1.0 / max(self.in_features, self.out_features))

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``left`` (``out × n·r``), ``right`` (``n·r × in``): ``dW = s · left @ right``."""
        scaled = ScaledBases.apply(self.randlora_bases.A, self.lora_lambda, self.lora_gamma)
        scaled = scaled.flatten(0, 1)  # n·r × d_min
        if self.in_features <= self.out_features:
            return self.randlora_bases.B, scaled
        return scaled.t(), self.randlora_bases.B.t()

    def delta_weight(self) -> torch.Tensor:
        left, right = self._factors()
        return self.scaling * (left @ right)

    def adapter_output(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(x)
        if x.dtype != self.lora_gamma.dtype and not torch.is_autocast_enabled(x.device.type):
            x = x.to(self.lora_gamma.dtype)
        left, right = self._factors()
        return (x @ (self.scaling * right).t()) @ left.t()

    def _weight_path(self, x: torch.Tensor) -> bool:
        """Whether forming ``W + dW`` (``n·r·in·out`` multiply-adds) is cheaper than passing the
        tokens through the ``n·r`` wide factors (``tokens·n·r·(in+out)``). Never over a quantized
        base: ``W + dW`` would need a dense ``W``; the 4-bit kernel and the factors serve."""
        if (type(self.base) is not nn.Linear or is_quantized(self.base)
                or (self.training and self.dropout_active)):
            return False
        tokens = x.numel() // self.in_features
        fan_in, fan_out = self.in_features, self.out_features
        return tokens * (fan_in + fan_out) > fan_in * fan_out

    @property
    def dropout_active(self) -> bool:
        return not isinstance(self.dropout, nn.Identity)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base(x)
        if self._weight_path(x):
            weight = self.base.weight + self.delta_weight().to(self.base.weight.dtype)
            return F.linear(x, weight, self.base.bias)
        out = self.base(x)
        return out + self.adapter_output(x).to(out.dtype)

    def adapter_state(self) -> dict[str, torch.Tensor]:
        """The trainable scales only: the bases are regenerated from the seed on load."""
        state = super().adapter_state()
        return {k: v for k, v in state.items() if not k.startswith("randlora_bases.")}


@register
class RandLora(Variant):
    """RandLoRA (Albert et al., 2025): a full-rank update as a sum of scaled random bases.

    With ``d_min = min(in, out)``, ``d_max = max(in, out)`` and
    ``n = ceil(min(out, in, U) / r)`` bases (``U = max_full_rank``, study 1024), frozen random
    ``B_i ∈ R^{d_max×r}``, ``A_i ∈ R^{r×d_min}`` (uniform, normalised by their standard
    deviation), shared by the layers of one module type (the name with block indices starred,
    see :func:`~lorasweep.variants.base.module_type`) and generated from ``seed``, and per layer
    trainable ``lambda ∈ R^{r×n}`` (zero) and ``gamma ∈ R^{n×d_min}`` (``1/d_max``)::

        dW = s · Σ_i B_i diag(lambda[:, i]) A_i diag(gamma[i])      (transposed when in > out)
        s  = (alpha / r) / sqrt(n)

    The update has rank up to ``min(n·r, d_min)`` (full rank when ``U >= d_min``) from only
    ``n·(r + d_min)`` trainable numbers per layer. ``lambda = 0``: the model starts as the base
    model. All bases are scaled at once (one broadcast product, no loop over them) into the
    ``n·r``-wide factors ``[B_1 … B_n]`` and ``[lambda_i A_i gamma_i]_i``. The forward takes the
    cheaper of two equal computations: the tokens through the two factors, or (many tokens, no
    dropout) ``F.linear(x, W + dW)``. The update is linear, so layers merge (``delta_weight`` is
    the full ``dW``). The bases are buffers, not saved: reloading regenerates them from the seed.

    Rank and alpha are the sweep's global settings, never overridden here: the study ran
    RandLoRA with base rank ``r = 32`` (``U = 1024``), which its recipes set explicitly; at that
    setting it trains 23.30M parameters on Llama-3.1-8B (all linear layers), the study's Table II.

    Reference (``common/lora_modules/randlora.py``): followed for the trainable tensors
    (``lambda`` ``r × n``, ``gamma`` ``n × d_min`` at ``1/d_max``), the frozen bases shared and
    normalised by their standard deviation, and the transposition when ``in > out``. Deliberate
    differences (lorasweep follows the RandLoRA paper): the reference scales by ``alpha / r``
    without ``1/sqrt(n)`` (``scale="rank"`` restores it); it draws ``lambda ~ N(0, 1)``, so its
    model does not start as the base model (lorasweep: ``lambda = 0``); it repeats one ``A``
    for all ``n`` bases and divides ``B`` by ``A``'s standard deviation instead of ``B``'s (a
    slip); it takes ``n = ceil(min(d_in, d_out)/r)`` from the largest layer, with no ``U``
    (Table II's 23.30M needs ``U = 1024``).
    """

    key = "randlora"
    axis = "rank"
    study = {"rank": 32, "options": {"max_full_rank": 1024}}
    summary = "full-rank update from frozen random shared bases, trainable lambda/gamma scales"
    layer = RandLoraLayer
    Options = RandLoraOptions
    peft_flags = None  # not a peft LoRA (peft's RandLoRA format is not written)

    def __init__(self, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0, **options: Any):
        super().__init__(rank, alpha, dropout, **options)
        self._bases: dict[str, _Bases] = {}

    def plan_layers(self, targets: dict[str, nn.Linear]) -> None:
        module_types(targets, self.key)  # one shape per module type, or a clear error now

    def n_bases(self, in_features: int, out_features: int) -> int:
        return math.ceil(min(out_features, in_features, self.options.max_full_rank) / self.rank)

    def build_layer(self, name: str, base: nn.Linear) -> AdapterLayer:
        kind = module_type(name)
        d_min = min(base.in_features, base.out_features)
        d_max = max(base.in_features, base.out_features)
        if kind not in self._bases:
            n = self.n_bases(base.in_features, base.out_features)
            factory = {"device": base.weight.device, "dtype": adapter_dtype(base.weight.dtype)}
            if base.weight.is_meta:  # shapes only (parameter counts): draw nothing
                a, b = torch.empty(n, self.rank, d_min), torch.empty(d_max, n * self.rank)
            else:
                a, b = random_bases(self.options.seed, kind, n, self.rank, d_min, d_max)
            self._bases[kind] = _Bases(a.to(**factory), b.to(**factory))
        bases = self._bases[kind]
        if (bases.A.shape[2], bases.B.shape[0]) != (d_min, d_max):
            raise VariantError(
                f"randlora shares its bases between the layers {kind}, but {name} is "
                f"{base.in_features}->{base.out_features}, unlike the first of them"
            )
        layer = RandLoraLayer(base, self, bases)
        layer.reset_adapter()
        self.layers[name] = layer
        return layer
