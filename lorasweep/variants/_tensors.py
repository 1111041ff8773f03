"""How new adapter tensors are made: their dtype beside the base weight, and the ``(A, B)``
pairs that variants create outside a layer (shared by the layers of a module type)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._options import init_lora_A

__all__ = ["adapter_dtype", "new_factors"]


def adapter_dtype(weight_dtype: torch.dtype) -> torch.dtype:
    """The dtype of a new adapter tensor beside a base weight of ``weight_dtype``: adapters of
    quantised or half-precision bases train in fp32 (autocast handles the rest)."""
    if weight_dtype in (torch.float16, torch.bfloat16) or not weight_dtype.is_floating_point:
        return torch.float32
    return weight_dtype


@torch.no_grad()
def new_factors(base: nn.Linear, rank: int, options: Any) -> tuple[nn.Parameter, nn.Parameter]:
    """A fresh ``A`` (``rank × in``, random per the ``a_init`` option) and ``B`` (``out × rank``,
    zero) for ``base``, on its device, in :func:`adapter_dtype`."""
    factory = {"device": base.weight.device, "dtype": adapter_dtype(base.weight.dtype)}
    lora_A = nn.Parameter(torch.empty(rank, base.in_features, **factory))
    init_lora_A(lora_A, options)
    lora_B = nn.Parameter(torch.zeros(base.out_features, rank, **factory))
    return lora_A, lora_B
