"""AuRoRA: LoRA with an adaptive nonlinearity (fixed tanh mixer + learnable B-splines) inside."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from .base import AdapterLayer, AInitOptions, Variant, VariantError, register

__all__ = ["Aurora", "AuroraLayer", "bspline_basis", "spline_knots"]

#: Spline weights start uniform in ``±SPLINE_INIT``.
SPLINE_INIT = 0.1


@dataclasses.dataclass
class AuroraOptions(AInitOptions):
    #: Grid intervals ``G`` of the spline on ``[-bound, bound]``.
    grid: int = 5
    #: Spline order ``k`` (3: cubic); ``G + k`` basis functions per rank channel.
    order: int = 3
    #: Half-width of the spline's range ``[-bound, bound]``.
    bound: float = 1.0

    def validate(self) -> None:
        super().validate()
        if self.grid < 1:
            raise VariantError(f"aurora grid must be a positive integer, got {self.grid}")
        if self.order < 0:
            raise VariantError(f"aurora order must be >= 0 (3 = cubic), got {self.order}")
        if not (math.isfinite(self.bound) and self.bound > 0):
            raise VariantError(f"aurora bound must be positive (range [-b, b]), got {self.bound}")


def spline_knots(grid: int, order: int, bound: float, **factory) -> torch.Tensor:
    """Uniform knots on ``[-bound, bound]`` extended by ``order`` intervals on each side
    (``grid + 2 order + 1`` of them), so that the basis sums to one on the whole range."""
    step = 2 * bound / grid
    return -bound + step * torch.arange(-order, grid + order + 1, **factory)


def bspline_basis(x: torch.Tensor, knots: torch.Tensor, order: int) -> torch.Tensor:
    """B-spline basis functions of ``order`` at every element of ``x``: ``(*x.shape, n)``, with
    ``n = len(knots) - order - 1``. Cox–de Boor recursion over the order, each step for all
    knots and all elements at once::

        B_{j,0}(x) = [t_j <= x < t_{j+1}]
        B_{j,p}(x) = (x - t_j) / (t_{j+p} - t_j) B_{j,p-1}(x)
                     + (t_{j+p+1} - x) / (t_{j+p+1} - t_{j+1}) B_{j+1,p-1}(x)
    """
    x = x.unsqueeze(-1)
    basis = ((x >= knots[:-1]) & (x < knots[1:])).to(x.dtype)
    for p in range(1, order + 1):
        left = (x - knots[: -(p + 1)]) / (knots[p:-1] - knots[: -(p + 1)]) * basis[..., :-1]
        right = (knots[p + 1 :] - x) / (knots[p + 1 :] - knots[1:-p]) * basis[..., 1:]
        basis = left + right
    return basis


class AuroraLayer(AdapterLayer):
    def __init__(self, base: nn.Linear, variant: Variant):
        super().__init__(base, variant)
        opts = self.options
        factory = {"device": self.lora_A.device, "dtype": self.lora_A.dtype}
        self.order = opts.order
        self.lora_M = nn.Parameter(torch.empty(self.rank, self.rank, **factory))
        self.lora_spline = nn.Parameter(torch.empty(self.rank, opts.grid + opts.order, **factory))
        knots = spline_knots(opts.grid, opts.order, opts.bound, **factory)
        self.register_buffer("spline_knots", knots, persistent=False)

    @torch.no_grad()
    def reset_adapter(self) -> None:
        super().reset_adapter()  # A Kaiming-uniform, B zero
        nn.init.xavier_uniform_(self.lora_M)
        nn.init.uniform_(self.lora_spline, -SPLINE_INIT, SPLINE_INIT)

    def nonlinearity(self, h: torch.Tensor) -> torch.Tensor:
        """``ANL(h) = tanh(tanh(h) Mᵀ) + spline(h)``, ``h`` of shape ``(..., r)``."""
        mixed = torch.tanh(torch.tanh(h) @ self.lora_M.t())
        basis = bspline_basis(h.float(), self.spline_knots.float(), self.order)
        spline = (basis * self.lora_spline).sum(-1)  # one spline per rank channel
        return mixed + spline

    def adapter_output(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(x)
        if x.dtype != self.lora_A.dtype and not torch.is_autocast_enabled(x.device.type):
            x = x.to(self.lora_A.dtype)
        return self.scaling * (self.nonlinearity(x @ self.lora_A.t()) @ self.lora_B.t())

    def delta_weight(self) -> torch.Tensor:
        raise VariantError("aurora's update is nonlinear in its input: it cannot merge")


@register
class Aurora(Variant):
    """AuRoRA (Dong et al., 2025): an adaptive nonlinear layer between LoRA's A and B.

    ``h = A x``; ``ANL(h) = tanh(tanh(h) Mᵀ) + spline(h)``; output ``s · B · ANL(h)``, with
    ``A ∈ R^{r×in}`` Kaiming-uniform, ``B ∈ R^{out×r}`` zero (the model starts as the base
    model), ``M ∈ R^{r×r}`` Xavier-uniform and ``s = alpha / r``. ``spline`` acts per rank
    channel: ``spline(h)_j = Σ_m c_{j,m} B_m(h_j)`` over the ``G + k`` B-spline basis functions of
    order ``k`` on a uniform grid of ``G`` intervals on ``[-1, 1]`` (knots extended by ``k``
    intervals each side; study: ``G = 5``, ``k = 3``), weights ``c ∈ R^{r×(G+k)}`` U(±0.1).
    The update depends nonlinearly on ``x``: merging is refused, and there is no peft LoRA
    equivalent.

    Reference: ``aurora.py`` of the study's code: the same ANL, grid, order, range and
    spline init. Differences: ``M`` Xavier-uniform (reference Xavier-normal, same variance); the
    spline is per rank channel (the reference sums each basis function over all channels
    before mixing them with ``c``).
    """

    key = "aurora"
    axis = "optimization"
    study = {"options": {"a_init": "gaussian"}}
    summary = "nonlinear adapter s·B·[tanh(tanh(Ax) Mᵀ) + spline(Ax)], B-splines grid 5 order 3"
    layer = AuroraLayer
    Options = AuroraOptions
    peft_flags = None
    mergeable = False
