"""Wrap a model's target linear layers with a variant's adapter layers, in place."""

from __future__ import annotations

from typing import Any

from torch import nn

from ._quant import require_backend
from .base import AdapterLayer, Variant, VariantError, get_variant_class

__all__ = ["DEFAULT_TARGETS", "apply_variant", "default_targets", "get_variant", "merge_and_unload",
           "remove_variant", "resolve_targets"]

#: Default target modules per architecture family (``config.model_type``).
DEFAULT_TARGETS: dict[str, list[str]] = {
    "bert": ["query", "value"],
    "roberta": ["query", "key", "value", "attention.output.dense"],  # the study's q/k/v/o
    "distilbert": ["q_lin", "v_lin"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "clip_vision_model": ["q_proj", "v_proj"],
    "clip": ["q_proj", "v_proj"],
}
#: Output heads never wrapped by ``all-linear``.
_HEADS = ("lm_head", "classifier", "score", "qa_outputs", "pooler.dense")
_ATTR = "_lorasweep_variant"


def default_targets(model: nn.Module) -> list[str]:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in DEFAULT_TARGETS:
        return list(DEFAULT_TARGETS[model_type])
    raise VariantError(
        f"no default target modules for model type {model_type!r}: "
        "pass target_modules (e.g. --set target_modules=q_proj,v_proj or all-linear)"
    )


def resolve_targets(model: nn.Module, target_modules: list[str] | str | None) -> list[str]:
    """Names of the ``nn.Linear`` modules to wrap (exact name or dotted suffix match)."""
    if target_modules is None:
        target_modules = default_targets(model)
    if isinstance(target_modules, str):
        target_modules = [t for t in target_modules.split(",") if t]
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if target_modules == ["all-linear"]:
        names = [n for n in linears if not any(n == h or n.endswith("." + h) for h in _HEADS)]
    else:
        names = [n for n in linears if any(n == t or n.endswith("." + t) for t in target_modules)]
    if not names:
        raise VariantError(
            f"no linear layer matches target modules {target_modules}: "
            "check the names with model.named_modules() or use all-linear"
        )
    return names


def apply_variant(
    model: nn.Module,
    variant: str | Variant = "lora",
    rank: int = 8,
    alpha: float = 16.0,
    target_modules: list[str] | str | None = None,
    dropout: float = 0.0,
    modules_to_save: list[str] | None = None,
    quantize: str = "none",
    **variant_options: Any,
) -> nn.Module:
    """Freeze ``model`` and wrap its target linear layers with ``variant`` adapters, in place.

    ``modules_to_save`` names modules (e.g. a fresh classification head) that train fully and
    are saved with the adapter. ``quantize="nf4"`` makes the variant quantize the wrapped
    linears when :meth:`Variant.quantize_base` is called (after its initialisations). Returns the model; :func:`get_variant` gives the variant object
    whose hooks the training loop calls.
    """
    if getattr(model, _ATTR, None) is not None:
        raise VariantError("model already has a lorasweep variant applied; load a fresh model")
    if isinstance(variant, str):
        variant = get_variant_class(variant)(rank, alpha, dropout, **variant_options)
    if quantize != "none":
        require_backend(quantize)  # a missing extra stops here, before anything is built
    variant.quantize = quantize
    names = resolve_targets(model, target_modules)
    for p in model.parameters():
        p.requires_grad_(False)
    variant.plan_layers({name: model.get_submodule(name) for name in names})
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, variant.build_layer(name, getattr(parent, child)))
    for name in modules_to_save or []:
        module = model.get_submodule(name)
        for p in module.parameters():
            p.requires_grad_(True)
        variant.modules_to_save[name] = module
    object.__setattr__(model, _ATTR, variant)
    return model


def get_variant(model: nn.Module) -> Variant:
    variant = getattr(model, _ATTR, None)
    if variant is None:
        raise VariantError("model has no lorasweep variant: call lorasweep.apply_variant first")
    return variant


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Fold the variant's update into the base weights (``W' = W + ΔW``) and put the plain
    layers back, in place: the model as its library built it, every parameter trainable, no
    lorasweep left in it. Only for a variant whose update is a weight (``mergeable``)."""
    import torch

    variant = get_variant(model)
    if not variant.mergeable:
        raise VariantError(f"{variant.key} is nonlinear in its input: it has no merged weights")
    with torch.no_grad():
        variant.merge()
    remove_variant(model)  # the plain Linears, now holding W + ΔW
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def remove_variant(model: nn.Module) -> nn.Module:
    """Undo :func:`apply_variant`, in place: each adapter layer gives back its ``base`` module as
    it is now (weights a merge wrote into it stay), and the model forgets its variant."""
    for name, module in list(model.named_modules()):
        if isinstance(module, AdapterLayer):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.base)
    if hasattr(model, _ATTR):
        object.__delattr__(model, _ATTR)
    return model
