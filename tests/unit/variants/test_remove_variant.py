"""remove_variant undoes apply_variant in place (the worker cache and merged export both use it)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lorasweep.variants import VariantError, apply_variant, get_variant, remove_variant


def test_remove_variant_gives_back_the_base_modules_and_forgets_the_variant():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    bases = [model[0], model[2]]
    x = torch.randn(3, 8)
    before = model(x)
    apply_variant(model, "lora", rank=2, alpha=4, target_modules=["0", "2"])
    assert model[0] is not bases[0] and get_variant(model) is not None
    assert remove_variant(model) is model
    assert model[0] is bases[0] and model[2] is bases[1]  # the very modules, not copies
    with pytest.raises(VariantError, match="no lorasweep variant"):
        get_variant(model)
    assert torch.equal(model(x), before)
    apply_variant(model, "dora", rank=2, alpha=4, target_modules=["2"])  # a fresh one fits again
    assert get_variant(model).key == "dora"
