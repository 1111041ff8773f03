"""The worker cache: one load per (model, task, device), pristine weights before every trial."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from lorasweep.config import TrainConfig, TrialSpec, VariantSpec
from lorasweep.tasks import get_task
from lorasweep.train.cache import WorkerCache, weights_checksum
from lorasweep.train.model import load_model
from lorasweep.train.trial import run_trial


def _spec(model: Path, tmp_path: Path, variant: VariantSpec, n: int, seed: int = 0,
          lr: float = 5e-3) -> TrialSpec:
    return TrialSpec(sweep="cache", study="s", storage="sqlite://", trial_number=n,
                     model=str(model), task="sentiment", task_options={"eval_limit": 16},
                     model_options={}, variant=variant, lr=lr, seed=seed,
                     train=TrainConfig(steps=4, batch_size=8, max_length=32, estimation_batches=2),
                     run_dir=str(tmp_path / f"trial-{n}"))


def _fresh_checksum(model: Path, seed: int) -> str:
    """The checksum of a freshly loaded model whose heads are initialised from ``seed``."""
    task = get_task("sentiment")
    loaded = load_model(str(model), task, seed)
    WorkerCache._reinit_heads(loaded, seed)
    return weights_checksum(loaded.model)


def test_reused_model_is_pristine_after_residual_writes_and_merges(tiny_bert_dir, tmp_path):
    cache = WorkerCache(enabled=True)
    import lorasweep.train.cache as cache_module

    variants = [VariantSpec("pissa", rank=4, alpha=8),  # writes W - s B0 A0 into W
                VariantSpec("relora", rank=4, alpha=8, options={"merge_every": 2}),  # merges BA
                VariantSpec("lora", rank=4, alpha=8)]
    pristine = {0: _fresh_checksum(tiny_bert_dir, 0), 1: _fresh_checksum(tiny_bert_dir, 1)}
    results = []
    old, cache_module._CACHE = cache_module._CACHE, cache
    try:
        for n, variant in enumerate(variants):
            seed = n % 2
            spec = _spec(tiny_bert_dir, tmp_path, variant, n, seed=seed)
            if n:  # before the trial: the reused model is the freshly loaded one, byte for byte
                loaded = cache.model(spec.model, get_task("sentiment", eval_limit=16), spec.task,
                                     seed, {}, _cpu())
                assert weights_checksum(loaded.model) == pristine[seed]
            results.append(run_trial(spec))
            if variant.key in ("pissa", "relora"):  # the trial wrote into the frozen weights
                assert _frozen_weights_changed(cache)
    finally:
        cache_module._CACHE = old
    assert cache.stats.model_loads == 1 and cache.stats.model_reuses == 2 + 2  # +2: the checks
    assert cache.stats.data_loads == 1 and cache.stats.data_reuses == 2
    # the same trials on fresh models give the same results: nothing leaks between trials
    fresh = WorkerCache(enabled=False)
    cache_module._CACHE = fresh
    try:
        for n, variant in enumerate(variants):
            again = run_trial(_spec(tiny_bert_dir, tmp_path / "fresh", variant, n, seed=n % 2))
            assert math.isclose(again.metrics["final_loss"], results[n].metrics["final_loss"],
                                rel_tol=1e-5)
            assert again.value == results[n].value
    finally:
        cache_module._CACHE = old
    assert fresh.stats.model_loads == 3 and fresh.stats.model_reuses == 0


def _frozen_weights_changed(cache: WorkerCache) -> bool:
    import torch

    from lorasweep.variants.base import AdapterLayer

    changed = False
    for name, module in cache._loaded.model.named_modules():
        if isinstance(module, AdapterLayer):
            changed |= not torch.equal(module.base.weight.cpu(), cache._pristine[f"{name}.weight"])
    return changed


def _cpu():
    import torch

    return torch.device("cpu")


def test_other_model_options_load_again(tiny_bert_dir, tmp_path):
    cache = WorkerCache(enabled=True)
    task = get_task("sentiment", eval_limit=16)
    first = cache.model(str(tiny_bert_dir), task, "sentiment", 0, {}, _cpu())
    same = cache.model(str(tiny_bert_dir), task, "sentiment", 1, {}, _cpu())
    assert same is first and cache.stats.model_reuses == 1
    other = cache.model(str(tiny_bert_dir), task, "sentiment", 0, {"dtype": "bf16"}, _cpu())
    assert other is not first and cache.stats.model_loads == 2
    assert {p.dtype for p in other.model.parameters()} == {__import__("torch").bfloat16}


@pytest.mark.parametrize("enabled", [True, False])
def test_heads_depend_only_on_the_seed(tiny_bert_dir, enabled):
    cache = WorkerCache(enabled=enabled)
    task = get_task("sentiment", eval_limit=16)
    a = weights_checksum(cache.model(str(tiny_bert_dir), task, "sentiment", 3, {}, _cpu()).model)
    cache.model(str(tiny_bert_dir), task, "sentiment", 4, {}, _cpu())
    b = weights_checksum(cache.model(str(tiny_bert_dir), task, "sentiment", 3, {}, _cpu()).model)
    assert a == b == _fresh_checksum(tiny_bert_dir, 3)
