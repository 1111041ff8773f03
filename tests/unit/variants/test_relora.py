"""ReLoRA: merges keep the model's function, happen at the right steps, reset the adapters'
optimizer state, re-warm the learning rate, and the saved adapter holds every merge."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import lorasweep
from lorasweep.config import TrainConfig
from lorasweep.tasks import get_task
from lorasweep.train.loop import lr_lambda, train


def _mlp_case(**options):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 20), nn.ReLU(),
                          nn.Linear(20, 3))
    lorasweep.apply_variant(model, "relora", rank=4, alpha=8, target_modules=["0", "2"],
                            modules_to_save=["4"], **options)
    x = torch.randn(5, 12, generator=torch.Generator().manual_seed(1))
    return model, lorasweep.get_variant(model), x


def _step(model, optimizer, x):
    optimizer.zero_grad()
    model(x).pow(2).mean().backward()
    optimizer.step()


def test_merge_leaves_the_function_unchanged_and_restarts_the_adapter():
    model, variant, x = _mlp_case(merge_every=2)
    variant.begin_training(10)
    optimizer = torch.optim.AdamW(variant.param_groups(1e-2))
    for step in (1, 2):
        _step(model, optimizer, x)
        with torch.no_grad():
            before = model(x)
        weights = {n: layer.base.weight.clone() for n, layer in variant.layers.items()}
        variant.after_optimizer_step(step, optimizer)
        with torch.no_grad():
            after = model(x)
        torch.testing.assert_close(after, before, atol=1e-5, rtol=0)
    assert variant.merge_count == 1
    for name, layer in variant.layers.items():
        assert not torch.equal(layer.base.weight, weights[name]), "W += s·BA did not happen"
        assert torch.count_nonzero(layer.lora_B) == 0 and layer.lora_A.abs().sum() > 0
        assert layer.lora_merged_A.shape == (4, layer.in_features)
        assert layer.lora_merged_B.shape == (layer.out_features, 4)


def test_adapter_optimizer_state_is_reset_at_a_merge_and_heads_keep_theirs():
    model, variant, x = _mlp_case(merge_every=3)
    variant.begin_training(10)
    optimizer = torch.optim.AdamW(variant.param_groups(1e-2))
    head = next(p for _, p in variant.saved_module_parameters())
    for step in (1, 2, 3):
        _step(model, optimizer, x)
        variant.after_optimizer_step(step, optimizer)
        if step == 2:  # (at step 1 B = 0 gives A a zero gradient)
            assert all(optimizer.state[p]["exp_avg"].abs().sum() > 0
                       for _, p in variant.adapter_parameters())
    for name, p in variant.adapter_parameters():
        state = optimizer.state[p]
        assert torch.count_nonzero(state["exp_avg"]) == 0, name
        assert torch.count_nonzero(state["exp_avg_sq"]) == 0, name
        assert int(state["step"]) == 0, name  # bias correction restarts as for a fresh tensor
    assert optimizer.state[head]["exp_avg"].abs().sum() > 0 and int(
        optimizer.state[head]["step"]) == 3
    _step(model, optimizer, x)  # AdamW carries on from the reset state
    assert all(torch.isfinite(p).all() for _, p in variant.adapter_parameters())


@pytest.mark.parametrize(
    "total, merge_every, expected",
    [(10, 0, [2, 4, 6, 8]), (12, 0, [3, 6, 9]), (40, 0, [10, 20, 30]), (10, 3, [3, 6, 9]),
     (3, 0, [])],
)
def test_merge_steps_over_a_run(total, merge_every, expected):
    model, variant, x = _mlp_case(merge_every=merge_every)
    variant.begin_training(total)
    optimizer = torch.optim.SGD(variant.param_groups(1e-3))
    merged_at = []
    for step in range(1, total + 1):  # the loop's order: step, hook
        _step(model, optimizer, x)
        count = variant.merge_count
        variant.after_optimizer_step(step, optimizer)
        if variant.merge_count > count:
            merged_at.append(step)
    assert merged_at == expected
    assert variant.merge_count == len(expected)
    if merge_every == 0 and total >= 4:
        assert 3 <= len(expected) <= 5  # the study's 3 to 5 merges


def test_lr_factor_ramps_back_up_after_each_merge():
    model, variant, x = _mlp_case(rewarm_steps=4)
    variant.begin_training(40)  # merges after steps 10, 20, 30
    factors = [variant.lr_factor(s) for s in range(40)]
    assert factors[:10] == [1.0] * 10  # the loop's own warm-up covers the start
    for merge in (10, 20, 30):
        # scheduler index s sets the LR of optimizer step s + 1: the 4 steps after the merge
        assert factors[merge : merge + 5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert factors[35:] == [1.0] * 5
    assert lorasweep.variants.get_variant_class("relora")(rewarm_steps=0).lr_factor(10) == 1.0

    # through the loop's scheduler: the LR right after a merge is a fifth of the cosine's
    optimizer = torch.optim.AdamW(variant.param_groups(1.0))
    schedule = lr_lambda(TrainConfig(steps=40, warmup_ratio=0.0), 40)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: schedule(s) * variant.lr_factor(s)
    )
    lrs = []
    for _ in range(40):
        lrs.append(optimizer.param_groups[0]["lr"])  # the LR this optimizer step uses
        optimizer.step()
        scheduler.step()
    assert lrs[10] == pytest.approx(schedule(10) * 0.2)  # step 11, the first after the merge
    assert lrs[14] == pytest.approx(schedule(14))


def test_train_end_to_end_then_fresh_base_plus_saved_adapter_is_the_trained_model(
    tiny_bert_dir, tmp_path
):
    task = get_task("sentiment", eval_limit=8)
    data = task.load()

    def build():
        torch.manual_seed(0)
        return AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)

    model, tok = build(), AutoTokenizer.from_pretrained(tiny_bert_dir)
    lorasweep.apply_variant(model, "relora", rank=4, alpha=8, modules_to_save=["classifier"],
                            rewarm_steps=2)
    variant = lorasweep.get_variant(model)
    before = {n: layer.base.weight.clone() for n, layer in variant.layers.items()}
    cfg = TrainConfig(steps=8, batch_size=4, max_length=32)
    result = train(model, variant, task, tok, data, cfg, 1e-2, 0, torch.device("cpu"))
    assert not result.diverged and result.steps == 8
    assert variant.merge_count == 3  # after steps 2, 4, 6
    assert all(not torch.equal(layer.base.weight, before[n])
               for n, layer in variant.layers.items())

    batch = task.collate(tok, data.validation[:4], 32)
    batch.pop("labels", None)
    model.eval()
    with torch.no_grad():
        expected = model(**batch).logits
    lorasweep.save_adapter(model, tmp_path)
    fresh = lorasweep.load_adapter(build(), tmp_path)
    assert lorasweep.get_variant(fresh).merge_count == 3
    assert not (tmp_path / "adapter_config.json").exists()  # no peft export (peft_flags None)
    fresh.eval()
    with torch.no_grad():
        got = fresh(**batch).logits
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    for name, layer in lorasweep.get_variant(fresh).layers.items():
        assert torch.equal(layer.base.weight, variant.layers[name].base.weight), name
