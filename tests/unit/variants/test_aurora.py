"""AuRoRA: the B-spline basis, the nonlinear adapter output, and its options."""

from __future__ import annotations

import pytest
import torch
from helpers import require
from torch import nn

import lorasweep
from lorasweep.variants import VariantError
from lorasweep.variants.aurora import bspline_basis, spline_knots

RANK, ALPHA = 4, 8.0


def _adapted(**options):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 16))
    lorasweep.apply_variant(
        model, "aurora", rank=RANK, alpha=ALPHA, target_modules=["0"], **options
    )
    layer = lorasweep.get_variant(model).layers["0"]
    with torch.no_grad():
        layer.lora_B.normal_()
    return model, layer


@pytest.mark.parametrize("grid, order", [(5, 3), (4, 1), (7, 2)])
def test_basis_is_a_partition_of_unity_inside_the_range(grid, order):
    knots = spline_knots(grid, order, 1.0, dtype=torch.float64)
    assert len(knots) == grid + 2 * order + 1
    x = torch.linspace(-1, 1, 101, dtype=torch.float64)
    basis = bspline_basis(x, knots, order)
    assert basis.shape == (101, grid + order)
    assert (basis >= 0).all()
    torch.testing.assert_close(basis.sum(-1), torch.ones(101, dtype=torch.float64))
    # each x lies in the support of at most order + 1 basis functions
    assert ((basis > 0).sum(-1) <= order + 1).all()
    # far outside the extended knots, every basis function vanishes
    assert bspline_basis(torch.tensor([-5.0, 5.0]), knots.float(), order).abs().sum() == 0


def test_cubic_basis_values_at_the_knots_are_1_4_1_over_6():
    knots = spline_knots(5, 3, 1.0, dtype=torch.float64)
    basis = bspline_basis(knots[3:9], knots, 3)  # the grid points -1, -0.6, ..., 1
    for j, row in enumerate(basis):
        nonzero = row[row > 1e-12]
        torch.testing.assert_close(nonzero, torch.tensor([1, 4, 1], dtype=torch.float64) / 6)
        assert torch.equal(torch.nonzero(row > 1e-12).flatten(), torch.arange(j, j + 3))


def test_basis_matches_scipy():
    interpolate = require("scipy.interpolate")
    knots = spline_knots(5, 3, 1.0, dtype=torch.float64)
    x = torch.linspace(-1.9, 1.9, 77, dtype=torch.float64)
    ours = bspline_basis(x, knots, 3)
    for j in range(ours.shape[-1]):
        element = interpolate.BSpline.basis_element(knots[j : j + 5].numpy(), extrapolate=False)
        theirs = torch.nan_to_num(torch.from_numpy(element(x.numpy())))
        torch.testing.assert_close(ours[:, j], theirs, atol=1e-12, rtol=0)


def test_output_follows_the_formula_and_is_nonlinear():
    model, layer = _adapted()
    x = 0.5 * torch.randn(6, 12, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        h = x @ layer.lora_A.t()
        basis = bspline_basis(h, layer.spline_knots, 3)
        anl = torch.tanh(torch.tanh(h) @ layer.lora_M.t())
        anl = anl + torch.einsum("nrk,rk->nr", basis, layer.lora_spline)
        expected = layer.base(x) + (ALPHA / RANK) * anl @ layer.lora_B.t()
        torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=0)
        update = layer.adapter_output
        assert not torch.allclose(update(2 * x), 2 * update(x), atol=1e-3)
        assert not torch.allclose(update(-x), -update(x), atol=1e-3)  # the spline is not odd


def test_spline_weights_start_small_and_learn():
    model, layer = _adapted()
    assert layer.lora_spline.shape == (RANK, 5 + 3)
    assert layer.lora_spline.abs().max() <= 0.1
    assert layer.lora_M.shape == (RANK, RANK)
    x = torch.randn(6, 12, generator=torch.Generator().manual_seed(1))
    model(x).pow(2).mean().backward()
    for p in (layer.lora_A, layer.lora_M, layer.lora_spline):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_options_arrive_as_strings_and_are_validated():
    _, layer = _adapted(grid="4", order="2", bound="2.0")
    assert layer.lora_spline.shape == (RANK, 4 + 2)
    torch.testing.assert_close(layer.spline_knots[[2, -3]], torch.tensor([-2.0, 2.0]))
    for bad in ({"grid": 0}, {"order": -1}, {"bound": 0.0}):
        with pytest.raises(VariantError, match=next(iter(bad))):
            _adapted(**bad)


def test_merge_is_refused():
    model, _ = _adapted()
    with pytest.raises(VariantError, match="cannot merge"):
        lorasweep.get_variant(model).merge()
