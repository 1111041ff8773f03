"""MELoRA: n mini-LoRAs on the block diagonal, rank = the total rank, shapes checked."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lorasweep
from lorasweep.variants import VariantError

ALPHA = 8.0


def _adapted(rank: int = 4, **options):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 24))
    w = model[0].weight.detach().clone()
    lorasweep.apply_variant(
        model, "melora", rank=rank, alpha=ALPHA, target_modules=["0"], **options
    )
    layer = lorasweep.get_variant(model).layers["0"]
    with torch.no_grad():
        layer.lora_B.normal_()
    return model, layer, w


@pytest.mark.parametrize("blocks", [2, 4])
def test_delta_weight_is_block_diagonal(blocks):
    rank = 8
    _, layer, _ = _adapted(rank=rank, blocks=blocks)
    dw = layer.delta_weight()
    assert dw.shape == (24, 12)
    o, i = 24 // blocks, 12 // blocks
    for row in range(blocks):
        for col in range(blocks):
            block = dw[row * o : (row + 1) * o, col * i : (col + 1) * i]
            if row != col:
                assert torch.equal(block, torch.zeros_like(block)), (row, col)
            else:
                mini = (ALPHA / rank) * layer.lora_B[row] @ layer.lora_A[row]
                torch.testing.assert_close(block, mini, atol=1e-6, rtol=0)
    # the total rank r is reached: n blocks of rank r/n each
    assert torch.linalg.matrix_rank(dw) == rank


def test_forward_equals_the_full_weight_update():
    model, layer, w = _adapted(blocks=2)
    x = torch.randn(3, 5, 12, generator=torch.Generator().manual_seed(1))  # extra batch dim
    with torch.no_grad():
        expected = x @ (w + layer.delta_weight()).t() + layer.base.bias
        torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=0)


def test_options_arrive_as_strings_and_set_the_block_count():
    _, layer, _ = _adapted(rank=8, blocks="4")
    variant_blocks = layer.options.blocks
    assert variant_blocks == 4 and isinstance(variant_blocks, int)
    assert layer.lora_A.shape == (4, 2, 3) and layer.lora_B.shape == (4, 6, 2)
    assert sum(p.numel() for p in (layer.lora_A, layer.lora_B)) == 8 * (12 + 24) // 4
    # Kaiming-uniform per mini-LoRA: the fan-in is the block's in/n = 3
    assert layer.lora_A.abs().max() <= 1 / 3**0.5


def test_rank_not_divisible_by_blocks_is_rejected():
    with pytest.raises(VariantError, match="rank 6 is not divisible by blocks=4"):
        _adapted(rank=6, blocks=4)


def test_layer_shapes_not_divisible_are_rejected_naming_the_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 10))
    with pytest.raises(VariantError, match=r"'2' is 24 -> 10"):
        lorasweep.apply_variant(model, "melora", rank=4, target_modules=["0", "2"], blocks=4)


@pytest.mark.parametrize("bad", [0, -2, "two"])
def test_bad_block_counts_are_rejected(bad):
    with pytest.raises(VariantError, match="blocks"):
        _adapted(blocks=bad)
