"""Every variant over a 4-bit NF4 base (``model.quantize=nf4``), against its declaration.

Real bitsandbytes NF4 (double quantisation) on CPU, on the contract tests' tiny Llama and BERT.
What each declaration promises (``Variant.quantized_base``):

* ``as-is``, ``dequantize``, ``offset``: the model starts *exactly* as the quantized base
  (its target linears holding ``deq(NF4(W))``), to float rounding (atol 1e-5);
* ``residual``, ``after-prepare``: the 4-bit storage is bit for bit ``NF4(W - s·B0 A0)``, the
  full-precision residual quantized once, and the model starts exactly as that (the start then
  differs from ``deq(NF4(W))`` by the NF4 error of the residual instead of that of ``W``);
* every one: the wrapped bases are quantized, nothing dense of ``W`` is kept for backward, the
  adapter's state holds no 4-bit tensor, an in-place merge is refused, it trains.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import require_qlora, tiny_bert
from test_contract import ALPHA, CASES, RANK, _output

import lorasweep
from lorasweep.variants import (
    VariantError,
    dense_weight,
    is_quantized,
    merge_and_unload,
    quantize_linear,
    registry,
)

require_qlora()

VARIANTS = sorted(registry())
#: The notes' table (docs: README "QLoRA"), written out: a declaration changes deliberately.
DECLARED = {
    **dict.fromkeys(["lora", "rslora", "loraplus", "lora-pro", "moslora", "melora", "loramoe",
                     "rasa", "denselora", "adalora", "aurora", "randlora", "eva"], "as-is"),
    "dora": "dequantize", "hira": "dequantize",
    **dict.fromkeys(["pissa", "milora", "olora", "goat", "nzlora", "delora"], "residual"),
    **dict.fromkeys(["lora-ga", "lora-one", "gora"], "after-prepare"),
    "relora": "offset",
}
#: The embedded MiniLM's layer shapes (hidden 384, 12 heads, MLP 1536), one block, random.
_MINILM = {"hidden_size": 384, "num_attention_heads": 12, "intermediate_size": 1536,
           "num_hidden_layers": 1}
QCASES = {
    "llama": CASES["llama"],
    "bert": CASES["bert"],
    "minilm-shapes": dataclasses.replace(CASES["bert"], kind="minilm-shapes",
                                         build=lambda: tiny_bert(**_MINILM), n_layers=6),
}


#: Learning rates where 5e-3 is not sane: LoRA+ trains B at 16x the rate (8e-2 overshoots on the
#: MiniLM shapes in 6 steps).
SANE_LR = {"loraplus": 5e-4}


def _adapt(case, key, quantize="none"):
    torch.manual_seed(0)
    model = case.build()
    lorasweep.apply_variant(model, key, rank=RANK, alpha=ALPHA, target_modules=case.target_modules,
                            modules_to_save=case.modules_to_save, quantize=quantize)
    variant = lorasweep.get_variant(model)
    variant.prepare(model, [case.inputs])
    variant.quantize_base()  # what the loop does before the optimizer
    return model, variant


@torch.no_grad()
def _hold_quantized(model, names) -> None:
    """Put ``deq(NF4(W))`` of each named linear (or adapter layer's base) into it, in place."""
    for name in names:
        module = model.get_submodule(name)
        linear = getattr(module, "base", module)
        linear.weight.copy_(dense_weight(quantize_linear(linear)))


def test_every_variant_declares_what_the_notes_say():
    assert {k: c.quantized_base for k, c in registry().items()} == DECLARED
    listed = {v["key"]: v["quantized_base"] for v in lorasweep.list_variants()}  # --json
    assert listed == DECLARED


@pytest.mark.parametrize("case", list(QCASES.values()), ids=list(QCASES))
@pytest.mark.parametrize("key", VARIANTS)
def test_variant_over_nf4_keeps_its_declaration(key, case):
    declared = registry()[key].quantized_base
    model, variant = _adapt(case, key, "nf4")
    assert all(is_quantized(layer.base) for layer in variant.layers.values())
    with torch.no_grad():
        got = _output(model, case)
    twin, twin_variant = _adapt(case, key)  # the same init on the full-precision base
    if declared in ("residual", "after-prepare"):
        for name, layer in variant.layers.items():
            assert layer.has_initial_update, name
            expected = quantize_linear(twin_variant.layers[name].base)
            assert torch.equal(layer.base.weight_q, expected.weight_q), name
            assert torch.equal(layer.base.quant_state.absmax, expected.quant_state.absmax), name
        _hold_quantized(twin, twin_variant.layers)  # twin: deq(NF4(W_res)) + its adapter
        with torch.no_grad():
            reference = _output(twin, case)
    else:
        base = case.build()
        _hold_quantized(base, variant.layers)
        with torch.no_grad():
            reference = _output(base, case)
    torch.testing.assert_close(got, reference, atol=1e-5, rtol=0)

    # backward: finite gradients on the adapter, none on the base; no dense W saved
    dense = [dense_weight(layer.base) for layer in variant.layers.values()]
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        _output(model, case).float().pow(2).mean().backward()
    kept = [t for t in saved for w in dense if t.shape == w.shape and torch.equal(t, w)]
    assert not kept, "a dense copy of a quantized W was kept for backward"
    grads = [p.grad for _, p in variant.adapter_parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(g is None or torch.isfinite(g).all() for g in grads)
    assert all(p.dtype == torch.float32 for _, p in variant.adapter_parameters())
    # the saved state is adapters only: no 4-bit tensor, nothing of W
    assert all(t.is_floating_point() or t.dtype == torch.int64 for t in variant.state_dict().values())
    if variant.mergeable:
        with pytest.raises(VariantError, match="quantized"):
            variant.merge()


@pytest.mark.parametrize("case", list(QCASES.values()), ids=list(QCASES))
@pytest.mark.parametrize("key", VARIANTS)
def test_variant_trains_over_nf4(key, case):
    model, variant = _adapt(case, key, "nf4")
    if case.kind == "llama":
        inputs = {**case.inputs, "labels": case.inputs["input_ids"]}
    else:
        inputs = {**case.inputs, "labels": torch.tensor([0, 1, 1])}
    variant.begin_training(6)
    optimizer = torch.optim.AdamW(variant.param_groups(SANE_LR.get(key, 5e-3)))
    losses = []
    for step in range(6):
        loss = model(**inputs).loss
        extra = variant.extra_loss()
        total = loss if extra is None else loss + extra
        optimizer.zero_grad()
        total.backward()
        variant.before_optimizer_step()
        optimizer.step()
        variant.after_optimizer_step(step + 1, optimizer)
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0], losses


def test_hira_function_gives_autograd_gradients_of_the_dequantized_weight():
    """``_HiraLinear``'s hand-written backward equals autograd over ``W + W ⊙ s·BA``."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(24, 20))
    lorasweep.apply_variant(model, "hira", rank=4, alpha=8, target_modules=["0"], quantize="nf4")
    variant = lorasweep.get_variant(model)
    variant.quantize_base()
    layer = variant.layers["0"]
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(2, 5, 24, requires_grad=True)
    layer(x).pow(2).sum().backward()
    w = dense_weight(layer.base)
    a, b = layer.lora_A.detach().clone().requires_grad_(), layer.lora_B.detach().clone().requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    y = torch.nn.functional.linear(x2, w + w * (layer.scaling * b @ a), layer.base.bias)
    y.pow(2).sum().backward()
    for ours, theirs in ((x.grad, x2.grad), (layer.lora_A.grad, a.grad), (layer.lora_B.grad, b.grad)):
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-5)


def test_train_eval_train_keeps_the_layout_and_the_outputs():
    """bitsandbytes' ``Linear4bit`` repacks its weight in eval mode without gradients on CPUs
    with AVX512-BF16; the seam never calls it, so eval between steps changes nothing."""
    case = CASES["llama"]
    model, variant = _adapt(case, "lora", "nf4")
    packed = {n: layer.base.weight_q.clone() for n, layer in variant.layers.items()}
    model.train()
    first = _output(model, case).detach()
    model.eval()
    with torch.no_grad():
        evaluated = _output(model, case)
    model.train()
    again = _output(model, case)
    again.float().pow(2).mean().backward()
    assert torch.equal(first, evaluated) and torch.equal(first, again.detach())
    for name, layer in variant.layers.items():
        assert torch.equal(layer.base.weight_q, packed[name]), name
        assert not getattr(layer.base.quant_state, "packing_format_for_cpu", False)


def test_relora_merges_stay_offsets_over_nf4():
    case = CASES["llama"]
    model, variant = _adapt(case, "relora", "nf4")
    packed = {n: layer.base.weight_q.clone() for n, layer in variant.layers.items()}
    with torch.no_grad():
        for layer in variant.layers.values():
            layer.lora_B.normal_(std=0.1)
        before = _output(model, case)
        for layer in variant.layers.values():
            layer.restart()
        after = _output(model, case)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)  # a merge keeps the function
    for name, layer in variant.layers.items():
        assert layer.merges == 1
        assert torch.equal(layer.base.weight_q, packed[name]), "nothing written into NF4"


def test_merge_and_unload_is_refused_on_a_quantized_base():
    model, _ = _adapt(CASES["llama"], "lora", "nf4")
    with pytest.raises(VariantError, match="lorasweep export --merge"):
        merge_and_unload(model)


def test_an_unknown_quantization_is_refused():
    with pytest.raises(VariantError, match="model.quantize must be one of none, nf4"):
        lorasweep.apply_variant(CASES["llama"].build(), "lora", quantize="int3")


@pytest.mark.parametrize(("out_features", "in_features"), [(32, 32), (16, 32), (48, 40), (7, 9)])
def test_nf4_byte_formula_is_what_bitsandbytes_stores(out_features, in_features):
    """The meta-device accounting (8B shapes) uses the formula; real layers hold exactly that."""
    from lorasweep.variants._quant import _weight_bytes, nf4_weight_bytes

    layer = quantize_linear(torch.nn.Linear(in_features, out_features))
    assert _weight_bytes(layer) == nf4_weight_bytes(out_features * in_features)
