"""AdaLoRA: an SVD-form update whose rank budget is reallocated by importance during training."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .base import AdapterLayer, Variant, VariantError, register

__all__ = ["AdaLora", "AdaLoraLayer", "budget_at", "effective_phases"]


@dataclasses.dataclass
class AdaLoraOptions:
    #: Rank each layer is built with; 0 = ceil(1.5 x target_r) (12 for the study's rank 8).
    init_r: int = 0
    #: Average rank left per layer at the end; 0 = the variant's ``rank`` (the swept rank).
    target_r: int = 0
    tinit: int = 100  # steps at the full budget before pruning starts
    tfinal: int = 900  # steps at the final budget (pattern fixed) at the end
    deltaT: int = 1  # mask interval (steps) while the budget falls
    beta1: float = 0.85  # EMA of the sensitivity |w * g|
    beta2: float = 0.85  # EMA of its uncertainty
    #: Weight of the orthogonality penalty (peft's ``orth_reg_weight``, same default).
    orth_reg_weight: float = 0.5

    def validate(self) -> None:
        for name in ("init_r", "target_r", "tinit", "tfinal"):
            if getattr(self, name) < 0:
                raise VariantError(f"adalora {name} must be >= 0, got {getattr(self, name)}")
        if self.deltaT < 1:
            raise VariantError(f"adalora deltaT (mask interval) must be >= 1, got {self.deltaT}")
        for name in ("beta1", "beta2"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise VariantError(f"adalora {name} must be in (0, 1), got {getattr(self, name)}")
        if self.orth_reg_weight < 0:
            raise VariantError(
                f"adalora orth_reg_weight must be >= 0, got {self.orth_reg_weight}"
            )


def effective_phases(total: int, tinit: int, tfinal: int) -> tuple[int, int]:
    """``(tinit, tfinal)`` for a run of ``total`` steps, leaving at least one budgeting step.

    A trial shorter than ``tinit + tfinal + 1`` steps would never prune (peft refuses such a
    config). There both phases shrink by the same factor so that they fill half of the run in
    their ratio and the budget falls over the other half: 100/900 on 200 steps -> 10/90.
    """
    if total - tfinal > tinit:
        return tinit, tfinal
    shrink = total / (2 * (tinit + tfinal))
    return int(tinit * shrink), int(tfinal * shrink)


def budget_at(step: int, init_budget: int, target_budget: int, tinit: int, tfinal: int,
              total: int, delta_t: int) -> tuple[int, bool]:
    """The rank budget after optimizer step ``step`` and whether to mask at it (peft's schedule).

    Full budget up to ``tinit``; then ``target + (init - target)(1 - progress)^3``, truncated to
    an integer, until ``total - tfinal`` (mask every ``delta_t`` steps and at the end of the
    fall); the target budget, with the pattern frozen, afterwards.
    """
    end = total - tfinal
    if step <= tinit:
        return init_budget, False
    if step > end:
        return target_budget, True
    progress = (step - tinit) / (end - tinit)
    budget = int((init_budget - target_budget) * (1 - progress) ** 3 + target_budget)
    return budget, step % delta_t == 0 or step == end


class AdaLoraLayer(AdapterLayer):
    """``y = W x + b + (alpha / init_r) · B diag(E) A x``: ``A``, ``B`` ~ N(0, 0.02), ``E = 0``."""

    def __init__(self, base: nn.Linear, variant: Variant):
        super().__init__(base, variant)
        self.rank = variant.init_r  # built with init_r; the scale is alpha / init_r
        factory = {"device": self.lora_A.device, "dtype": self.lora_A.dtype}
        self.lora_A = nn.Parameter(torch.empty(self.rank, self.in_features, **factory))
        self.lora_E = nn.Parameter(torch.zeros(self.rank, **factory))
        self.lora_B = nn.Parameter(torch.empty(self.out_features, self.rank, **factory))

    @torch.no_grad()
    def reset_adapter(self) -> None:
        nn.init.normal_(self.lora_A, mean=0.0, std=0.02)
        nn.init.normal_(self.lora_B, mean=0.0, std=0.02)
        nn.init.zeros_(self.lora_E)

    def delta_weight(self) -> torch.Tensor:
        return self.scaling * ((self.lora_B * self.lora_E) @ self.lora_A)

    def adapter_output(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(x)
        if x.dtype != self.lora_A.dtype and not torch.is_autocast_enabled(x.device.type):
            x = x.to(self.lora_A.dtype)
        return self.scaling * (((x @ self.lora_A.t()) * self.lora_E) @ self.lora_B.t())


@register
class AdaLora(Variant):
    """AdaLoRA (Zhang et al., 2023): SVD-form update, rank budget reallocated by importance.

    Per layer ``dW = (alpha / init_r) · B diag(E) A`` with ``A ∈ R^{init_r×in}``,
    ``B ∈ R^{out×init_r}`` ~ N(0, 0.02) and ``E = 0``: the model starts as the base model.
    Triplet ``i`` of a layer is (row ``A_i``, entry ``E_i``, column ``B_i``).

    Importance (after every optimizer step, gradients still there): for every entry ``w`` of
    ``A``, ``E``, ``B`` with gradient ``g``, the sensitivity ``I = |w·g|`` is smoothed,
    ``Ī ← β1 Ī + (1-β1) I``, and so is its uncertainty, ``Ū ← β2 Ū + (1-β2) |I - Ī|``; the score
    of an entry is ``Ī·Ū`` and that of triplet ``i`` is ``score(E_i) + mean_j score(A_ij) +
    mean_k score(B_ki)`` (peft's ``RankAllocator``). The global budget (total kept triplets over
    all ``n`` layers) is ``init_r·n`` up to step ``tinit``, then falls cubically,
    ``target + (init - target)(1 - (t - tinit)/(T - tfinal - tinit))^3``, to ``target_r·n`` at
    step ``T - tfinal`` (``T`` from ``begin_training``). Every ``deltaT`` steps of the fall the
    ``E`` entries of the lowest-scoring triplets are set to 0 (they may come back later); at
    ``T - tfinal`` the pattern is frozen and re-applied after every later step.

    Loss: ``orth_reg_weight · R`` with ``R = 1/(2n) Σ_layers (‖AAᵀ - I‖_F + ‖BᵀB - I‖_F)``, i.e.
    ``0.5 · mean over layers`` of the pair (the mean over the ``2n`` matrices, as peft).

    Choices: ``rank`` is the *target* average rank (what the study compares at equal ``r``):
    ``target_r = rank`` and ``init_r = ceil(1.5 · target_r)`` unless given, so the study's
    ``r = 8`` gives its ``init_r = 12``, ``target_r = 8``. Runs shorter than
    ``tinit + tfinal + 1`` steps shrink both phases (see :func:`effective_phases`) instead of
    never pruning. Differences from peft: exactly ``budget`` triplets are kept (peft masks every
    score ``<=`` the k-th, so ties can mask more); ``E`` is a vector and the scale is exactly
    ``alpha / init_r`` (peft: ``alpha / (init_r + 1e-5)``); the penalty is computed in fp32
    outside autocast. Without ``begin_training`` (no step budget) nothing is masked.

    Reference: ``adalora.py`` of the study's code, matched (inits, ``alpha / init_r``,
    importance and uncertainty EMAs, cubic budget, masking). Its file has no orthogonality
    penalty; the method's is added here (``orth_reg_weight=0`` removes it).
    """

    key = "adalora"
    axis = "rank"
    study = {"options": {"init_r": 12, "target_r": 8, "tinit": 100, "tfinal": 900}}
    summary = "SVD-form B·diag(E)·A; importance-driven budget falls from init_r to target_r"
    layer = AdaLoraLayer
    Options = AdaLoraOptions
    peft_flags = None  # an AdaLoRA adapter is not a peft LoraConfig

    def __init__(self, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0, **options):
        super().__init__(rank, alpha, dropout, **options)
        self.target_r = self.options.target_r or self.rank
        self.init_r = self.options.init_r or (3 * self.target_r + 1) // 2
        if self.target_r > self.init_r:
            raise VariantError(
                f"adalora target_r ({self.target_r}) must not exceed init_r ({self.init_r}): "
                "the budget only falls"
            )
        self._reset_allocator()

    def _reset_allocator(self) -> None:
        self._sens: list[torch.Tensor] = []  # EMA of |w·g|, one per tensor of _tensors()
        self._unc: list[torch.Tensor] = []  # EMA of the uncertainty
        self._keep: list[torch.Tensor] | None = None  # frozen final pattern, one per layer
        self.budget = self.init_r * len(self.layers)  # triplets kept now

    def _tensors(self) -> list[nn.Parameter]:
        return [p for layer in self.layers.values()
                for p in (layer.lora_A, layer.lora_E, layer.lora_B)]

    @property
    def init_budget(self) -> int:
        return self.init_r * len(self.layers)

    @property
    def target_budget(self) -> int:
        return self.target_r * len(self.layers)

    # ------------------------------------------------------------------------------ hooks
    def begin_training(self, total_steps: int) -> None:
        super().begin_training(total_steps)
        self.tinit, self.tfinal = effective_phases(
            total_steps, self.options.tinit, self.options.tfinal
        )
        self._reset_allocator()

    def extra_loss(self) -> torch.Tensor | None:
        if self.options.orth_reg_weight == 0 or not self.layers:
            return None
        terms = []
        for layer in self.layers.values():
            a, b = layer.lora_A, layer.lora_B
            with torch.autocast(a.device.type, enabled=False):
                eye = torch.eye(a.shape[0], device=a.device, dtype=a.dtype)
                terms.append(torch.linalg.matrix_norm(a @ a.t() - eye)
                             + torch.linalg.matrix_norm(b.t() @ b - eye))
        penalty = torch.stack([t.to(terms[0].device) for t in terms]).sum() / (2 * len(terms))
        return self.options.orth_reg_weight * penalty

    @torch.no_grad()
    def after_optimizer_step(self, step: int, optimizer: torch.optim.Optimizer) -> None:
        total = getattr(self, "total_steps", None)
        end = None if total is None else total - self.tfinal
        if end is None or step < end:
            self._update_importance()
        if end is None:
            return
        if step > end:
            if self._keep is None:  # (only if training began past the fall)
                self._mask_to_budget(self.target_budget)
            self._apply(self._keep)
            return
        budget, mask = budget_at(step, self.init_budget, self.target_budget, self.tinit,
                                 self.tfinal, total, self.options.deltaT)
        if mask:
            self._mask_to_budget(budget)
        if step == end:  # the final pattern is fixed; the statistics are no longer needed
            self._sens, self._unc = [], []

    def training_state(self) -> dict:
        """The importance EMAs, the frozen pattern and the budget (the schedule's position
        follows from the step, the phases from ``begin_training``)."""
        return {"sens": list(self._sens), "unc": list(self._unc), "budget": self.budget,
                "keep": None if self._keep is None else list(self._keep)}

    def load_training_state(self, state: dict) -> None:
        device = self.layers[next(iter(self.layers))].lora_E.device if self.layers else "cpu"
        self._sens = [t.to(device) for t in state["sens"]]
        self._unc = [t.to(device) for t in state["unc"]]
        self._keep = None if state["keep"] is None else [t.to(device) for t in state["keep"]]
        self.budget = state["budget"]

    # -------------------------------------------------------------------------- allocator
    @torch.no_grad()
    def _update_importance(self) -> None:
        params = self._tensors()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        if not self._sens:
            self._sens = [torch.zeros_like(p) for p in params]
            self._unc = [torch.zeros_like(p) for p in params]
        sensitivity = torch._foreach_mul(params, grads)
        torch._foreach_abs_(sensitivity)
        torch._foreach_lerp_(self._sens, sensitivity, 1 - self.options.beta1)
        deviation = torch._foreach_sub(sensitivity, self._sens)
        torch._foreach_abs_(deviation)
        torch._foreach_lerp_(self._unc, deviation, 1 - self.options.beta2)

    @torch.no_grad()
    def triplet_scores(self) -> dict[str, torch.Tensor]:
        """Importance of every triplet, per layer name (``init_r`` scores each)."""
        if not self._sens:
            return {name: torch.zeros(self.init_r) for name in self.layers}
        scores = torch._foreach_mul(self._sens, self._unc)
        out = {}
        for i, name in enumerate(self.layers):
            s_a, s_e, s_b = scores[3 * i : 3 * i + 3]
            out[name] = s_e + s_a.mean(dim=1) + s_b.mean(dim=0)
        return out

    @torch.no_grad()
    def _mask_to_budget(self, budget: int) -> None:
        scores = list(self.triplet_scores().values())
        device = scores[0].device
        flat = torch.cat([s.to(device) for s in scores])
        keep = torch.ones_like(flat, dtype=torch.bool)
        drop = self.init_budget - budget
        if drop > 0:
            keep[torch.topk(flat, drop, largest=False).indices] = False
        self._keep = list(keep.split(self.init_r))
        self.budget = budget
        self._apply(self._keep)

    @torch.no_grad()
    def _apply(self, keep: list[torch.Tensor]) -> None:
        for layer, mask in zip(self.layers.values(), keep, strict=True):
            layer.lora_E.masked_fill_(~mask.to(layer.lora_E.device), 0.0)
