"""LoRA-Pro: the adjusted gradients solve the method's equations (checked against a direct
Kronecker solve), use each layer's real scale, and a few training steps run."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import lorasweep
from lorasweep.config import TrainConfig
from lorasweep.tasks import get_task
from lorasweep.train.loop import train
from lorasweep.variants.lora_pro import adjusted_gradients

F64 = torch.float64


def _direct(a, b, ga, gb, s):
    """The method's equations solved head-on in float64 (Kronecker form for the Sylvester)."""
    a, b, ga, gb = (t.to(F64) for t in (a, b, ga, gb))
    r = a.shape[0]
    btb_inv, aat_inv = torch.linalg.inv(b.t() @ b), torch.linalg.inv(a @ a.t())
    c = -(s**-2) * btb_inv @ ga @ a.t()
    eye = torch.eye(r, dtype=F64)
    # row-major vec: vec(P X Q) = (P ⊗ Qᵀ) vec(X)
    kron = torch.kron(b.t() @ b, eye) + torch.kron(eye, (a @ a.t()).t().contiguous())
    x = torch.linalg.solve(kron, c.reshape(-1)).reshape(r, r)
    assert torch.allclose(b.t() @ b @ x + x @ a @ a.t(), c, atol=1e-9)
    new_a = s**-2 * btb_inv @ ga + x @ a
    new_b = s**-2 * (torch.eye(b.shape[0], dtype=F64) - b @ btb_inv @ b.t()) @ gb @ aat_inv - b @ x
    return new_a, new_b


@pytest.mark.parametrize("scale", [1.0, 0.5, 2.0, 3.7])
def test_adjusted_gradients_match_a_direct_solution(scale):
    g = torch.Generator().manual_seed(0)
    shapes = [(4, 12, 20), (4, 7, 9), (4, 30, 5)]  # (r, in, out): different shapes, one batch
    a = [torch.randn(r, i, generator=g) for r, i, _ in shapes]
    b = [torch.randn(o, r, generator=g) for r, _, o in shapes]
    ga = [torch.randn(r, i, generator=g) for r, i, _ in shapes]
    gb = [torch.randn(o, r, generator=g) for r, _, o in shapes]
    for damping, atol in ((0.0, 1e-5), (1e-8, 1e-4)):
        got = adjusted_gradients(a, b, ga, gb, [scale] * 3, damping)
        for k in range(3):
            want_a, want_b = _direct(a[k], b[k], ga[k], gb[k], scale)
            torch.testing.assert_close(got[k][0].to(F64), want_a, atol=atol, rtol=1e-4)
            torch.testing.assert_close(got[k][1].to(F64), want_b, atol=atol, rtol=1e-4)


def test_zero_b_at_the_start_is_handled():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(4, 10, generator=g), torch.zeros(6, 4)
    gb = torch.randn(6, 4, generator=g)
    ((new_a, new_b),) = adjusted_gradients([a], [b], [torch.zeros(4, 10)], [gb], [2.0])
    assert torch.count_nonzero(new_a) == 0  # gA = s·BᵀG = 0, X = 0
    torch.testing.assert_close(new_b, 0.25 * gb @ torch.linalg.inv(a @ a.t()), rtol=1e-4, atol=1e-6)


def _mlp(alpha):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 20))
    lorasweep.apply_variant(model, "lora-pro", rank=4, alpha=alpha, target_modules=["0", "2"])
    variant = lorasweep.get_variant(model)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for layer in variant.layers.values():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g))
    return model, variant


@pytest.mark.parametrize("alpha", [4.0, 8.0, 32.0])
def test_equivalent_gradient_is_the_projected_full_gradient_with_the_real_scale(alpha):
    """``s (B g̃A + g̃B A) = P_B G + (I - P_B) G P_A``: true only with the layer's own ``s``."""
    model, variant = _mlp(alpha)
    for layer in variant.layers.values():
        layer.base.weight.requires_grad_(True)  # G = dL/dW = dL/d(ΔW)
    x = torch.randn(6, 12, generator=torch.Generator().manual_seed(3))
    model(x).pow(2).mean().backward()
    variant.before_optimizer_step()
    for layer in variant.layers.values():
        s = layer.scaling
        assert s == alpha / 4
        a, b, full = (t.to(F64) for t in (layer.lora_A, layer.lora_B, layer.base.weight.grad))
        ga, gb = layer.lora_A.grad.to(F64), layer.lora_B.grad.to(F64)
        proj_b = b @ torch.linalg.pinv(b)
        proj_a = torch.linalg.pinv(a) @ a
        expected = proj_b @ full + (torch.eye(b.shape[0], dtype=F64) - proj_b) @ full @ proj_a
        tol = 1e-4 * expected.abs().max().item()  # fp32 gradients
        torch.testing.assert_close(s * (b @ ga + gb @ a), expected, atol=tol, rtol=0)


def test_doubling_alpha_quarters_the_adjusted_gradients_of_the_same_raw_ones():
    adjusted = {}
    for alpha in (8.0, 16.0):
        model, variant = _mlp(alpha)
        g = torch.Generator().manual_seed(4)
        for layer in variant.layers.values():
            layer.lora_A.grad = torch.randn(layer.lora_A.shape, generator=g)
            layer.lora_B.grad = torch.randn(layer.lora_B.shape, generator=g)
        variant.before_optimizer_step()
        adjusted[alpha] = [(layer.lora_A.grad.clone(), layer.lora_B.grad.clone())
                           for layer in variant.layers.values()]
    for (a8, b8), (a16, b16) in zip(adjusted[8.0], adjusted[16.0], strict=True):
        torch.testing.assert_close(a16, a8 / 4, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(b16, b8 / 4, rtol=1e-4, atol=1e-7)
        assert not torch.allclose(a16, a8)


def test_a_few_training_steps_run_and_change_the_adapter(tiny_bert_dir):
    task = get_task("sentiment", eval_limit=8)
    data = task.load()
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    lorasweep.apply_variant(model, "lora-pro", rank=4, alpha=8, modules_to_save=["classifier"])
    variant = lorasweep.get_variant(model)
    before = {n: p.detach().clone() for n, p in variant.adapter_parameters()}
    cfg = TrainConfig(steps=4, batch_size=4, max_length=32)
    result = train(model, variant, task, tok, data, cfg, 1e-3, 0, torch.device("cpu"))
    assert not result.diverged and result.steps == 4
    for name, p in variant.adapter_parameters():
        assert torch.isfinite(p).all(), name
        assert not torch.equal(p, before[name]), f"{name} did not move"
