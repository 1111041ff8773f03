"""LoRAMoE: routed low-rank experts with a load-balancing auxiliary loss."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn
from torch.nn import functional as F

from .base import AdapterLayer, AInitOptions, Variant, VariantError, register

__all__ = ["LoraMoe", "LoraMoeLayer", "LoraMoeOptions", "MoeOptions", "load_balancing_loss"]


@dataclasses.dataclass
class MoeOptions:
    num_experts: int = 8  # E experts (see each variant for their rank)
    top_k: int = 2  # experts per token
    aux_loss_weight: float = 1e-3  # weight of the load-balancing loss in extra_loss()
    #: Router init: "uniform" U[0, 1) (the reference code's), "kaiming" (nn.Linear's default).
    router_init: str = "uniform"

    def validate(self) -> None:
        if self.num_experts < 1:
            raise VariantError(f"num_experts must be >= 1, got {self.num_experts}")
        if not 1 <= self.top_k <= self.num_experts:
            raise VariantError(
                f"top_k must be in [1, num_experts = {self.num_experts}], got {self.top_k}"
            )
        if not (self.aux_loss_weight >= 0 and math.isfinite(self.aux_loss_weight)):
            raise VariantError(f"aux_loss_weight must be >= 0, got {self.aux_loss_weight}")
        if self.router_init not in ("uniform", "kaiming"):
            raise VariantError(
                f"router_init must be uniform or kaiming, got {self.router_init!r}"
            )


@dataclasses.dataclass
class LoraMoeOptions(MoeOptions, AInitOptions):
    #: "expert": s = alpha / r_e, each expert scaled as a LoRA of its own rank (the reference
    #: code's); "total": s = alpha / r, the total rank's scale (lorasweep's earlier default).
    scale: str = "expert"

    def validate(self) -> None:
        super().validate()
        AInitOptions.validate(self)
        if self.scale not in ("expert", "total"):
            raise VariantError(f"loramoe scale must be expert or total, got {self.scale!r}")


def load_balancing_loss(probs: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """Switch-style balance ``E · Σ_i f_i P_i`` of one layer's routing.

    ``probs`` (``N × E``): the softmax of the router logits over all experts; ``selected``
    (``N × k``): the experts each token went to. ``f_i`` is the fraction of tokens routed to
    expert ``i`` (a token counts once for each of its ``k`` experts, so ``Σ f_i = k``) and
    ``P_i`` the mean router probability of ``i``. Only ``P`` carries a gradient. Balanced
    routing gives ``k``; all tokens on the same ``k`` experts, confidently, approach ``E``.
    """
    tokens, experts = probs.shape
    chosen = selected.reshape(-1)
    counts = torch.zeros(experts, device=probs.device, dtype=torch.float32)
    counts.index_add_(0, chosen, torch.ones(chosen.shape, device=chosen.device))
    return experts * torch.sum(counts / tokens * probs.float().mean(0))


class LoraMoeLayer(AdapterLayer):
    """``E`` experts stored as one rank-``E·re`` LoRA: expert ``e`` is rows ``e·re:(e+1)·re`` of
    ``lora_A`` and the same columns of ``lora_B`` (so ``s·B A`` is the unrouted sum of expert
    updates, and the base's initial-update and save/load machinery applies unchanged)."""

    def __init__(self, base: nn.Linear, variant: Variant):
        super().__init__(base, variant)
        self.num_experts = self.options.num_experts
        self.top_k = self.options.top_k
        self.expert_rank = self.rank_per_expert()
        width = self.num_experts * self.expert_rank
        factory = {"device": self.lora_A.device, "dtype": self.lora_A.dtype}
        self.lora_A = nn.Parameter(torch.empty(width, self.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, width, **factory))
        self.lora_router = nn.Parameter(torch.empty(self.num_experts, self.in_features, **factory))
        self.aux_loss: torch.Tensor | None = None

    def rank_per_expert(self) -> int:
        """LoRAMoE: ``r_e = max(1, r // E)`` (the study's Table II: 8 or 6 experts of rank 1)."""
        return max(1, self.rank // self.num_experts)

    @property
    def scaling(self) -> float:
        rank = self.expert_rank if self.options.scale == "expert" else self.rank
        return self.alpha / rank

    @torch.no_grad()
    def reset_router(self) -> None:
        if self.options.router_init == "uniform":
            nn.init.uniform_(self.lora_router, 0.0, 1.0)  # the reference code's torch.rand
        else:
            nn.init.kaiming_uniform_(self.lora_router, a=math.sqrt(5))  # nn.Linear's default

    @torch.no_grad()
    def reset_adapter(self) -> None:
        super().reset_adapter()  # A Kaiming-uniform (fan-in = in, as per expert), B zero
        self.reset_router()

    # ------------------------------------------------------------------------------ routing
    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Dense gates (``... × E``, zero off the top-k), all-expert probabilities and the
        selected experts (``... × k``), for inputs ``x`` (``... × in``).

        LoRAMoE: top-k of the router logits, softmax over the chosen ones only."""
        logits = F.linear(x, self.lora_router)
        top, selected = logits.topk(self.top_k, dim=-1)
        weights = torch.softmax(top.float(), dim=-1).to(logits.dtype)
        gates = torch.zeros_like(logits).scatter(-1, selected, weights)
        return gates, torch.softmax(logits.float(), dim=-1), selected

    def take_aux_loss(self) -> torch.Tensor | None:
        """The balance loss of this layer's last forward, handed over once."""
        loss, self.aux_loss = self.aux_loss, None
        return loss

    # ------------------------------------------------------------------------------ forward
    def _expert_sum(self, x: torch.Tensor, gates: torch.Tensor, a, b) -> torch.Tensor:
        """``Σ_e gates_e · B_e A_e x`` for every expert at once: one ``x Aᵀ`` over all ``E·re``
        rows, each expert's ``re`` hidden units scaled by its gate, one product with ``Bᵀ``."""
        hidden = x @ a.t()
        hidden = hidden * gates.repeat_interleave(self.expert_rank, dim=-1).to(hidden.dtype)
        return hidden @ b.t()

    def _routed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The input in the adapter's dtype and its gates; records the balance loss."""
        if x.dtype != self.lora_A.dtype and not torch.is_autocast_enabled(x.device.type):
            x = x.to(self.lora_A.dtype)  # half-precision base, fp32 adapter, no autocast
        gates, probs, selected = self.route(x)
        self.aux_loss = load_balancing_loss(
            probs.reshape(-1, self.num_experts), selected.reshape(-1, self.top_k)
        )
        return x, gates

    def adapter_output(self, x: torch.Tensor) -> torch.Tensor:
        x, gates = self._routed(x)
        return self.scaling * self._expert_sum(self.dropout(x), gates, self.lora_A, self.lora_B)


@register
class LoraMoe(Variant):
    """LoRAMoE (Dou et al., 2024): a router mixes low-rank experts per token.

    ``E`` experts of rank ``re = max(1, r // E)`` (study: ``E = 8`` of rank 1, top-2), expert
    ``e`` being ``B_e A_e`` (``A_e`` Kaiming-uniform, ``B_e`` zero: the model starts as the base
    model). A per-layer router ``G ∈ R^{E×in}`` (no bias, uniform ``[0, 1)``) scores each token:
    ``l = G x``; the top-``k`` logits are softmaxed among themselves, ``g = softmax(l_topk)``,
    and ``y = W x + b + s · Σ_{e ∈ topk(x)} g_e B_e A_e x`` with ``s = alpha / re``.

    Trainable parameters per ``in -> out`` layer: ``E·re·(in + out) + E·in``; on Llama-3.1-8B
    (all linear layers of the blocks, ``r = 8``) 30.93M for 8 experts and 23.20M for 6, the
    study's Table II.

    Reference (``common/lora_modules/lora_moe.py`` of the study's code): each expert is a LoRA
    built with the experiment's ``lora_rank`` and scaled by ``lora_scaler / lora_rank``; Table
    II's counts need rank-1 experts, so the study passed the expert rank: ``re = r // E`` and
    ``s = alpha / re`` (8x the total rank's ``alpha / r`` at ``r = 8``, ``E = 8``). lorasweep
    follows it (``scale="expert"``; ``scale="total"`` gives ``alpha / r``, lorasweep's choice
    before). The router starts as the reference's ``torch.rand`` (``router_init="uniform"``;
    ``"kaiming"`` is ``nn.Linear``'s init). Deliberate differences: ``A_e`` is Kaiming-uniform
    (peft's LoRA init; the reference draws ``N(0, 1/in)``, a ``sqrt(3)`` larger spread), and a
    load-balancing loss is added (the reference forgets it; ``aux_loss_weight=0`` removes it).
    The reference's router weight in one version has ``top_k`` rows instead of ``E`` (experts
    past ``k`` never chosen), a bug not reproduced: Table II counts ``E`` rows.

    Balance: each layer's last forward records the Switch loss
    ``L = E · Σ_i f_i P_i`` (see :func:`load_balancing_loss`: ``f_i`` fraction of tokens sent
    to expert ``i``, ``P_i`` mean softmax probability over all ``E``; every token position
    counts, padding included); :meth:`extra_loss` returns ``aux_loss_weight`` (default
    ``1e-3``) times the mean of ``L`` over layers, and clears it.

    Computed batched, with no loop over experts: the experts are stacked as one rank-``E·re``
    LoRA (``lora_A`` ``E·re × in``, ``lora_B`` ``out × E·re``), the hidden ``A x`` of all
    experts is computed at once and each expert's part is scaled by its gate (zero when not
    chosen), then one product with ``B``: the cost of one rank-``E·re`` LoRA. The routing
    depends on the input, so no weight reproduces the layer: merging is refused, and there is
    no peft export.
    """

    key = "loramoe"
    axis = "moe"
    summary = "E routed LoRA experts of rank max(1, r//E), top-k, load-balancing loss (8, top-2)"
    layer = LoraMoeLayer
    Options = LoraMoeOptions
    study = {"options": {"num_experts": 8, "top_k": 2, "a_init": "gaussian"}}
    peft_flags = None
    mergeable = False

    def extra_loss(self) -> torch.Tensor | None:
        taken = [layer.take_aux_loss() for layer in self.layers.values()]
        losses = [loss for loss in taken if loss is not None]  # layers run since the last call
        if not losses or self.options.aux_loss_weight == 0:
            return None
        device = losses[0].device
        return self.options.aux_loss_weight * sum(x.to(device) for x in losses) / len(losses)
