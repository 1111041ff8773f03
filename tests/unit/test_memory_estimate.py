"""The memory estimate before the first trial: it grows with what costs memory, it agrees with a
real measured peak, and the check refuses what cannot fit in the budget each worker has.

The models are the embedded ones, read from their config on the meta device (no weights); the
measured peak is one real optimizer step of the embedded MiniLM in a fresh process
(``benchmarks/bench_memory.py``)."""

from __future__ import annotations

import dataclasses

import pytest

from lorasweep.config import SweepSpec, TrainConfig, VariantSpec
from lorasweep.sweep.memory import (
    CALIBRATION_FACTOR,
    LIMIT_ENV,
    OFF_ENV,
    check_memory,
    model_facts,
    parse_bytes,
    trial_memory,
)
from lorasweep.sweep.spec import SweepError


@pytest.fixture(scope="module")
def minilm():
    return model_facts("embedded:minilm", "sentiment")


@pytest.fixture(scope="module")
def smollm2():
    return model_facts("embedded:smollm2", "gsm8k")


def _total(facts, variant="lora", rank=8, quantize="none", **train) -> int:
    cfg = TrainConfig(**{"batch_size": 8, "max_length": 128, **train})
    return trial_memory(facts, VariantSpec(variant, rank=rank), cfg, {"quantize": quantize}
                        if quantize != "none" else None).total


def test_the_estimate_grows_with_batch_length_and_rank(minilm, smollm2):
    for facts in (minilm, smollm2):
        assert _total(facts, batch_size=4) < _total(facts) < _total(facts, batch_size=16)
        assert _total(facts, max_length=64) < _total(facts) < _total(facts, max_length=256)
        assert _total(facts, rank=4) < _total(facts) < _total(facts, rank=64)
        assert _total(facts, grad_accum=8) == _total(facts)  # micro-batches run one at a time
    assert _total(smollm2) > _total(minilm)  # 30 layers and a vocabulary's logits


def test_a_gradient_estimate_and_the_weights_dtype_count(smollm2):
    cfg = TrainConfig(batch_size=1, max_length=8)
    lora = trial_memory(smollm2, VariantSpec("lora"), cfg)
    ga = trial_memory(smollm2, VariantSpec("lora-ga"), cfg)
    assert lora.estimation == 0 and ga.estimation > ga.adapter and ga.total > lora.total
    none = trial_memory(smollm2, VariantSpec("lora-ga"), dataclasses.replace(cfg, estimation_batches=0))
    assert none.estimation == 0
    assert lora.weights == smollm2.params * 4  # fp32 on CPU
    assert trial_memory(smollm2, VariantSpec("lora"), cfg, device_type="cuda").weights == \
        smollm2.params * 2  # bf16 on CUDA (model.dtype=auto)


def test_parse_bytes():
    assert parse_bytes("2GiB") == 2 * 2**30 and parse_bytes("512 MiB") == 512 * 2**20
    assert parse_bytes("1.5G") == int(1.5 * 2**30) and parse_bytes("1000") == 1000
    with pytest.raises(ValueError, match="not a size"):
        parse_bytes("lots")


def test_the_estimate_agrees_with_a_measured_peak(minilm):
    """One real step of MiniLM at batch 16 x length 128 in a fresh process: the estimate of what
    the step adds (activations, adapter and optimizer) is at least its measured peak RSS growth,
    and within the calibration's factor of it."""
    from benchmarks.bench_memory import measure

    m = measure("embedded:minilm", "sentiment", 16, 128)
    step = m["peak"] - m["rss_before"]
    need = trial_memory(minilm, VariantSpec("lora"), TrainConfig(batch_size=16, max_length=128))
    estimate = need.activations + need.adapter
    assert step <= estimate <= CALIBRATION_FACTOR * step, (step / 2**20, estimate / 2**20)


def test_the_embedded_default_fits_a_laptop_budget_with_two_workers(monkeypatch):
    monkeypatch.setenv(LIMIT_ENV, "4GiB")
    spec = SweepSpec(variants=[VariantSpec(v) for v in ("lora", "loraplus", "adalora")],
                     launcher="local", workers=2)
    check_memory(spec)  # raises if refused


def test_the_study_gsm8k_budget_is_refused_in_one_line_naming_what_to_lower(monkeypatch):
    monkeypatch.setenv(LIMIT_ENV, "2GiB")
    spec = SweepSpec(model="embedded:smollm2", task="gsm8k", variants=[VariantSpec("lora-ga")],
                     launcher="local", workers=2)
    with pytest.raises(SweepError) as refused:
        check_memory(spec)
    line = str(refused.value)
    assert "\n" not in line and "a trial of lora-ga-r8-a16 on gsm8k needs about" in line
    assert "each worker has 1.0 GiB (2.0 GiB set by LORASWEEP_MEMORY_LIMIT / 2 workers)" in line
    for setting in ("--max-length (now 1024)", "--batch-size (now 16)", "--grad-accum",
                    "effective batch of 64", "--workers", "--try", f"{OFF_ENV}=off"):
        assert setting in line
    monkeypatch.setenv(OFF_ENV, "off")
    check_memory(spec)  # the override


@pytest.mark.gpu
def test_on_cuda_each_worker_has_the_gpus_free_memory_and_a_real_step_fits_the_estimate(minilm):
    """The GPU path (``python benchmarks/gpu_check.py`` runs it): the budget is the GPU's free
    memory, and one real bf16 step of MiniLM at 16 x 128 allocates no more than estimated."""
    import torch

    from lorasweep.sweep.memory import worker_memory
    from lorasweep.tasks import find_task
    from lorasweep.train.model import load_model
    from lorasweep.variants import apply_variant, get_variant

    have, whose = worker_memory(SweepSpec(launcher="inline"), "cuda", "cuda:0")
    assert 0 < have <= torch.cuda.mem_get_info(0)[1] and "free on the GPU" in whose
    loaded = load_model("embedded:minilm", find_task("sentiment"), 0, device_type="cuda")
    model = apply_variant(loaded.model, "lora", rank=8, modules_to_save=loaded.heads).cuda()
    optimizer = torch.optim.AdamW([p for g in get_variant(model).param_groups(1e-4) for p in g["params"]])
    ids = torch.randint(0, model.config.vocab_size, (16, 128), device="cuda")
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    model.train()
    model(input_ids=ids, attention_mask=torch.ones_like(ids),
          labels=torch.zeros(16, dtype=torch.long, device="cuda")).loss.backward()
    optimizer.step()
    step = torch.cuda.max_memory_allocated() - before
    need = trial_memory(minilm, VariantSpec("lora"), TrainConfig(batch_size=16, max_length=128),
                        device_type="cuda")
    assert step <= need.activations + need.adapter, (step / 2**20, need)
