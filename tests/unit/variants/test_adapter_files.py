"""Saved adapters are readable like every other output: the user's umask, not owner-only."""

from __future__ import annotations

import os
import stat

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import lorasweep


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_adapter_files_follow_the_umask(tmp_path, umask, mode):
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    lorasweep.apply_variant(model, "lora", rank=2, target_modules=["0"])  # peft format too
    old = os.umask(umask)
    try:
        out = lorasweep.save_adapter(model, tmp_path / "adapter")
    finally:
        os.umask(old)
    files = sorted(p.name for p in out.iterdir())
    assert "adapter_model.safetensors" in files and "lorasweep_adapter.safetensors" in files
    for path in out.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == mode, path.name
    saved = load_file(str(out / "lorasweep_adapter.safetensors"))  # the same tensors as before
    expected = lorasweep.get_variant(model).state_dict()
    assert saved.keys() == expected.keys()
    for key, tensor in expected.items():
        torch.testing.assert_close(saved[key], tensor)
