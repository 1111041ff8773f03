"""AdaLoRA: the rank budget really falls during a training run, the orthogonality penalty enters
the loss, and peft's AdaLoRA (as an oracle) computes the same outputs, penalty and masks."""

from __future__ import annotations

import pytest
import torch
from helpers import bert_batch, require, tiny_bert
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

import lorasweep
from lorasweep.config import TrainConfig
from lorasweep.tasks import get_task
from lorasweep.train.loop import train
from lorasweep.variants import VariantError
from lorasweep.variants.adalora import budget_at, effective_phases


def _nonzero_e(variant) -> int:
    return sum(int((layer.lora_E != 0).sum()) for layer in variant.layers.values())


# ------------------------------------------------------------------------------- schedule
def test_budget_schedule_warmup_cubic_fall_then_target():
    args = dict(init_budget=120, target_budget=80, tinit=100, tfinal=900, total=2000, delta_t=1)
    assert budget_at(1, **args) == (120, False)
    assert budget_at(100, **args) == (120, False)  # warm-up: full budget, no mask
    assert budget_at(600, **args) == (int(40 * 0.5**3 + 80), True)  # half-way: cubic
    assert budget_at(1100, **args) == (80, True)  # end of the fall
    assert budget_at(1500, **args) == (80, True)
    falling = [budget_at(s, **args)[0] for s in range(100, 1101)]
    assert all(b <= a for a, b in zip(falling, falling[1:], strict=False))
    every_10 = {**args, "delta_t": 10}
    assert not budget_at(605, **every_10)[1] and budget_at(610, **every_10)[1]


def test_short_trials_shrink_the_phases_instead_of_never_pruning():
    assert effective_phases(2000, 100, 900) == (100, 900)  # room for a fall: unchanged
    assert effective_phases(200, 100, 900) == (10, 90)  # half the run, in the ratio 1 : 9
    for total in (1, 2, 7, 50, 1000):
        tinit, tfinal = effective_phases(total, 100, 900)
        assert total - tfinal > tinit >= 0, total


def test_rank_is_the_target_and_init_r_defaults_to_one_and_a_half_times_it():
    variant = lorasweep.variants.get_variant_class("adalora")(rank=8)
    assert (variant.init_r, variant.target_r) == (12, 8)  # the study's settings
    variant = lorasweep.variants.get_variant_class("adalora")(rank=8, init_r=16, target_r=4)
    assert (variant.init_r, variant.target_r) == (16, 4)
    with pytest.raises(VariantError, match="target_r"):
        lorasweep.variants.get_variant_class("adalora")(rank=8, init_r=6)
    with pytest.raises(VariantError, match="deltaT"):
        lorasweep.variants.get_variant_class("adalora")(rank=8, deltaT=0)


# ----------------------------------------------------------------- a real training run
class _CountE:
    def __init__(self, variant):
        self.variant, self.counts = variant, []

    def on_start(self, total_steps):
        pass

    def on_step(self, step, loss):  # called after the loop's after_optimizer_step
        self.counts.append(_nonzero_e(self.variant))

    def report(self, step, value):
        return False


def _setup(tiny_bert_dir, **options):
    task = get_task("sentiment", eval_limit=8)
    data = task.load()
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    lorasweep.apply_variant(
        model, "adalora", rank=4, alpha=8, modules_to_save=["classifier"], **options
    )
    return task, data, model, tok, lorasweep.get_variant(model)


@pytest.mark.parametrize(
    "options, steps",
    [({}, 16), ({"tinit": 3, "tfinal": 4, "deltaT": 2}, 14)],
    ids=["study-defaults-short-trial", "explicit-phases"],
)
def test_masked_rank_budget_falls_to_the_target_in_a_training_run(tiny_bert_dir, options, steps):
    task, data, model, tok, variant = _setup(tiny_bert_dir, **options)
    n = len(variant.layers)
    cfg = TrainConfig(steps=steps, batch_size=4, max_length=32)
    recorder = _CountE(variant)
    train(model, variant, task, tok, data, cfg, 1e-2, 0, torch.device("cpu"), recorder)

    init, target = variant.init_r * n, variant.target_r * n
    assert (init, target) == (6 * n, 4 * n)
    counts = recorder.counts
    assert len(counts) == steps
    assert counts[-1] == target, "the allocator never brought the budget to target_r · n"
    tinit, tfinal = effective_phases(steps, variant.options.tinit, variant.options.tfinal)
    assert (variant.tinit, variant.tfinal) == (tinit, tfinal)
    at_masks = []
    for step, count in enumerate(counts, start=1):
        budget, mask = budget_at(step, init, target, tinit, tfinal, steps, variant.options.deltaT)
        assert count <= init
        if step <= tinit:
            assert count == init, f"step {step}: pruned during warm-up"
        if mask:  # between masks (deltaT > 1) AdamW may revive masked entries: soft pruning
            assert count == budget, f"step {step}: {count} nonzero E entries, budget {budget}"
            at_masks.append(count)
    assert all(b <= a for a, b in zip(at_masks, at_masks[1:], strict=False))
    assert len({c for c in at_masks if target < c < init}) >= 2, f"no gradual fall: {counts}"
    assert all(c == target for c in counts[steps - tfinal - 1 :])


def test_orthogonality_penalty_is_positive_and_enters_the_loss(tiny_bert_dir):
    *_, variant = _setup(tiny_bert_dir, orth_reg_weight=1.0)
    penalty = variant.extra_loss()
    expected = sum(
        torch.linalg.matrix_norm(layer.lora_A @ layer.lora_A.t() - torch.eye(6))
        + torch.linalg.matrix_norm(layer.lora_B.t() @ layer.lora_B - torch.eye(6))
        for layer in variant.layers.values()
    ) / (2 * len(variant.layers))
    assert penalty > 0.5
    torch.testing.assert_close(penalty, expected)
    penalty.backward()
    for layer in variant.layers.values():
        assert layer.lora_A.grad.abs().sum() > 0 and layer.lora_B.grad.abs().sum() > 0
    *_, off = _setup(tiny_bert_dir, orth_reg_weight=0.0)
    assert off.extra_loss() is None

    cfg = TrainConfig(steps=1, batch_size=4, max_length=32)
    losses = {}
    for weight in (0.0, 100.0):
        task, data, model, tok, v = _setup(tiny_bert_dir, orth_reg_weight=weight)
        initial = v.extra_loss()
        result = train(model, v, task, tok, data, cfg, 1e-3, 0, torch.device("cpu"))
        losses[weight] = (result.final_loss, 0.0 if initial is None else initial.item())
    assert losses[100.0][0] - losses[0.0][0] == pytest.approx(losses[100.0][1], rel=1e-4)


# ------------------------------------------------------------------------- peft as oracle
RANK, INIT_R, ALPHA = 4, 6, 8.0
TARGETS = ["query", "value"]


def _bert() -> torch.nn.Module:
    return tiny_bert(initializer_range=0.2).eval()


def _pair(total=8, tinit=0, tfinal=2, weight=0.5):
    """Our AdaLoRA and peft's on the same tiny BERT, with the same (perturbed) A, E, B."""
    peft = require("peft")
    ours = _bert()
    lorasweep.apply_variant(ours, "adalora", rank=RANK, alpha=ALPHA, target_modules=TARGETS,
                            tinit=tinit, tfinal=tfinal, orth_reg_weight=weight)
    variant = lorasweep.get_variant(ours)
    variant.begin_training(total)
    config = peft.AdaLoraConfig(
        init_r=INIT_R, target_r=RANK, lora_alpha=ALPHA, target_modules=TARGETS,
        total_step=total, tinit=tinit, tfinal=tfinal, orth_reg_weight=weight,
    )
    theirs = peft.get_peft_model(_bert(), config)
    g = torch.Generator().manual_seed(3)
    peft_layers = {}
    with torch.no_grad():
        for name, layer in variant.layers.items():
            layer.lora_E.copy_(torch.randn(INIT_R, generator=g))  # E = 0 would hide E's math
            module = theirs.base_model.model.get_submodule(name)
            module.lora_A["default"].copy_(layer.lora_A)
            module.lora_E["default"].copy_(layer.lora_E[:, None])
            module.lora_B["default"].copy_(layer.lora_B)
            peft_layers[name] = module
    return ours, variant, theirs, peft_layers


def test_same_weights_give_peft_adaloras_outputs_and_penalty():
    ours, variant, theirs, _ = _pair()
    with torch.no_grad():
        ours_out = ours(**bert_batch())
        peft_out = theirs.base_model(**bert_batch())  # AdaLoraModel.forward adds the penalty
    torch.testing.assert_close(ours_out.logits, peft_out.logits, atol=1e-5, rtol=0)
    # peft adds orth_reg_weight · penalty to the loss itself; we add it through extra_loss()
    with torch.no_grad():
        total = ours_out.loss + variant.extra_loss()
    torch.testing.assert_close(total, peft_out.loss, atol=1e-5, rtol=0)


def test_allocator_steps_match_peft_rank_allocator():
    ours, variant, theirs, peft_layers = _pair(total=8, tinit=0, tfinal=2)
    allocator = theirs.base_model.rankallocator
    for step in (1, 2, 3):
        for model in (ours, theirs):
            model.zero_grad()
        (ours(**bert_batch()).loss + variant.extra_loss()).backward()
        theirs.base_model(**bert_batch()).loss.backward()
        variant.after_optimizer_step(step, None)
        theirs.base_model.update_and_allocate(step)

        scores = variant.triplet_scores()
        budget, _ = budget_at(step, variant.init_budget, variant.target_budget, 0, 2, 8, 1)
        assert variant.budget == budget < variant.init_budget
        for name, module in peft_layers.items():
            prefix = f"{name}.%s.default"
            score_a = allocator._element_score(prefix % "lora_A").mean(dim=1)
            score_b = allocator._element_score(prefix % "lora_B").mean(dim=0)
            peft_scores = allocator._element_score(prefix % "lora_E").view(-1) + score_a + score_b
            torch.testing.assert_close(scores[name], peft_scores, rtol=1e-4, atol=1e-12)
            peft_e = module.lora_E["default"].detach().view(-1)
            layer_e = variant.layers[name].lora_E.detach()
            assert torch.equal(layer_e == 0, peft_e == 0), f"step {step}: masks differ at {name}"
            torch.testing.assert_close(layer_e, peft_e, atol=1e-6, rtol=0)
        assert _nonzero_e(variant) == budget
