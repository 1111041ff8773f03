"""A QLoRA trial (``model.quantize=nf4``) through ``run_trial`` on a tiny real BERT: it records
its base's storage, resumes bit for bit from a checkpoint that holds no 4-bit tensor, and its
adapter merges into the full-precision weights (as ``export --merge`` does)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import require_qlora
from safetensors.torch import load_file
from test_checkpoint import EVERY, KILL_AT, Crash, CrashAt, assert_same_trial, spec_for

from lorasweep.tasks import get_task
from lorasweep.train.checkpoint import checkpoint_path
from lorasweep.train.model import load_model
from lorasweep.train.trial import run_trial
from lorasweep.variants import get_variant, load_adapter, merge_and_unload

require_qlora()

NF4 = {"quantize": "nf4"}
VARIANTS = {"lora": {}, "dora": {}, "relora": {"merge_every": 3, "rewarm_steps": 2},
            "lora-ga": {}, "pissa": {}}


def _nf4(spec):
    return dataclasses.replace(spec, model_options=NF4)


@pytest.mark.parametrize("key", list(VARIANTS))
def test_a_qlora_trial_resumes_bit_for_bit(tiny_bert_dir, tmp_path, key):
    options = VARIANTS[key]
    whole = run_trial(_nf4(spec_for(tiny_bert_dir, tmp_path / "whole", key, options)))
    base = whole.attrs["base"]
    assert base["quantize"] == "nf4" and 4.1 < base["bits_per_param"] < 4.3

    lost = _nf4(spec_for(tiny_bert_dir, tmp_path, key, options, trial=0))
    with pytest.raises(Crash):
        run_trial(lost, CrashAt(KILL_AT))
    saved = torch.load(checkpoint_path(lost), weights_only=True)
    assert saved["loop"]["step"] == EVERY
    assert all(t.is_floating_point() or t.dtype == torch.int64 for t in saved["adapter"].values())
    resumed = run_trial(_nf4(spec_for(tiny_bert_dir, tmp_path, key, options, trial=1)))
    assert resumed.attrs["resumed_from_step"] == EVERY
    assert_same_trial(whole, resumed)


def test_the_base_is_recorded_and_merges_into_full_precision(tiny_bert_dir, tmp_path):
    plain = run_trial(spec_for(tiny_bert_dir, tmp_path / "plain"))
    quantized = run_trial(_nf4(spec_for(tiny_bert_dir, tmp_path / "nf4")))
    assert plain.attrs["base"]["quantize"] == "none"
    assert plain.attrs["base"]["bits_per_param"] == 32.0  # fp32 on CPU
    assert quantized.attrs["base"]["base_bytes"] < plain.attrs["base"]["base_bytes"]
    assert quantized.value == quantized.value  # a number (not NaN)

    # export --merge: the adapter onto a fresh full-precision model, merged there
    task = get_task("sentiment", eval_limit=8)
    adapter = f"{quantized.attrs['run_dir']}/adapter"
    model = load_adapter(load_model(str(tiny_bert_dir), task, 0, NF4).model, adapter)
    ids = torch.randint(0, 100, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        unmerged = model(input_ids=ids).logits
    assert all(not t.dtype == torch.uint8 for t in load_file(f"{adapter}/lorasweep_adapter"
                                                              ".safetensors").values())
    variant = get_variant(model)
    merged = merge_and_unload(model)
    assert variant.layers and not any(type(m).__name__ == "QuantizedLinear"
                                      for m in merged.modules())
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, unmerged, atol=1e-5, rtol=0)
