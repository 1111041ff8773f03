"""PiSSA's randomised SVD: deterministic per weight, and blind to the global random streams."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lorasweep
from lorasweep.variants._svd import principal_components


def _mlp(device: str = "cpu") -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(24, 40), nn.ReLU(), nn.Linear(40, 8)).to(device)


def _adapted_state(device: str, global_seed: int) -> dict[str, torch.Tensor]:
    model = _mlp(device)
    torch.manual_seed(global_seed)
    lorasweep.apply_variant(model, "pissa", rank=4, alpha=8, target_modules=["0", "2"])
    return lorasweep.get_variant(model).state_dict()


def test_same_weight_gives_the_same_adapter_whatever_the_global_seed():
    first, second = _adapted_state("cpu", 1), _adapted_state("cpu", 2)
    for k in first:
        assert torch.equal(first[k], second[k]), k


def test_randomised_svd_matches_the_exact_one_on_a_decaying_spectrum():
    g = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(64, 64, generator=g))
    v, _ = torch.linalg.qr(torch.randn(48, 48, generator=g))
    w = u[:, :48] @ torch.diag(0.9 ** torch.arange(48.0)) @ v.t()
    for niter in (8, 64):
        ur, sr, vr = principal_components(w, 6, niter)
        ue, se, ve = principal_components(w, 6, 0)
        torch.testing.assert_close(sr, se, atol=1e-5, rtol=0)
        torch.testing.assert_close((ur * sr) @ vr.t(), (ue * se) @ ve.t(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_init_leaves_the_global_random_streams_alone(device):
    """A seed sweep relies on the global streams (dropout, data order) differing per seed."""
    model = _mlp(device)
    torch.manual_seed(123)
    expected = torch.rand(4, device=device), torch.rand(4)
    torch.manual_seed(123)
    lorasweep.apply_variant(model, "pissa", rank=4, alpha=8, target_modules=["0", "2"])
    got = torch.rand(4, device=device), torch.rand(4)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
