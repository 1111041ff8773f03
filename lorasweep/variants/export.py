"""Save and load adapters: lorasweep's own format, and peft's LoRA format for serving.

lorasweep format (every variant): ``lorasweep_adapter.json`` (variant, rank, alpha, options,
targets) + ``lorasweep_adapter.safetensors`` (the variant's state dict).

peft format (variants whose math peft's ``LoraConfig`` expresses): ``adapter_config.json`` +
``adapter_model.safetensors``. A variant that starts from a non-zero update ``s·B0 A0`` (PiSSA)
changed the frozen weight to ``W - s·B0 A0``; it is exported as a rank-``2r`` LoRA of the
untouched weight, ``[B | B0] [A ; -A0]``, with alpha chosen to keep the scale ``s``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save
from torch import nn

from .base import Variant
from .inject import apply_variant, get_variant

__all__ = ["export_peft", "load_adapter", "save_adapter"]

_NATIVE_CONFIG = "lorasweep_adapter.json"
_NATIVE_WEIGHTS = "lorasweep_adapter.safetensors"
_PEFT_PREFIX = "base_model.model."


def save_adapter(model: nn.Module, out_dir: str | Path, base_model: str | None = None) -> Path:
    """Write the adapter in lorasweep's format, and in peft's where the variant allows it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    variant = get_variant(model)
    config = {**variant.describe(), "base_model": base_model}
    (out / _NATIVE_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True))
    _save_tensors(variant.state_dict(), out / _NATIVE_WEIGHTS)
    if variant.peft_flags is not None:
        export_peft(model, out, base_model=base_model)
    return out


def load_adapter(model: nn.Module, adapter_dir: str | Path) -> nn.Module:
    """Apply the saved variant to a fresh ``model`` and load its tensors."""
    adapter_dir = Path(adapter_dir)
    config = json.loads((adapter_dir / _NATIVE_CONFIG).read_text())
    apply_variant(
        model,
        config["variant"],
        rank=config["rank"],
        alpha=config["alpha"],
        dropout=config["dropout"],
        target_modules=config["target_modules"],
        modules_to_save=config["modules_to_save"],
        **config["options"],
    )
    get_variant(model).load_state_dict(load_file(str(adapter_dir / _NATIVE_WEIGHTS)))
    return model


def export_peft(model: nn.Module, out_dir: str | Path, base_model: str | None = None) -> Path:
    """Write ``adapter_config.json`` + ``adapter_model.safetensors`` that peft loads as-is."""
    variant = get_variant(model)
    if variant.peft_flags is None:
        raise ValueError(f"variant {variant.key!r} has no peft LoRA equivalent")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = variant.export()
    ranks = [t.shape[0] for k, t in tensors.items() if k.endswith(".lora_A.weight")]
    rank = ranks[-1] if ranks else variant.rank
    _save_tensors({f"{_PEFT_PREFIX}{k}": t for k, t in tensors.items()},
                  out / "adapter_model.safetensors")
    (out / "adapter_config.json").write_text(
        json.dumps(_peft_config(variant, rank, base_model), indent=2, sort_keys=True)
    )
    return out


def _peft_config(variant: Variant, rank: int, base_model: str | None) -> dict[str, Any]:
    flags = dict(variant.peft_flags or {})
    scale = next(iter(variant.layers.values())).scaling
    alpha = scale * (math.sqrt(rank) if flags.get("use_rslora") else rank)
    return {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": base_model,
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": variant.dropout,
        "target_modules": sorted(variant.layers),
        "modules_to_save": sorted(variant.modules_to_save) or None,
        "bias": "none",
        "fan_in_fan_out": False,
        "init_lora_weights": True,
        "use_rslora": bool(flags.get("use_rslora", False)),
        "use_dora": bool(flags.get("use_dora", False)),
        "inference_mode": True,
        "rank_pattern": {},
        "alpha_pattern": {},
    }


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Write a safetensors file with the permissions of any other output (the user's umask:
    usually readable by the group); safetensors' own ``save_file`` makes it owner-only."""
    path.write_bytes(save(_contiguous(tensors)))


def _contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Own, contiguous CPU copies: safetensors refuses tensors that share storage (a weight
    shared by several layers appears once per layer in a state dict)."""
    return {k: v.detach().cpu().clone().contiguous() for k, v in tensors.items()}


