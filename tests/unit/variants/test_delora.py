"""DeLoRA: normalised rank-1 terms, a bounded update, a trainable lambda, a residual start."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lorasweep
from lorasweep.variants import VariantError

RANK = 4


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 8))


def _adapted(seed: int = 0, **options):
    model = _model()
    torch.manual_seed(seed)
    lorasweep.apply_variant(model, "delora", rank=RANK, target_modules=["0", "2"], **options)
    return model, lorasweep.get_variant(model)


def _x() -> torch.Tensor:
    return torch.randn(5, 12, generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def _perturb(variant) -> None:
    g = torch.Generator().manual_seed(7)
    for _, p in variant.adapter_parameters():
        p.add_(torch.randn(p.shape, generator=g))


def test_starts_as_base_with_the_initial_update_in_the_residual():
    base = _model()
    model, variant = _adapted()
    with torch.no_grad():
        torch.testing.assert_close(model(_x()), base(_x()), atol=1e-5, rtol=0)
    for name, layer in variant.layers.items():
        w = base.get_submodule(name).weight
        assert layer.delta_weight().abs().max() > 0.01, "DeLoRA's initial update is not zero"
        torch.testing.assert_close(layer.delta_weight(), layer.initial_update(), atol=0, rtol=0)
        torch.testing.assert_close(layer.base.weight + layer.delta_weight(), w, atol=1e-6, rtol=0)
        # the column norms are the original weight's, not the residual's
        torch.testing.assert_close(layer.delora_wnorm, w.norm(dim=0), atol=1e-6, rtol=0)
        assert layer.delora_lambda.item() == 8.0


def test_each_rank_one_term_has_norm_lambda_over_r_and_the_update_is_bounded():
    _, variant = _adapted()
    _perturb(variant)
    for layer in variant.layers.values():
        lam = layer.delora_lambda.detach()
        a, b = layer.lora_A.detach(), layer.lora_B.detach()
        scale = layer._component_scale(lam, a, b)
        for i in range(RANK):
            term = torch.outer(b[:, i] * scale[i], a[i])
            torch.testing.assert_close(term.norm(), lam.abs() / RANK, atol=1e-5, rtol=1e-5)
        bound = lam.abs() * layer.delora_wnorm.max()
        assert layer.delta_weight().norm() <= bound * (1 + 1e-6)


def test_the_bound_holds_however_large_a_and_b_grow():
    _, variant = _adapted()
    layer = variant.layers["0"]
    before = layer.delta_weight().detach().clone()
    with torch.no_grad():
        layer.lora_A.mul_(1e3)
        layer.lora_B.mul_(-1e2)
    torch.testing.assert_close(layer.delta_weight(), -before, atol=1e-5, rtol=1e-5)


def test_forward_matches_the_weight_form_and_lambda_scales_the_update():
    model, variant = _adapted()
    _perturb(variant)
    x = _x()
    layer = variant.layers["0"]
    with torch.no_grad():
        dw = layer.delta_weight()
        expected = x @ (layer.base.weight + dw).t() + layer.base.bias
        torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=0)
        layer.delora_lambda.mul_(2)
        torch.testing.assert_close(layer.delta_weight(), 2 * dw, atol=1e-6, rtol=1e-6)


def test_lambda_gets_gradients_from_the_first_step():
    model, variant = _adapted()
    model(_x()).sub(1.0).pow(2).mean().backward()  # not perturbed: the initial update alone
    for name, layer in variant.layers.items():
        assert layer.delora_lambda.grad is not None and layer.delora_lambda.grad.abs() > 0, name
        assert layer.lora_A.grad.abs().sum() > 0 and layer.lora_B.grad.abs().sum() > 0, name


def test_reload_into_a_differently_initialised_fresh_model(tmp_path):
    """Loading undoes the fresh init's residual (its own lambda0, A0, B0) and applies the saved
    one; the fresh init here differs from the saved one (another global seed)."""
    model, variant = _adapted(seed=1, lambda_=3.0)
    _perturb(variant)
    with torch.no_grad():
        expected = model(_x())
    lorasweep.save_adapter(model, tmp_path)
    torch.manual_seed(2)
    fresh = lorasweep.load_adapter(_model(), tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(fresh(_x()), expected, atol=1e-5, rtol=0)
    for name, layer in lorasweep.get_variant(fresh).layers.items():
        torch.testing.assert_close(
            layer.base.weight, variant.layers[name].base.weight, atol=1e-5, rtol=0
        )


def test_lambda_option_from_a_string_and_zero_rejected():
    _, variant = _adapted(lambda_="2.5")
    assert variant.options.lambda_ == 2.5
    assert all(layer.delora_lambda.item() == 2.5 for layer in variant.layers.values())
    with pytest.raises(VariantError, match="lambda_"):
        _adapted(lambda_=0)
