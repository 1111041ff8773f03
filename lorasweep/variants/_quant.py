"""The one seam for a quantized frozen base: quantize a linear, read its dense value, ask whether
it is quantized. Nothing else in lorasweep touches a quantized tensor.

The backend is bitsandbytes' NF4 with double quantisation (the optional extra
``lorasweep[qlora]``), imported only when a quantized base is asked for. lorasweep never calls
``bnb.nn.Linear4bit.forward``: on CPUs with AVX512-BF16 it repacks the weight in place when it
runs in eval mode without gradients, and a sweep alternates training and evaluation. The layer
here keeps bitsandbytes' packed storage and quantisation state as they were made and runs
``F.linear(x, deq(W_q))`` through an autograd function that saves the *quantized* weight and
dequantizes again in backward, so no dense copy of ``W`` lives between forward and backward.

The rule: ``W`` is quantized once, after every initialisation that reads or writes it (SVD and
QR inits, residuals, gradient estimates); nothing writes into a quantized ``W`` afterwards.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ._options import VariantError

__all__ = [
    "BASE_TREATMENTS",
    "QUANTIZATIONS",
    "QuantizedLinear",
    "base_bytes",
    "base_matmul",
    "base_storage",
    "bits_per_param",
    "dense_weight",
    "is_quantized",
    "nf4_weight_bytes",
    "quantize_linear",
    "require_backend",
]

#: ``model.quantize`` values: the frozen base's storage (``none``: as loaded).
QUANTIZATIONS = ("none", "nf4")
#: How a variant treats a quantized base: the values of ``Variant.quantized_base``.
BASE_TREATMENTS: dict[str, str] = {
    "as-is": "needs nothing from W: runs over the 4-bit W as it is",
    "dequantize": "reads W every forward from a transient dequantized copy, never kept for backward",
    "residual": "initialises on the full-precision W; the residual W - ΔW0 is quantized once",
    "after-prepare": "estimates its init on the full-precision model (prepare); the residual is "
                     "quantized once after",
    "offset": "merges stay frozen low-rank offsets beside the 4-bit W; nothing is re-quantized",
}
_INSTALL = "pip install 'lorasweep[qlora]' (bitsandbytes>=0.50)"


def require_backend(kind: str) -> Any:
    """The backend module of quantisation ``kind``; a :class:`VariantError` naming the extra to
    install when it is missing."""
    if kind not in QUANTIZATIONS or kind == "none":
        raise VariantError(f"model.quantize must be one of {', '.join(QUANTIZATIONS)}, got {kind!r}")
    try:
        with _no_hub_kernels():
            bnb = importlib.import_module("bitsandbytes")
            importlib.import_module("bitsandbytes.functional")
    except ImportError:
        raise VariantError(f"model.quantize={kind} needs bitsandbytes: {_INSTALL}") from None
    return bnb


@contextlib.contextmanager
def _no_hub_kernels() -> Iterator[None]:
    """Import bitsandbytes without its attempt to download a CPU kernel from a model hub (it
    tries where the ``kernels`` package is installed, for the eval-mode path this layer never
    takes): ``kernels`` is hidden for the import and the failed attempt's warning muted."""
    import logging
    import sys

    if "bitsandbytes" in sys.modules:
        yield
        return
    hidden = sys.modules.get("kernels", _MISSING)
    sys.modules["kernels"] = None  # type: ignore[assignment]  # import kernels -> ImportError
    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
        if hidden is _MISSING:
            del sys.modules["kernels"]
        else:
            sys.modules["kernels"] = hidden


_MISSING = object()


class _QuantizedMatmul(torch.autograd.Function):
    """``F.linear(x, deq(W_q), b)``, saving the packed ``W_q`` (not ``deq(W_q)``) for backward."""

    @staticmethod
    def forward(ctx, x, layer, bias):  # noqa: D102
        ctx.layer = layer
        return F.linear(x, layer.dequantized(x.dtype), bias)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        return grad @ ctx.layer.dequantized(grad.dtype), None, None


class QuantizedLinear(nn.Module):
    """A frozen linear whose weight is NF4 (double quantisation, blocks of 64): bitsandbytes'
    packed ``uint8`` storage and its quantisation state, plus the original bias as it was."""

    def __init__(self, linear: nn.Linear, kind: str = "nf4"):
        super().__init__()
        bnb = require_backend(kind)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.kind = kind
        weight = linear.weight.detach()
        self.compute_dtype = weight.dtype
        packed, state = bnb.functional.quantize_4bit(
            weight.contiguous(), blocksize=64, compress_statistics=True, quant_type="nf4")
        self.register_buffer("weight_q", packed, persistent=False)
        self.quant_state = state
        self.bias = linear.bias
        if self.bias is not None:
            self.bias.requires_grad_(False)

    @property
    def weight(self) -> torch.Tensor:
        """The packed storage (``uint8``); read the value through :func:`dense_weight`."""
        return self.weight_q

    def dequantized(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        from bitsandbytes.functional import dequantize_4bit

        with torch.no_grad():
            w = dequantize_4bit(self.weight_q, self.quant_state)
        return w if dtype is None or w.dtype == dtype else w.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(
            x.device.type) else x.dtype
        bias = None if self.bias is None else self.bias.to(dtype)
        return _QuantizedMatmul.apply(x.to(dtype), self, bias)

    def _apply(self, fn, recurse=True):  # .to(device) moves the quantisation state too
        super()._apply(fn, recurse)
        device = self.weight_q.device
        if self.quant_state.absmax.device != device:
            self.quant_state = self.quant_state.to(device) or self.quant_state
        return self

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.kind}"


def quantize_linear(linear: nn.Linear, kind: str = "nf4") -> QuantizedLinear:
    """``linear`` with its weight quantized once (the bias stays as it is)."""
    if is_quantized(linear):
        raise VariantError("the layer is quantized already: W is quantized once")
    return QuantizedLinear(linear, kind)


def is_quantized(module: nn.Module) -> bool:
    return isinstance(module, QuantizedLinear)


def dense_weight(module: nn.Module) -> torch.Tensor:
    """The value of ``module``'s weight, ``out × in``: the parameter of a plain linear, a fresh
    dequantized tensor (no gradient, not kept) of a quantized one."""
    if is_quantized(module):
        return module.dequantized()
    return module.weight


def base_matmul(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``W x`` without the bias; for a quantized base through the function that saves ``W_q``."""
    if is_quantized(module):
        return _QuantizedMatmul.apply(x, module, None)
    return F.linear(x, module.weight)


def nf4_weight_bytes(numel: int, blocksize: int = 64, nested_blocksize: int = 256) -> int:
    """Bytes of ``numel`` weights in NF4 with double quantisation, as bitsandbytes stores them:
    two codes per byte, one 8-bit scale per block of 64, one fp32 scale per 256 scales (the
    codebooks are shared). For shapes without tensors (meta-device accounting)."""
    blocks = -(-numel // blocksize)
    return -(-numel // 2) + blocks + 4 * -(-blocks // nested_blocksize)


def bits_per_param(module: nn.Module) -> float:
    """Stored bits per weight of a quantized linear (packed codes + double-quantized scales)."""
    return 8.0 * _weight_bytes(module) / (module.in_features * module.out_features)


def _weight_bytes(module: nn.Module) -> int:
    if not is_quantized(module):
        return module.weight.numel() * module.weight.element_size()
    state = module.quant_state
    total = module.weight_q.numel() * module.weight_q.element_size()
    total += state.absmax.numel() * state.absmax.element_size()
    if state.state2 is not None:
        nested = state.state2
        total += nested.absmax.numel() * nested.absmax.element_size()  # (codebooks shared)
    return total


def base_bytes(model: nn.Module) -> int:
    """Bytes of the model's frozen weights as stored: every parameter that does not train,
    quantized linears by their packed codes and double-quantized scales (buffers such as rotary
    tables and the adapters' own frozen tensors are left out)."""
    total = sum(_weight_bytes(m) for m in model.modules() if is_quantized(m))
    seen: set[int] = set()
    for p in model.parameters():
        if not p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            total += p.numel() * p.element_size()
    return total


def base_storage(model: nn.Module, quantize: str = "none") -> dict[str, Any]:
    """What a trial records of its frozen base: ``quantize`` (its storage), the stored
    ``bits_per_param`` of the target linears (16 or 32 as loaded) and ``base_bytes``."""
    linears = [m for m in model.modules() if is_quantized(m)]
    if not linears:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    stored = sum(_weight_bytes(m) for m in linears)
    weights = sum(m.in_features * m.out_features for m in linears)
    return {"quantize": quantize, "bits_per_param": round(8.0 * stored / max(weights, 1), 3),
            "base_bytes": base_bytes(model)}
