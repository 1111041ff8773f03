"""The one training loop on a tiny real BERT: schedule, hooks, determinism, divergence, pruning."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
from safetensors.torch import load_file

from lorasweep.config import TrainConfig, TrialSpec, VariantSpec
from lorasweep.tasks import get_task
from lorasweep.train.loop import lr_lambda, train
from lorasweep.train.model import load_model
from lorasweep.train.trial import run_trial
from lorasweep.variants import Variant, apply_variant


def test_warmup_then_cosine_decay():
    f = lr_lambda(TrainConfig(steps=100, warmup_ratio=0.1, schedule="cosine"), 100)
    warm = [f(s) for s in range(10)]
    assert all(b > a for a, b in zip(warm, warm[1:], strict=False)) and warm[-1] <= 1.0
    assert f(10) == pytest.approx(1.0)
    decay = [f(s) for s in range(10, 101)]
    assert all(b <= a for a, b in zip(decay, decay[1:], strict=False))
    assert f(55) == pytest.approx(0.5, abs=0.02) and f(100) == pytest.approx(0.0, abs=1e-9)


def test_linear_and_constant_schedules():
    lin = lr_lambda(TrainConfig(warmup_ratio=0.0, schedule="linear"), 10)
    assert [round(lin(s), 2) for s in (0, 5, 10)] == [1.0, 0.5, 0.0]
    const = lr_lambda(TrainConfig(warmup_ratio=0.0, schedule="constant"), 10)
    assert {const(s) for s in range(10)} == {1.0}


def _spec(model_dir, tmp_path, lr=1e-3, seed=0, name="t", **train) -> TrialSpec:
    cfg = {"steps": 4, "batch_size": 8, "max_length": 32, **train}
    return TrialSpec(sweep="s", study="st", storage="", trial_number=0, model=str(model_dir),
                     task="sentiment", task_options={"eval_limit": 24}, model_options={},
                     variant=VariantSpec("lora", rank=4, alpha=8), lr=lr, seed=seed,
                     train=TrainConfig(**cfg), run_dir=str(tmp_path / name))


def test_seeded_trials_are_reproducible_on_cpu(tiny_bert_dir, tmp_path):
    a = run_trial(_spec(tiny_bert_dir, tmp_path, name="a"))
    b = run_trial(_spec(tiny_bert_dir, tmp_path, name="b"))
    run_trial(_spec(tiny_bert_dir, tmp_path, seed=1, name="c"))
    assert a.metrics["final_loss"] == b.metrics["final_loss"]
    wa, wb, wc = (load_file(str(tmp_path / n / "adapter" / "lorasweep_adapter.safetensors"))
                  for n in "abc")
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)
    for key in ("tokens_per_second", "steps"):
        assert a.metrics[key] > 0
    assert a.attrs["peak_memory_mb"] > 0 and a.attrs["trainable_params"] > 0


def test_non_finite_loss_is_a_result_not_a_crash(tiny_bert_dir, tmp_path):
    result = run_trial(_spec(tiny_bert_dir, tmp_path, lr=1e12, steps=20))
    assert result.metrics["diverged"] is True
    assert result.value == get_task("sentiment").worst_score
    assert result.metrics["steps"] < 20
    assert not (tmp_path / "t" / "adapter").exists()  # nothing worth saving


def test_the_study_s_diverged_score_reaches_the_loop(tiny_bert_dir, tmp_path):
    """A minimizing study: a diverged trial records the study's score for one (its trial
    spec's), not the task's class attribute."""
    import dataclasses

    spec = dataclasses.replace(_spec(tiny_bert_dir, tmp_path, lr=1e12, steps=20),
                               direction="minimize", diverged_score=7.5)
    result = run_trial(spec)
    assert result.metrics["diverged"] is True and result.value == 7.5
    assert result.metrics["test_accuracy"] == 7.5 != get_task("sentiment").worst_score


def test_a_minimized_trial_measures_the_loss_it_starts_from(tiny_bert_dir, tmp_path):
    """Before its first step a minimizing trial scores validation with the adapter at its init:
    the same untrained model at every LR of a seed (LoRA's B starts at zero), also where the
    training then diverges; a maximizing trial spends no pass on it."""
    import dataclasses

    def minimized(lr, name):
        return dataclasses.replace(_spec(tiny_bert_dir, tmp_path, lr=lr, name=name),
                                   direction="minimize", diverged_score=7.5)

    low, wild = run_trial(minimized(1e-4, "low")), run_trial(minimized(1e12, "wild"))
    start = low.metrics["initial_validation_accuracy"]
    assert 0 <= start <= 1 and wild.metrics["initial_validation_accuracy"] == start
    assert wild.metrics["diverged"] and wild.value == 7.5  # measured before training diverged
    plain = run_trial(_spec(tiny_bert_dir, tmp_path, name="max"))
    assert "initial_validation_accuracy" not in plain.metrics


class _CountingVariant(Variant):
    """A LoRA that counts its hook calls and adds a known constant to the loss."""

    key, axis, summary = "counting", "baseline", "test double"

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.calls = {"param_groups": 0, "extra_loss": 0, "before": 0, "after": []}

    def param_groups(self, lr, weight_decay=0.0):
        self.calls["param_groups"] += 1
        return super().param_groups(lr, weight_decay)

    def extra_loss(self):
        self.calls["extra_loss"] += 1
        return torch.tensor(100.0)

    def before_optimizer_step(self):
        self.calls["before"] += 1
        assert all(p.grad is not None for _, p in self.adapter_parameters())

    def after_optimizer_step(self, step, optimizer):
        self.calls["after"].append(step)


class _Recorder:
    def __init__(self, prune_at=None):
        self.reports, self.prune_at, self.total = [], prune_at, None

    def on_start(self, total_steps):
        self.total = total_steps

    def on_step(self, step, loss):
        pass

    def report(self, step, value):
        self.reports.append((step, value))
        return self.prune_at is not None and step >= self.prune_at


def _tiny_setup(tiny_bert_dir):
    task = get_task("sentiment", eval_limit=16)
    data = task.load()
    loaded = load_model(str(tiny_bert_dir), task, 0)
    model, tok, heads = loaded.model, loaded.tokenizer, loaded.heads
    variant = _CountingVariant(rank=4, alpha=8)
    apply_variant(model, variant, modules_to_save=heads)
    return task, data, model, tok, variant


def test_loop_calls_every_hook_and_adds_extra_loss(tiny_bert_dir):
    task, data, model, tok, variant = _tiny_setup(tiny_bert_dir)
    cfg = TrainConfig(steps=3, batch_size=4, grad_accum=2, max_length=32, eval_every=1)
    recorder = _Recorder()
    result = train(model, variant, task, tok, data, cfg, 1e-3, 0, torch.device("cpu"), recorder)
    assert variant.calls["param_groups"] == 1
    assert variant.calls["extra_loss"] == 6  # 3 steps x 2 micro-batches
    assert variant.calls["before"] == 3 and variant.calls["after"] == [1, 2, 3]
    assert result.final_loss > 100  # the extra term entered the loss
    assert 0 < result.recent_loss < 5  # the task's loss alone: what ranks a rung's ties
    assert recorder.total == 3 and [s for s, _ in recorder.reports] == [1, 2]
    assert not math.isnan(result.test)


def test_pruned_trial_stops_early(tiny_bert_dir):
    task, data, model, tok, variant = _tiny_setup(tiny_bert_dir)
    cfg = TrainConfig(steps=10, batch_size=4, max_length=32, eval_every=2)
    result = train(model, variant, task, tok, data, cfg, 1e-3, 0, torch.device("cpu"),
                   _Recorder(prune_at=4))
    assert result.pruned and result.steps == 4 and math.isnan(result.test)


def test_a_classifier_scores_and_measures_its_loss_in_one_pass(tiny_bert_dir):
    """A rung's validation loss comes from the accuracy pass (one forward pass, not two): the
    same accuracy as evaluate, and the mean loss per example whatever the batching."""
    task, data, model, tok, _ = _tiny_setup(tiny_bert_dir)
    examples = data.validation[:10]
    calls = []
    forward = model.forward
    model.forward = lambda *a, **k: calls.append(1) or forward(*a, **k)
    model.train()
    score, uneven = task.evaluate_with_loss(model, tok, examples, 4, 32, contextlib.nullcontext)
    assert len(calls) == 3  # batches of 4, 4 and 2: one pass
    del model.forward
    assert model.training  # handed back in training mode
    assert score == task.evaluate(model, tok, examples, 4, 32, contextlib.nullcontext)
    _, whole = task.evaluate_with_loss(model, tok, examples, 10, 32, contextlib.nullcontext)
    model.eval()
    with torch.no_grad():  # each example alone, averaged by hand
        alone = [float(model(**task.collate(tok, [e], 32)).loss) for e in examples]
    assert whole == pytest.approx(sum(alone) / len(alone), rel=1e-4)
    assert uneven == pytest.approx(whole, rel=1e-4)


def test_a_task_without_a_one_pass_loss_leaves_it_to_the_caller(tiny_bert_dir):
    from lorasweep.tasks.base import Task

    task, data, model, tok, _ = _tiny_setup(tiny_bert_dir)
    score, loss = Task.evaluate_with_loss(task, model, tok, data.validation[:4], 4, 32,
                                          contextlib.nullcontext)
    assert math.isnan(loss) and score == task.evaluate(model, tok, data.validation[:4], 4, 32,
                                                       contextlib.nullcontext)


def test_a_training_set_smaller_than_a_batch_still_yields_batches():
    """Two examples and batch 4 drew no batch at all: the loop waited on an endless empty draw."""
    import itertools

    from lorasweep.train.loop import batch_order

    task = get_task("sentiment")
    examples = [{"text": "good", "label": 1}, {"text": "bad", "label": 0}]
    batches = list(itertools.islice(batch_order(task, examples, 4, seed=0), 3))
    assert [sorted(b) for b in batches] == [[0, 1]] * 3
    with pytest.raises(ValueError, match="training split is empty"):
        next(batch_order(task, [], 4, seed=0))
