"""Non-zero initialisations (milora, olora, nzlora): the init each method promises, the residual
that makes the model start as the base model, the peft export, and peft as an oracle for OLoRA."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import require, tiny_bert
from torch import nn

import lorasweep

RANK, ALPHA = 4, 8.0
SCALE = ALPHA / RANK
INIT_KEYS = ["milora", "olora", "nzlora"]


def _close(actual, expected, atol=1e-5, msg=None):
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0, msg=msg)


def _linear_with_spectrum(out: int = 24, inp: int = 16) -> tuple[nn.Sequential, torch.Tensor]:
    """One linear layer whose weight has well separated singular values 3.0 ... 0.2."""
    g = torch.Generator().manual_seed(0)
    k = min(out, inp)
    u = torch.linalg.qr(torch.randn(out, k, generator=g)).Q
    v = torch.linalg.qr(torch.randn(inp, k, generator=g)).Q
    weight = u @ torch.diag(torch.linspace(3.0, 0.2, k)) @ v.t()
    model = nn.Sequential(nn.Linear(inp, out))
    with torch.no_grad():
        model[0].weight.copy_(weight)
    return model, weight.clone()


def _adapt_linear(key: str, **options):
    model, weight = _linear_with_spectrum()
    lorasweep.apply_variant(model, key, rank=RANK, alpha=ALPHA, target_modules=["0"], **options)
    return model, lorasweep.get_variant(model).layers["0"], weight


# ------------------------------------------------------------------------------- the inits
@torch.no_grad()
def test_milora_adapts_the_minor_singular_subspace():
    model, layer, weight = _adapt_linear("milora")
    u, s, vh = torch.linalg.svd(weight, full_matrices=False)
    minor = (u[:, -RANK:] * s[-RANK:]) @ vh[-RANK:]
    _close(layer.delta_weight(), minor)  # s · B A = U_bot S_bot V_botᵀ
    _close(layer.base.weight, weight - minor)  # the frozen residual is the principal part
    # B's columns lie in the bottom-r left singular subspace, A's rows in the right one
    left, right = u[:, -RANK:], vh[-RANK:].t()
    _close(left @ (left.t() @ layer.lora_B), layer.lora_B)
    _close((layer.lora_A @ right) @ right.t(), layer.lora_A)
    assert (u[:, :RANK].t() @ layer.lora_B).abs().max() < 1e-5  # nothing of the top components
    x = torch.randn(5, 16, generator=torch.Generator().manual_seed(1))
    _close(model(x), x @ weight.t() + layer.base.bias)  # starts as the base layer


@torch.no_grad()
def test_olora_b_is_orthonormal_and_b_a_is_the_qr_truncation():
    model, layer, weight = _adapt_linear("olora")
    q, r = torch.linalg.qr(weight)
    b, a = layer.lora_B, layer.lora_A
    _close(b.t() @ b, torch.eye(RANK))  # orthonormal columns
    _close(b @ a, q[:, :RANK] @ r[:RANK])  # the QR truncation, unscaled
    assert torch.equal(a, a.triu()), "A = R[:r] is upper-trapezoidal"
    _close(layer.base.weight, weight - SCALE * (q[:, :RANK] @ r[:RANK]))
    x = torch.randn(5, 16, generator=torch.Generator().manual_seed(1))
    _close(model(x), x @ weight.t() + layer.base.bias)


@pytest.mark.parametrize("gammas", [{}, {"gamma_a": 4.0, "gamma_b": 64.0}])
@torch.no_grad()
def test_nzlora_init_range(gammas):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 48))
    weight = model[0].weight.detach().clone()
    lorasweep.apply_variant(
        model, "nzlora", rank=16, alpha=32, target_modules=["0"], **gammas
    )
    layer = lorasweep.get_variant(model).layers["0"]
    for tensor, gamma in ((layer.lora_A, gammas.get("gamma_a", 16.0)),
                          (layer.lora_B, gammas.get("gamma_b", 16.0))):
        bound = math.sqrt(gamma / 64)  # both bounds use the layer's input width
        assert tensor.abs().max() <= bound
        assert tensor.abs().max() > 0.9 * bound, "the range is used, not a narrower one"
        assert tensor.mean().abs() < 0.1 * bound  # centred
    _close(layer.base.weight, weight - 2.0 * layer.lora_B @ layer.lora_A)
    _close(layer.lora_B0, layer.lora_B, atol=0)
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(1))
    _close(model(x), x @ weight.t() + layer.base.bias)


@pytest.mark.parametrize("key", ["milora", "olora"])
def test_rank_above_the_layer_width_is_refused(key):
    with pytest.raises(lorasweep.variants.VariantError, match="rank"):
        lorasweep.apply_variant(nn.Sequential(nn.Linear(3, 5)), key, rank=4, target_modules=["0"])


@pytest.mark.parametrize("option", ["gamma_a", "gamma_b"])
def test_nzlora_rejects_non_positive_gamma(option):
    with pytest.raises(lorasweep.variants.VariantError, match=option):
        lorasweep.apply_variant(nn.Sequential(nn.Linear(4, 4)), "nzlora", rank=2,
                                target_modules=["0"], **{option: 0.0})


# ------------------------------------------------------------------------------- with peft
def _bert() -> nn.Module:
    return tiny_bert(initializer_range=0.2).eval()


def _logits(model: nn.Module) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 100, (4, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


@pytest.mark.parametrize("key", INIT_KEYS)
def test_starts_as_base_and_export_loads_in_peft_with_the_same_logits(key, tmp_path):
    peft = require("peft")
    base_logits = _logits(_bert())
    model = _bert()
    lorasweep.apply_variant(model, key, rank=RANK, alpha=ALPHA, target_modules="all-linear",
                            modules_to_save=["classifier"])
    variant = lorasweep.get_variant(model)
    assert all(layer.has_initial_update for layer in variant.layers.values())
    _close(_logits(model), base_logits)
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for _, p in variant.adapter_parameters() + variant.saved_module_parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    ours = _logits(model)
    assert (ours - base_logits).abs().max() > 1e-2
    lorasweep.save_adapter(model, tmp_path)

    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["r"] == 2 * RANK  # [B | B0] [A ; -A0] of the untouched weight
    assert config["lora_alpha"] == pytest.approx(SCALE * 2 * RANK)
    loaded = peft.PeftModel.from_pretrained(_bert(), tmp_path).eval()
    _close(_logits(loaded), ours)
    _close(_logits(loaded.merge_and_unload()), ours)


@torch.no_grad()
def test_olora_matches_peft_olora():
    peft = require("peft")
    from peft.tuners.lora import LoraLayer

    targets = ["query", "value"]
    model = _bert()
    lorasweep.apply_variant(model, "olora", rank=RANK, alpha=ALPHA, target_modules=targets)
    variant = lorasweep.get_variant(model)
    config = peft.LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=targets,
                             init_lora_weights="olora")
    reference = peft.get_peft_model(_bert(), config)
    peers = {n.removeprefix("base_model.model."): m for n, m in reference.named_modules()
             if isinstance(m, LoraLayer)}
    assert sorted(peers) == sorted(variant.layers)
    base = _bert()
    for name, layer in variant.layers.items():
        peer = peers[name]
        pa, pb = peer.lora_A["default"].weight, peer.lora_B["default"].weight
        assert layer.scaling == pytest.approx(peer.scaling["default"])
        # QR is unique up to the sign of each column of Q (with the matching row of R): align
        # ours to peft's per component, then the tensors must agree. (Both call torch.linalg.qr
        # on the fp32 weight, so the signs agree already; the alignment only makes the test
        # independent of that.)
        sign = torch.sign((layer.lora_B * pb).sum(0))
        assert (sign != 0).all()
        layer.lora_B.mul_(sign)  # s·B A, hence the residual, is unchanged by the flips
        layer.lora_A.mul_(sign[:, None])
        _close(layer.lora_B, pb, atol=1e-6, msg=name)
        _close(layer.lora_A, pa, atol=1e-6, msg=name)
        _close(layer.base.weight, peer.get_base_layer().weight, atol=1e-6, msg=name)
        _close(layer.base.weight + layer.delta_weight(), base.get_submodule(name).weight,
               atol=1e-6, msg=name)
    _close(_logits(model), _logits(reference))
    _close(_logits(model), _logits(base))

    g = torch.Generator().manual_seed(5)
    for name, layer in variant.layers.items():
        peer = peers[name]
        da = 0.1 * torch.randn(layer.lora_A.shape, generator=g)
        db = 0.1 * torch.randn(layer.lora_B.shape, generator=g)
        layer.lora_A.add_(da)
        layer.lora_B.add_(db)
        peer.lora_A["default"].weight.add_(da)
        peer.lora_B["default"].weight.add_(db)
    ours = _logits(model)
    assert (ours - _logits(base)).abs().max() > 1e-2
    _close(ours, _logits(reference))
