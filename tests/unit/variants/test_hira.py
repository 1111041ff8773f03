"""HiRA: the update is the Hadamard product W ⊙ (s·BA), of rank above r, applied as one weight."""

from __future__ import annotations

import torch
from torch import nn

import lorasweep

RANK, ALPHA = 2, 4.0


def _adapted(dropout: float = 0.0):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 16))
    original = model[0].weight.detach().clone()
    lorasweep.apply_variant(
        model, "hira", rank=RANK, alpha=ALPHA, target_modules=["0"], dropout=dropout
    )
    layer = lorasweep.get_variant(model).layers["0"]
    with torch.no_grad():
        layer.lora_B.normal_()
        layer.lora_A.normal_()
    return model, layer, original


def test_update_is_the_hadamard_product_with_the_frozen_weight():
    _, layer, w = _adapted()
    expected = w * ((ALPHA / RANK) * layer.lora_B @ layer.lora_A)
    torch.testing.assert_close(layer.delta_weight(), expected, atol=1e-6, rtol=0)
    assert torch.equal(layer.base.weight, w), "HiRA must not touch the frozen weight"


def test_update_rank_exceeds_the_adapter_rank():
    _, layer, _ = _adapted()
    low_rank = layer.lora_B @ layer.lora_A
    assert torch.linalg.matrix_rank(low_rank) == RANK
    assert torch.linalg.matrix_rank(layer.delta_weight()) > RANK


def test_forward_uses_the_effective_weight():
    model, layer, w = _adapted()
    x = torch.randn(5, 12, generator=torch.Generator().manual_seed(1))
    expected = x @ (w + w * ((ALPHA / RANK) * layer.lora_B @ layer.lora_A)).t() + layer.base.bias
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=0)


def test_dropout_acts_on_the_update_input_only():
    model, layer, w = _adapted(dropout=0.5)
    model.train()
    x = torch.randn(5, 12, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(3)
    with torch.no_grad():
        got = model(x)
    torch.manual_seed(3)
    dropped = nn.functional.dropout(x, 0.5, training=True)
    expected = x @ w.t() + layer.base.bias + dropped @ layer.delta_weight().t()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    model.eval()  # evaluation: no dropout, the single effective-weight matmul
    with torch.no_grad():
        torch.testing.assert_close(
            model(x), x @ (w + layer.delta_weight()).t() + layer.base.bias, atol=1e-5, rtol=0
        )


def test_b_gets_the_hadamard_gradient_at_init():
    """At B = 0, dL/dB = s · (G ⊙ W) Aᵀ with G = dL/dW' (plain LoRA would get s · G Aᵀ)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 16))
    w = model[0].weight.detach().clone()
    lorasweep.apply_variant(model, "hira", rank=RANK, alpha=ALPHA, target_modules=["0"])
    layer = lorasweep.get_variant(model).layers["0"]
    x = torch.randn(5, 12, generator=torch.Generator().manual_seed(1))
    model(x).pow(2).sum().backward()
    grad_w = 2 * (x @ w.t() + layer.base.bias).t() @ x  # dL/dW' for L = ‖W'x + b‖²
    expected = (ALPHA / RANK) * (grad_w * w) @ layer.lora_A.detach().t()
    torch.testing.assert_close(layer.lora_B.grad, expected, atol=1e-4, rtol=1e-5)
