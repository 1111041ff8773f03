"""The adapter base every variant is built on: one layer class, one model-level class, one registry.

A variant is two small classes in one file, registered under one key (``@register``):

* an :class:`AdapterLayer` subclass: the math of one wrapped ``nn.Linear``. It may override
  ``scaling`` (the scale ``s``), ``reset_adapter`` (the tensors' initialisation),
  ``delta_weight`` (the update ``ΔW``), ``adapter_output`` (``ΔW x`` without forming ``ΔW``),
  ``forward``, ``merged_weight`` (the weight that reproduces the layer), ``initial_update``
  (a non-zero start, kept as a residual) and ``peft_tensors`` (this layer in peft's format);
* a :class:`Variant` subclass: the registry entry (``key``, taxonomy ``axis``, one-line
  ``summary``, ``Options`` dataclass, ``study`` settings, ``peft_flags``, ``mergeable``) and the
  hooks that need the whole model, called in this order:

  - ``plan_layers(targets)``: before the layers are built (sizes of shared tensors);
  - ``prepare(model, batches)``: data-driven initialisation, before the optimizer exists;
  - ``param_groups(lr, weight_decay)``: the optimizer's groups (per-tensor learning rates);
  - ``begin_training(total_steps)``: once, before the first step;
  - ``lr_factor(step)``: a multiplier on the loop's schedule (restarts re-warm with it);
  - ``extra_loss()``: a term added to the task loss (regularisers, router balance);
  - ``before_optimizer_step()``: gradient rewrites, after backward and clipping;
  - ``after_optimizer_step(step, optimizer)``: rank allocation, periodic merges;
  - ``training_state()`` / ``load_training_state(state)``: what a checkpoint keeps beside the
    tensors (importance statistics, a schedule's position), so that a trial resumes exactly;
  - ``export()``: the adapter as peft LoRA tensors (the layers' ``peft_tensors``).

The training loop only ever calls the hooks; it never asks which variant it is running. Shared
pieces live in private modules beside this one (``_options``: options and their parsing;
``_registry``; ``_modules``: module types; ``_tensors``: new adapter tensors; ``_svd``,
``_gradients``: maths several variants share); base re-exports what a variant file needs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import nn

from ._modules import module_type, module_types
from ._options import A_INITS, AInitOptions, NoOptions, VariantError, init_lora_A, parse_options
from ._quant import dense_weight, is_quantized, quantize_linear
from ._registry import AXES, get_variant_class, register, registry
from ._tensors import adapter_dtype, new_factors
from .study import warn_if_off_study_rank

__all__ = [
    "AXES",
    "A_INITS",
    "AInitOptions",
    "AdapterLayer",
    "NoOptions",
    "Variant",
    "VariantError",
    "adapter_dtype",
    "dense_weight",
    "get_variant_class",
    "init_lora_A",
    "module_type",
    "module_types",
    "new_factors",
    "register",
    "registry",
]

class AdapterLayer(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update (plain LoRA math by default).

    ``y = W x + b + s · B A dropout(x)``, ``A ∈ R^{r×in}`` Kaiming-uniform, ``B ∈ R^{out×r}`` zero,
    ``s = alpha / r``. Subclasses override ``scaling``, ``reset_adapter``, ``delta_weight`` and
    ``forward`` as their math needs; everything else (merge, save, export) follows from those.

    A layer whose initial update ``s · B0 A0`` is not zero keeps ``B0``/``A0`` as buffers and
    writes the residual ``W - s · B0 A0`` into the frozen weight, so the model starts as the base
    model and can still be exported as a plain LoRA adapter of the untouched base weight.
    """

    def __init__(self, base: nn.Linear, variant: Variant):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise VariantError(f"{variant.key} wraps nn.Linear layers, got {type(base).__name__}")
        self.base = base
        self.base.weight.requires_grad_(False)
        if self.base.bias is not None:
            self.base.bias.requires_grad_(False)
        self.rank = variant.rank
        self.alpha = variant.alpha
        self.options = variant.options
        self.in_features = base.in_features
        self.out_features = base.out_features
        self.dropout = nn.Dropout(variant.dropout) if variant.dropout > 0 else nn.Identity()
        self.merged = False
        #: The base's storage during training (``Variant.quantize``): known before quantizing,
        #: so a layer can keep what it would write into ``W`` beside it instead (ReLoRA).
        self.quantize = variant.quantize
        factory = {"device": base.weight.device, "dtype": adapter_dtype(base.weight.dtype)}
        self.lora_A = nn.Parameter(torch.empty(self.rank, self.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, self.rank, **factory))

    # ----------------------------------------------------------------- the math, overridable
    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    @torch.no_grad()
    def reset_adapter(self) -> None:
        """Initialise the adapter tensors (called once, right after wrapping)."""
        init_lora_A(self.lora_A, self.options)
        nn.init.zeros_(self.lora_B)

    def delta_weight(self) -> torch.Tensor:
        """The update added to the frozen weight, ``out × in``, in the adapter's dtype."""
        return self.scaling * (self.lora_B @ self.lora_A)

    def adapter_output(self, x: torch.Tensor) -> torch.Tensor:
        """The update applied to an input: ``s · B A dropout(x)`` without forming ``B A``."""
        x = self.dropout(x)
        if x.dtype != self.lora_A.dtype and not torch.is_autocast_enabled(x.device.type):
            x = x.to(self.lora_A.dtype)  # half-precision base, fp32 adapter, no autocast
        return self.scaling * ((x @ self.lora_A.t()) @ self.lora_B.t())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.merged:
            return out
        return out + self.adapter_output(x).to(out.dtype)

    # --------------------------------------------------------------------- merge / unmerge
    def writable_weight(self) -> torch.Tensor:
        """The frozen weight, for an initialisation or a merge to write into: refused once it
        is quantized (``W`` is quantized once, after every write)."""
        if is_quantized(self.base):
            raise VariantError(
                "the base weight is quantized (model.quantize): nothing writes into it; merge "
                "into the full-precision weights instead (lorasweep export --merge)")
        return self.base.weight

    def merged_weight(self) -> torch.Tensor:
        """The weight that makes ``base(x)`` equal this layer's forward (dropout off)."""
        return self.base.weight + self.delta_weight().to(self.base.weight.dtype)

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            weight = self.writable_weight()
            self._unmerged_weight = weight.detach().clone()
            weight.copy_(self.merged_weight())
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.writable_weight().copy_(self._unmerged_weight)
            del self._unmerged_weight
            self.merged = False

    # ------------------------------------------------------ non-zero initial update support
    @torch.no_grad()
    def keep_initial_update(self) -> None:
        """Record ``B0, A0`` and write the residual ``W - s·B0 A0`` into the frozen weight."""
        self.register_buffer("lora_B0", self.lora_B.detach().clone(), persistent=True)
        self.register_buffer("lora_A0", self.lora_A.detach().clone(), persistent=True)
        self.subtract_initial_update()

    def initial_update(self) -> torch.Tensor:
        """The recorded initial update (``s·B0 A0``; a variant whose update is not ``s·BA``
        overrides this from its own recorded buffers), ``out × in``."""
        return self.scaling * (self.lora_B0 @ self.lora_A0)

    @torch.no_grad()
    def subtract_initial_update(self) -> None:
        weight = self.writable_weight()
        weight.sub_(self.initial_update().to(weight.dtype))

    @property
    def has_initial_update(self) -> bool:
        return hasattr(self, "lora_B0")

    @torch.no_grad()
    def set_rank(self, rank: int) -> None:
        """Re-create ``A`` (Kaiming) and ``B`` (zero) with another rank: for ranks chosen from
        data (GoRA, EVA) before the optimizer exists, and when loading such a layer. A recorded
        initial update is undone and kept as zeros of the new shape; rank 0 gives empty, frozen
        tensors (the layer adds nothing)."""
        if self.has_initial_update:
            weight = self.writable_weight()
            weight.add_(self.initial_update().to(weight.dtype))
        factory = {"device": self.lora_A.device, "dtype": self.lora_A.dtype}
        self.rank = rank
        self.lora_A = nn.Parameter(torch.zeros(rank, self.in_features, **factory), rank > 0)
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, **factory), rank > 0)
        if rank:
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        if self.has_initial_update:
            self.lora_B0 = torch.zeros_like(self.lora_B.detach())
            self.lora_A0 = torch.zeros_like(self.lora_A.detach())

    # -------------------------------------------------------------------- state for saving
    def adapter_state(self) -> dict[str, torch.Tensor]:
        """Trainable tensors and the buffers needed to rebuild the layer on a fresh base."""
        state = {n: p.detach() for n, p in self.named_parameters() if not n.startswith("base.")}
        state.update(
            {n: b.detach() for n, b in self.named_buffers() if not n.startswith("base.")}
        )
        return state

    def peft_tensors(self) -> dict[str, torch.Tensor]:
        """This layer as a peft LoRA, by peft's tensor names: ``lora_A.weight``,
        ``lora_B.weight``. A recorded initial update ``s·B0 A0`` makes it a LoRA of the
        untouched base weight of rank ``2r``: ``[B | B0] [A ; -A0]``."""
        a, b = self.lora_A.detach(), self.lora_B.detach()
        if self.has_initial_update:
            a = torch.cat([a, -self.lora_A0])
            b = torch.cat([b, self.lora_B0], dim=1)
        return {"lora_A.weight": a, "lora_B.weight": b}


class Variant:
    """The model-level side of a variant: its registry entry, options and training-loop hooks.

    One instance per adapted model; it holds the wrapped layers by module name. The defaults here
    are plain LoRA's: one parameter group, no extra loss, nothing around the optimizer step.
    """

    key: ClassVar[str] = ""
    axis: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    layer: ClassVar[type[AdapterLayer]] = AdapterLayer
    Options: ClassVar[type] = NoOptions
    #: How the exported peft ``LoraConfig`` marks this variant (``None``: no peft export).
    peft_flags: ClassVar[dict[str, Any] | None] = {}
    #: False for nonlinear updates (no weight reproduces the adapted layer); merge() refuses.
    mergeable: ClassVar[bool] = True
    #: How it runs over a quantized base (``model.quantize``): a key of
    #: :data:`~lorasweep.variants._quant.BASE_TREATMENTS`, checked by the contract tests.
    quantized_base: ClassVar[str] = "as-is"
    #: The study's settings where they differ from the protocol (r 8, alpha 16) or the option
    #: defaults: ``rank``, ``alpha``, ``options``, ``note`` (see :mod:`lorasweep.variants.study`).
    study: ClassVar[dict[str, Any]] = {}

    def __init__(self, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0, **options: Any):
        if not isinstance(rank, int) or rank <= 0:
            raise VariantError(f"rank must be a positive integer, got {rank!r}: pass e.g. --rank 8")
        if not alpha or alpha <= 0:
            raise VariantError(f"alpha must be positive, got {alpha!r}: pass e.g. --alpha 16")
        if not 0.0 <= dropout < 1.0:
            raise VariantError(f"dropout must be in [0, 1), got {dropout!r}")
        self.rank = rank
        self.alpha = float(alpha)
        self.dropout = float(dropout)
        self.options = self.parse_options(options)
        warn_if_off_study_rank(self)
        self.layers: dict[str, AdapterLayer] = {}
        #: The base's storage during training: "none", or "nf4" (set by ``apply_variant``).
        self.quantize = "none"
        self.modules_to_save: dict[str, nn.Module] = {}

    @classmethod
    def parse_options(cls, options: dict[str, Any]):
        """Build the Options dataclass, naming unknown options and the known ones."""
        return parse_options(cls.Options, cls.key, options)

    @classmethod
    def option_defaults(cls) -> dict[str, Any]:
        return dataclasses.asdict(cls.Options())

    def describe(self) -> dict[str, Any]:
        """The resolved configuration, as stored with every trial and adapter."""
        return {
            "variant": self.key,
            "rank": self.rank,
            "alpha": self.alpha,
            "dropout": self.dropout,
            "options": dataclasses.asdict(self.options),
            "target_modules": sorted(self.layers),
            "modules_to_save": sorted(self.modules_to_save),
        }

    # ----------------------------------------------------------------------- construction
    def build_layer(self, name: str, base: nn.Linear) -> AdapterLayer:
        layer = self.layer(base, self)
        layer.reset_adapter()
        self.layers[name] = layer
        return layer

    def plan_layers(self, targets: dict[str, nn.Linear]) -> None:
        """Called by ``apply_variant`` with every target layer (name -> linear, in module order)
        before the first :meth:`build_layer`. Variants whose layers share tensors size them here
        (e.g. by the number of layers of each :func:`module_type`); the default does nothing."""

    def quantize_base(self) -> None:
        """Quantize every wrapped layer's frozen linear (``self.quantize``), once: the loop calls
        this after the initialisations (``reset_adapter``, ``prepare``) and a resumed trial's
        :meth:`load_state_dict`, before the optimizer exists. A no-op for ``"none"``."""
        if self.quantize == "none":
            return
        for layer in self.layers.values():
            if not is_quantized(layer.base):
                layer.base = quantize_linear(layer.base, self.quantize)

    # ------------------------------------------------------------------------------ hooks
    def prepare(self, model: nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> dict:
        """Data-driven initialisation before the optimizer is built; returns facts to record."""
        return {}

    def adapter_parameters(self) -> list[tuple[str, nn.Parameter]]:
        seen: set[int] = set()
        out = []
        for lname, layer in self.layers.items():
            for pname, p in layer.named_parameters():
                if p.requires_grad and id(p) not in seen and not pname.startswith("base."):
                    seen.add(id(p))
                    out.append((f"{lname}.{pname}", p))
        return out

    def saved_module_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [
            (f"{mname}.{pname}", p)
            for mname, module in self.modules_to_save.items()
            for pname, p in module.named_parameters()
        ]

    def param_groups(self, lr: float, weight_decay: float = 0.0) -> list[dict[str, Any]]:
        """Optimizer parameter groups: the adapter tensors at ``lr``, then fully trained heads."""
        params = [p for _, p in self.adapter_parameters()]
        group = {"params": params, "lr": lr, "weight_decay": weight_decay, "name": "adapter"}
        return [group, *self.head_groups(lr, weight_decay)]

    def head_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        params = [p for _, p in self.saved_module_parameters()]
        if not params:
            return []
        return [{"params": params, "lr": lr, "weight_decay": weight_decay, "name": "heads"}]

    def begin_training(self, total_steps: int) -> None:
        """Called once by the loop before the first step, with the trial's step budget."""
        self.total_steps = total_steps

    def lr_factor(self, step: int) -> float:
        """A multiplier on the loop's schedule at ``step`` (restarts re-warm through this)."""
        return 1.0

    def extra_loss(self) -> torch.Tensor | None:
        """A term added to the task loss (regularisers, router balance); ``None`` for none."""
        return None

    def before_optimizer_step(self) -> None:
        """Runs after backward (and clipping), before ``optimizer.step()``: gradient rewrites."""

    def after_optimizer_step(self, step: int, optimizer: torch.optim.Optimizer) -> None:
        """Runs after each optimizer step (rank allocation, periodic merges)."""

    def training_state(self) -> dict[str, Any]:
        """State the variant keeps outside its tensors, for a checkpoint (tensors, numbers,
        lists and dicts of them): e.g. importance statistics and a budget schedule's position.
        Tensors of the layers (ranks, initial updates, merges) are in :meth:`state_dict`
        already; a resumed trial loads them and does not run ``prepare`` again."""
        return {}

    def load_training_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`training_state` (called after ``begin_training``, before the step)."""

    def export(self) -> dict[str, torch.Tensor]:
        """The adapter in peft's LoRA format, by module path: every layer's
        :meth:`AdapterLayer.peft_tensors`, then the fully trained modules' parameters. Only
        called where ``peft_flags`` is not ``None``."""
        tensors = {
            f"{lname}.{k}": v
            for lname, layer in self.layers.items()
            for k, v in layer.peft_tensors().items()
        }
        tensors.update({k: p.detach() for k, p in self.saved_module_parameters()})
        return tensors

    # ---------------------------------------------------------------------- whole-model ops
    def merge(self) -> None:
        """Fold the update into the weights, in place (refused on a quantized base)."""
        if not self.mergeable:
            raise VariantError(f"variant {self.key!r} is nonlinear in its input: it cannot merge")
        for layer in self.layers.values():
            layer.merge()

    def unmerge(self) -> None:
        for layer in self.layers.values():
            layer.unmerge()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Adapter tensors (and buffers) of every layer, plus the fully trained modules."""
        state = {}
        for lname, layer in self.layers.items():
            for k, v in layer.adapter_state().items():
                state[f"{lname}.{k}"] = v
        state.update({k: p.detach() for k, p in self.saved_module_parameters()})
        return state

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load tensors saved by :meth:`state_dict` (the model must be freshly wrapped)."""
        for name, p in self.saved_module_parameters():
            p.copy_(state[name].to(p.dtype))
        for lname, layer in self.layers.items():
            prefix = f"{lname}."
            mine = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            saved_a = mine.get("lora_A")
            if saved_a is not None and saved_a.shape != layer.lora_A.shape:
                layer.set_rank(saved_a.shape[0])  # a rank chosen from data (GoRA, EVA)
            # undo the fresh init's residual and apply the saved one (unless they are the same)
            refold = layer.has_initial_update and not all(
                torch.equal(mine[k].to(b.device), b) for k, b in
                (("lora_B0", layer.lora_B0), ("lora_A0", layer.lora_A0)) if k in mine)
            if refold:
                weight = layer.writable_weight()
                weight.add_(layer.initial_update().to(weight.dtype))
            for k, v in mine.items():
                target = layer.get_parameter(k) if k in dict(layer.named_parameters()) else None
                if target is None:
                    target = layer.get_buffer(k)
                target.copy_(v.to(target.dtype))
            if refold:
                layer.subtract_initial_update()
