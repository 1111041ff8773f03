"""What the gradient-driven inits share (LoRA-GA, LoRA-One, GoRA): their options, the estimate
``G`` of each target weight's gradient (:func:`estimate_gradients`), and the layer whose initial
update comes from it (:class:`GradientInitLayer`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
from torch import nn

from ._svd import check_niter, principal_components
from .base import AdapterLayer, VariantError

__all__ = [
    "GradientInitLayer",
    "GradientOptions",
    "SvdGradientOptions",
    "batch_loss",
    "check_positive",
    "check_rank_fits",
    "estimate_gradients",
    "gradient_components",
]

_GRAD_DEVICES = ("same", "cpu")


@dataclasses.dataclass
class GradientOptions:
    """The options every gradient-estimating variant has. How many batches the estimate
    averages is not one of them: the variant uses every batch ``prepare`` is given, and a trial
    gives it ``train.estimation_batches`` (:class:`lorasweep.config.TrainConfig` owns it)."""

    #: Where the fp32 gradient sums live: "same" (the weight's device) or "cpu".
    grad_device: str = "same"

    def check(self, key: str) -> None:
        if self.grad_device not in _GRAD_DEVICES:
            raise VariantError(
                f"{key} grad_device must be 'same' or 'cpu', got {self.grad_device!r}"
            )


@dataclasses.dataclass
class SvdGradientOptions(GradientOptions):
    """The options of the inits on the SVD of ``G`` (LoRA-GA, LoRA-One). What ``gamma`` scales,
    and its default, are each variant's: a subclass sets ``key`` and declares ``gamma``."""

    #: The variant's registry key, which its error messages name.
    key: ClassVar[str] = ""
    #: The init's scale (each variant's own default).
    gamma: float = 1.0
    #: Subspace iterations of the randomised SVD of ``G``; 0 computes the exact SVD.
    niter: int = 4

    def validate(self) -> None:
        self.check(self.key)
        check_niter(self.key, self.niter)
        check_positive(self.key, "gamma", self.gamma)


def check_positive(key: str, name: str, value: float) -> None:
    if not value > 0:
        raise VariantError(f"{key} {name} must be positive, got {value}")


def check_rank_fits(key: str, name: str, needed: int, weight: torch.Tensor) -> None:
    if needed > min(weight.shape):
        out, inp = weight.shape
        raise VariantError(
            f"{key} needs {needed} singular components of {name} ({inp} -> {out}): "
            "lower the rank or leave this layer out of the target modules"
        )


def batch_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, bool]:
    """The model's own loss on ``batch``; without labels (no loss), the surrogate
    ``mean(output²)``, so that shape-only inputs (the contract tests') still give gradients.
    Returns the loss and whether it is the surrogate."""
    out = model(**batch)
    loss = getattr(out, "loss", None)
    if loss is not None:
        return loss, False
    logits = out if isinstance(out, torch.Tensor) else out[0]
    return logits.float().pow(2).mean(), True


def _accumulate_into(total: torch.Tensor) -> Callable[[nn.Parameter], None]:
    def hook(param: nn.Parameter) -> None:  # runs as soon as autograd has written param.grad
        total.add_(param.grad.to(total.device, torch.float32))
        param.grad = None

    return hook


def estimate_gradients(
    model: nn.Module,
    layers: dict[str, AdapterLayer],
    batches: Iterable[dict[str, torch.Tensor]],
    grad_device: str = "same",
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``G``: the mean gradient of the loss w.r.t. each target weight over all ``batches``.

    Only the target weights require grad during the estimate (every other tensor, adapters and
    heads included, is frozen; all flags are restored after). Each weight's gradient is added
    into one fp32 sum (on ``grad_device``) the moment autograd writes it, and dropped: memory is
    one sum per target weight plus one gradient in flight, with no per-batch copies. The model
    runs in training mode (as peft and the reference code do, so that gradient checkpointing
    stays on) and is put back in its mode. Returns ``{layer name: G}`` (fp32) and the facts.
    """
    sums: dict[str, torch.Tensor] = {}
    owned: dict[int, tuple[nn.Parameter, torch.Tensor]] = {}  # a tied weight is summed once
    for name, layer in layers.items():
        w = layer.base.weight
        if id(w) not in owned:
            device = torch.device("cpu") if grad_device == "cpu" else w.device
            owned[id(w)] = (w, torch.zeros(w.shape, dtype=torch.float32, device=device))
        sums[name] = owned[id(w)][1]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    handles, used, surrogate = [], 0, False
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        for w, total in owned.values():
            w.grad = None
            w.requires_grad_(True)
            handles.append(w.register_post_accumulate_grad_hook(_accumulate_into(total)))
        model.train()
        for batch in batches:
            with torch.enable_grad():
                loss, surrogate = batch_loss(model, batch)
                if not torch.isfinite(loss.detach()).all():
                    raise VariantError(
                        f"non-finite loss ({float(loss.detach().float()):g}) on estimation "
                        f"batch {used + 1}: the gradient estimate cannot use it"
                    )
                loss.backward()
            used += 1
    finally:
        for handle in handles:
            handle.remove()
        for w, _ in owned.values():
            w.grad = None
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)
    if used == 0:
        raise VariantError(
            "no batches to estimate the gradient from: a gradient-based init needs at least one "
            "training batch (train.estimation_batches >= 1)"
        )
    for _, total in owned.values():
        total.div_(used)
    for name, g in sums.items():
        if not torch.isfinite(g).all():
            raise VariantError(f"non-finite gradient estimate for {name} over {used} batches")
        if not g.any():
            raise VariantError(
                f"the gradient of {name} is zero on all {used} estimation batches: "
                "the layer does not affect the loss; leave it out of the target modules"
            )
    return sums, _gradient_facts(owned.values(), used, surrogate, grad_device)


def _gradient_facts(owned, used: int, surrogate: bool, grad_device: str) -> dict[str, Any]:
    sums_bytes = sum(t.nbytes for _, t in owned)
    # one weight gradient in flight, plus its fp32 copy when the sum differs in dtype or device
    in_flight = max(
        w.numel() * w.element_size()
        + (0 if (w.dtype, w.device) == (t.dtype, t.device) else t.nbytes)
        for w, t in owned
    )
    return {
        "batches": used,
        "loss": "surrogate mean(output^2): batches without labels" if surrogate else "model",
        "grad_device": grad_device,
        "gradient_sums": len(owned),
        "gradient_sums_mb": round(sums_bytes / 2**20, 3),
        "peak_extra_memory_mb": round((sums_bytes + in_flight) / 2**20, 3),
    }


class GradientInitLayer(AdapterLayer):
    """A layer whose initial update comes from data. Until ``prepare`` runs it is plain LoRA
    (``A`` Kaiming, ``B = 0``) with a recorded initial update of zero, so an unprepared layer is
    valid (it starts as the base layer) and a saved adapter loads onto a fresh one."""

    @torch.no_grad()
    def reset_adapter(self) -> None:
        super().reset_adapter()
        self.register_buffer("lora_B0", torch.zeros_like(self.lora_B.detach()), persistent=True)
        self.register_buffer("lora_A0", torch.zeros_like(self.lora_A.detach()), persistent=True)

    @torch.no_grad()
    def start_from(self, lora_B: torch.Tensor, lora_A: torch.Tensor) -> None:
        """Make ``(B, A)`` the adapter and its initial update; the frozen weight becomes
        ``W - s·B A`` (the residual of a previous init is undone first)."""
        weight = self.writable_weight()
        weight.add_(self.initial_update().to(weight.dtype))
        self.lora_B.copy_(lora_B)
        self.lora_A.copy_(lora_A)
        self.lora_B0.copy_(self.lora_B)
        self.lora_A0.copy_(self.lora_A)
        self.subtract_initial_update()


def gradient_components(variant: Any, model: nn.Module, batches: Iterable[dict[str, torch.Tensor]],
                        components: int, negate: bool = False) -> tuple[list[tuple], dict[str, Any]]:
    """The top-``components`` singular triplets of each target layer's gradient estimate ``G``
    (of ``-G`` with ``negate``), from the randomised SVD with ``variant.options.niter``:
    ``([(layer, U, S, V), ...], facts)``, in the layers' order. Each ``G`` is dropped once
    decomposed; a layer too small for ``components`` is a VariantError naming it."""
    o = variant.options
    grads, facts = estimate_gradients(model, variant.layers, batches, o.grad_device)
    out = []
    for name, layer in variant.layers.items():
        g = grads.pop(name).to(layer.base.weight.device)
        check_rank_fits(variant.key, name, components, g)
        out.append((layer, *principal_components(-g if negate else g, components, o.niter)))
    return out, facts
