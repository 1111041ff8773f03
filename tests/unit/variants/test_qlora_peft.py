"""peft's QLoRA as the oracle: over the same 4-bit weights, lorasweep's LoRA and DoRA train
along peft's loss trajectory step by step.

The tiny Llama is built twice from one seed. lorasweep quantizes its q/k/v/o itself
(``quantize="nf4"``); the peft copy gets bitsandbytes ``Linear4bit`` layers holding the very
same packed codes and quantisation state, and peft dispatches its own ``lora.Linear4bit`` onto
them (``is_loaded_in_4bit``). Both get the same random adapters and the same AdamW steps.
"""

from __future__ import annotations

import pytest
import torch
from helpers import require, require_qlora, tiny_llama

import lorasweep

bnb = require_qlora()
require("peft")
from peft import LoraConfig, get_peft_model  # noqa: E402
from peft.tuners.lora import LoraLayer  # noqa: E402

RANK, ALPHA, STEPS, LR = 4, 8.0, 5, 1e-2
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def _batch() -> dict[str, torch.Tensor]:
    ids = torch.randint(0, 100, (3, 10), generator=torch.Generator().manual_seed(5))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def _ours(key: str):
    model = tiny_llama()
    lorasweep.apply_variant(model, key, rank=RANK, alpha=ALPHA, target_modules=TARGETS,
                            quantize="nf4")
    variant = lorasweep.get_variant(model)
    variant.quantize_base()
    return model, variant


def _peft_over(variant, use_dora: bool):
    """peft's model over ``Linear4bit`` layers holding ``variant``'s quantized weights."""
    model = tiny_llama()
    for name, layer in variant.layers.items():
        q = layer.base
        linear = bnb.nn.Linear4bit(q.in_features, q.out_features, bias=q.bias is not None,
                                   compute_dtype=torch.float32, compress_statistics=True,
                                   quant_type="nf4")
        linear.weight = bnb.nn.Params4bit(q.weight_q.clone(), requires_grad=False,
                                          quant_state=q.quant_state, blocksize=64,
                                          compress_statistics=True, quant_type="nf4",
                                          bnb_quantized=True)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, linear)
    model.is_loaded_in_4bit = True
    model = get_peft_model(model, LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=TARGETS,
                                             use_dora=use_dora))
    layers = {n.removeprefix("base_model.model."): m for n, m in model.named_modules()
              if isinstance(m, LoraLayer)}
    assert all(type(m).__name__ == "Linear4bit" for m in layers.values())  # peft's bnb path
    return model, layers


@pytest.mark.parametrize("key", ["lora", "dora"])
def test_loss_trajectory_equals_peft_qlora(key):
    ours, variant = _ours(key)
    theirs, peft_layers = _peft_over(variant, use_dora=key == "dora")
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, layer in variant.layers.items():
            peer = peft_layers[name]
            if key == "dora":  # both take the magnitude from the dequantized 4-bit W
                torch.testing.assert_close(
                    layer.lora_magnitude, peer.lora_magnitude_vector["default"].weight,
                    atol=1e-6, rtol=0)
            a = 0.3 * torch.randn(layer.lora_A.shape, generator=g)
            b = 0.3 * torch.randn(layer.lora_B.shape, generator=g)
            layer.lora_A.copy_(a)
            peer.lora_A["default"].weight.copy_(a)
            layer.lora_B.copy_(b)
            peer.lora_B["default"].weight.copy_(b)
    mine = torch.optim.AdamW([p for _, p in variant.adapter_parameters()], lr=LR)
    peft_params = [p for n, p in theirs.named_parameters() if p.requires_grad]
    assert len(peft_params) == len(variant.adapter_parameters())
    other = torch.optim.AdamW(peft_params, lr=LR)
    trajectory = []
    for _ in range(STEPS):
        pair = []
        for model, optimizer in ((ours, mine), (theirs, other)):
            loss = model(**_batch()).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            pair.append(loss.item())
        trajectory.append(pair)
    ours_losses, peft_losses = zip(*trajectory, strict=True)
    assert ours_losses[-1] < ours_losses[0]
    assert ours_losses == pytest.approx(peft_losses, abs=1e-5), trajectory
