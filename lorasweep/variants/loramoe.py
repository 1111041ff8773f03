"""LoRAMoE: routed low-rank experts with a load-balancing auxiliary loss."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn
from torch.nn import functional as F

from .base import AdapterLayer, Variant, VariantError, register

__all__ = ["LoraMoe", "LoraMoeLayer", "MoeOptions", "load_balancing_loss"]


@dataclasses.dataclass
class MoeOptions:
    num_experts: int = 8  # E; each expert has rank ceil(r / E)
    top_k: int = 2  # experts per token
    aux_loss_weight: float = 1e-3  # weight of the load-balancing loss in extra_loss()

    def validate(self) -> None:
        if self.num_experts < 1:
            raise VariantError(f"num_experts must be >= 1, got {self.num_experts}")
        if not 1 <= self.top_k <= self.num_experts:
            raise VariantError(
                f"top_k must be in [1, num_experts = {self.num_experts}], got {self.top_k}"
            )
        if not (self.aux_loss_weight >= 0 and math.isfinite(self.aux_loss_weight)):
            raise VariantError(f"aux_loss_weight must be >= 0, got {self.aux_loss_weight}")


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
        self.expert_rank = math.ceil(self.rank / self.num_experts)
        width = self.num_experts * self.expert_rank
        factory = {"device": self.lora_A.device, "dtype": self.lora_A.dtype}
        self.lora_A = nn.Parameter(torch.empty(width, self.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, width, **factory))
        self.lora_router = nn.Parameter(torch.empty(self.num_experts, self.in_features, **factory))
        self.aux_loss: torch.Tensor | None = None

    @torch.no_grad()
    def reset_adapter(self) -> None:
        super().reset_adapter()  # A Kaiming-uniform (fan-in = in, as per expert), B zero
        nn.init.kaiming_uniform_(self.lora_router, a=math.sqrt(5))  # nn.Linear's default

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

    ``E`` experts of rank ``re = ceil(r / E)`` (study: ``E = 8`` of rank 1, top-2), expert ``e``
    being ``B_e A_e`` (``A_e`` Kaiming-uniform, ``B_e`` zero: the model starts as the base model).
    A per-layer router ``G ∈ R^{E×in}`` (no bias, ``nn.Linear``'s init) scores each token:
    ``l = G x``; the top-``k`` logits are softmaxed among themselves, ``g = softmax(l_topk)``,
    and ``y = W x + b + s · Σ_{e ∈ topk(x)} g_e B_e A_e x`` with ``s = alpha / r`` (the total
    rank's LoRA scale, as the study's reference code).

    Balance (the reference code forgets it): each layer's last forward records the Switch loss
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
    summary = "E routed LoRA experts of rank ceil(r/E), top-k, load-balancing loss (8, top-2)"
    layer = LoraMoeLayer
    Options = MoeOptions
    peft_flags = None
    mergeable = False

    def extra_loss(self) -> torch.Tensor | None:
        taken = [layer.take_aux_loss() for layer in self.layers.values()]
        losses = [loss for loss in taken if loss is not None]  # layers run since the last call
        if not losses or self.options.aux_loss_weight == 0:
            return None
        device = losses[0].device
        return self.options.aux_loss_weight * sum(x.to(device) for x in losses) / len(losses)
