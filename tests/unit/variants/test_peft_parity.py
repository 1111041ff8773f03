"""peft as an oracle: our variants compute what peft computes, and our exports load in peft.

peft is only ever imported here (never from ``lorasweep/``). Every test builds the same tiny
random BERT classifier twice from one seed, adapts one copy with lorasweep and the other with
peft, puts the same tensors into both and compares logits (and gradients, and merges).
"""

from __future__ import annotations

import json

import pytest
import torch
from helpers import bert_batch, require, tiny_bert
from torch import nn

import lorasweep

peft = require("peft")
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from peft.tuners.lora import LoraLayer  # noqa: E402

RANK, ALPHA = 4, 8.0
TARGETS = ["query", "value"]
PEFT_PREFIX = "base_model.model."


def _bert() -> nn.Module:
    return tiny_bert(initializer_range=0.2).eval()  # logits of order 1: differences show


def _logits(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(**bert_batch()).logits


def _ours(key: str, target_modules=TARGETS, **options):
    model = _bert()
    lorasweep.apply_variant(
        model, key, rank=RANK, alpha=ALPHA, target_modules=target_modules, **options
    )
    return model, lorasweep.get_variant(model)


def _peft(**config) -> tuple[nn.Module, dict[str, LoraLayer]]:
    config = {"r": RANK, "lora_alpha": ALPHA, "target_modules": TARGETS, **config}
    model = get_peft_model(_bert(), LoraConfig(**config))
    layers = {
        name.removeprefix(PEFT_PREFIX): m
        for name, m in model.named_modules()
        if isinstance(m, LoraLayer)
    }
    return model, layers


def _peft_magnitude(layer: LoraLayer) -> torch.Tensor:
    return layer.lora_magnitude_vector["default"].weight


def _close(actual, expected, atol=1e-5, msg=None):
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0, msg=msg)


@torch.no_grad()
def _same_random_adapters(variant, peft_layers, seed=3):
    """Write the same random A, B (and DoRA magnitude) into our layers and peft's."""
    g = torch.Generator().manual_seed(seed)
    assert sorted(variant.layers) == sorted(peft_layers)
    for name, ours in variant.layers.items():
        theirs = peft_layers[name]
        a = 0.3 * torch.randn(ours.lora_A.shape, generator=g)
        b = 0.3 * torch.randn(ours.lora_B.shape, generator=g)
        for dst in (ours.lora_A, theirs.lora_A["default"].weight):
            dst.copy_(a)
        for dst in (ours.lora_B, theirs.lora_B["default"].weight):
            dst.copy_(b)
        if hasattr(ours, "lora_magnitude"):
            m = ours.lora_magnitude * (1 + 0.2 * torch.randn(ours.out_features, generator=g))
            ours.lora_magnitude.copy_(m)
            _peft_magnitude(theirs).copy_(m)


# ------------------------------------------------------------------- forward/backward/merge
@pytest.mark.parametrize("key", ["lora", "rslora", "dora"])
def test_same_adapters_give_peft_logits_grads_and_merge(key):
    model, variant = _ours(key)
    reference, peft_layers = _peft(use_rslora=key == "rslora", use_dora=key == "dora")
    for name, layer in variant.layers.items():  # scales agree before anything is copied
        assert layer.scaling == pytest.approx(peft_layers[name].scaling["default"])
    if key == "dora":  # both initialise the magnitude from W, independently
        for name, layer in variant.layers.items():
            _close(layer.lora_magnitude, _peft_magnitude(peft_layers[name]), atol=1e-6, msg=name)
    _close(_logits(model), _logits(reference), atol=1e-6)  # both start as the base model

    _same_random_adapters(variant, peft_layers)
    ours, theirs = _logits(model), _logits(reference)
    assert (ours - _logits(_bert())).abs().max() > 1e-2, "the adapters should change the logits"
    _close(ours, theirs)

    # gradients of every adapter tensor agree too
    model(**bert_batch()).loss.backward()
    reference(**bert_batch()).loss.backward()
    for name, layer in variant.layers.items():
        peer = peft_layers[name]
        _close(layer.lora_A.grad, peer.lora_A["default"].weight.grad, atol=1e-6, msg=name)
        _close(layer.lora_B.grad, peer.lora_B["default"].weight.grad, atol=1e-6, msg=name)
        if key == "dora":
            _close(layer.lora_magnitude.grad, _peft_magnitude(peer).grad, atol=1e-6, msg=name)

    variant.merge()
    merged_reference = reference.merge_and_unload()
    for name, layer in variant.layers.items():
        _close(layer.base.weight, merged_reference.get_submodule(name).weight, msg=name)
    _close(_logits(model), _logits(merged_reference))
    _close(_logits(model), ours)


# -------------------------------------------------------------------------------------- PiSSA
def _components(b: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``b_i a_iᵀ`` for every rank component i (``r × out × in``): free of the SVD's signs."""
    return torch.einsum("oi,ij->ioj", b, a)


@torch.no_grad()
def test_pissa_exact_svd_matches_peft_pissa():
    model, variant = _ours("pissa", niter=0)
    reference, peft_layers = _peft(init_lora_weights="pissa")
    base = _bert()
    for name, layer in variant.layers.items():
        peer = peft_layers[name]
        a, b = peer.lora_A["default"].weight, peer.lora_B["default"].weight
        _close(_components(layer.lora_B, layer.lora_A), _components(b, a), msg=name)
        _close(layer.base.weight, peer.get_base_layer().weight, atol=1e-6, msg=name)
        # and the residual plus the adapter is the untouched weight
        untouched = base.get_submodule(name).weight
        _close(layer.base.weight + layer.delta_weight(), untouched, atol=1e-6, msg=name)
    _close(_logits(model), _logits(reference))
    _close(_logits(model), _logits(base))

    # align the sign of each component with peft's, then both must be the same tensors
    g = torch.Generator().manual_seed(5)
    for name, layer in variant.layers.items():
        peer = peft_layers[name]
        pa, pb = peer.lora_A["default"].weight, peer.lora_B["default"].weight
        sign = torch.sign((layer.lora_B * pb).sum(0))
        assert (sign != 0).all()
        layer.lora_B.mul_(sign)
        layer.lora_A.mul_(sign[:, None])
        _close(layer.lora_A, pa, msg=name)
        _close(layer.lora_B, pb, msg=name)
        da = 0.1 * torch.randn(pa.shape, generator=g)
        db = 0.1 * torch.randn(pb.shape, generator=g)
        for a, b in ((layer.lora_A, layer.lora_B), (pa, pb)):
            a.add_(da)
            b.add_(db)
    ours = _logits(model)
    assert (ours - _logits(base)).abs().max() > 1e-2
    _close(ours, _logits(reference))


@torch.no_grad()
def test_pissa_randomized_svd_captures_the_exact_subspace():
    _, exact = _ours("pissa", niter=0)
    _, fast = _ours("pissa")  # default: randomised, niter=64
    assert fast.options.niter == 64
    for name, layer in fast.layers.items():
        want = exact.layers[name].delta_weight()
        got = layer.delta_weight()
        rel = (got - want).norm() / want.norm()
        assert rel < 1e-3, f"{name}: randomised PiSSA off the exact subspace by {rel:.2e}"
        _close(layer.base.weight, exact.layers[name].base.weight, atol=1e-5, msg=name)


# -------------------------------------------------------------------------------------- export
@pytest.mark.parametrize("key", ["lora", "rslora", "dora", "loraplus", "pissa"])
def test_export_loads_in_peft_with_the_same_logits(key, tmp_path):
    model = _bert()
    lorasweep.apply_variant(
        model,
        key,
        rank=RANK,
        alpha=ALPHA,
        target_modules="all-linear",
        modules_to_save=["classifier"],
    )
    variant = lorasweep.get_variant(model)
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for _, p in variant.adapter_parameters() + variant.saved_module_parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    ours = _logits(model)
    assert (ours - _logits(_bert())).abs().max() > 1e-2
    lorasweep.save_adapter(model, tmp_path)

    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["r"] == (2 * RANK if key == "pissa" else RANK)
    assert config["modules_to_save"] == ["classifier"]
    loaded = PeftModel.from_pretrained(_bert(), tmp_path).eval()
    _close(_logits(loaded), ours)
    # the head really came from the file, not from the fresh model's initialisation
    head = loaded.base_model.model.classifier.modules_to_save["default"]
    _close(head.weight, model.classifier.weight, atol=0)
    # and peft's merge of our export serves the same function
    _close(_logits(loaded.merge_and_unload()), ours)
