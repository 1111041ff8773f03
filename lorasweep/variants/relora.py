"""ReLoRA: merge the low-rank update into the weight every K steps and start a fresh one."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .base import AdapterLayer, AInitOptions, Variant, VariantError, register

__all__ = ["ReLora", "ReLoraLayer"]


@dataclasses.dataclass
class ReLoraOptions(AInitOptions):
    #: Steps between merges K; 0 = total_steps // 4 (3 or 4 merges, the study's 3 to 5).
    merge_every: int = 0
    #: Steps over which the learning rate ramps back up after each merge (study: 10).
    rewarm_steps: int = 10

    def validate(self) -> None:
        super().validate()
        if self.merge_every < 0:
            raise VariantError(
                f"relora merge_every must be >= 0 (0 = total_steps // 4), got {self.merge_every}"
            )
        if self.rewarm_steps < 0:
            raise VariantError(f"relora rewarm_steps must be >= 0, got {self.rewarm_steps}")


class ReLoraLayer(AdapterLayer):
    """A LoRA layer that can fold its update into the frozen weight and restart.

    Every merge is recorded as a rank-``r`` factor pair in the persistent buffers
    ``lora_merged_B`` (``out × k·r``, scale folded in) and ``lora_merged_A`` (``k·r × in``), so the
    saved adapter holds the whole trained update: ``W_trained = W0 + merged_B merged_A + s·B A``.
    """

    def __init__(self, base: nn.Linear, variant: Variant):
        super().__init__(base, variant)
        factory = {"device": self.lora_A.device, "dtype": self.lora_A.dtype}
        self.register_buffer("lora_merged_A", torch.zeros(0, self.in_features, **factory))
        self.register_buffer("lora_merged_B", torch.zeros(self.out_features, 0, **factory))

    @property
    def merges(self) -> int:
        return self.lora_merged_A.shape[0] // self.rank

    @torch.no_grad()
    def restart(self) -> None:
        """``W += s·B A`` (recorded), then ``A`` Kaiming-uniform and ``B = 0`` again."""
        if self.merged:
            raise VariantError("unmerge the adapter before a ReLoRA restart")
        scaled_b = self.scaling * self.lora_B.detach()
        a = self.lora_A.detach().clone()
        self._fold(scaled_b, a)
        self.lora_merged_A = torch.cat([self.lora_merged_A, a])
        self.lora_merged_B = torch.cat([self.lora_merged_B, scaled_b], dim=1)
        self.reset_adapter()

    @torch.no_grad()
    def refold(self) -> None:
        """Add the recorded merges to a fresh base weight, one by one as in training."""
        r = self.rank
        for k in range(self.merges):
            self._fold(self.lora_merged_B[:, k * r : (k + 1) * r],
                       self.lora_merged_A[k * r : (k + 1) * r])

    def _fold(self, scaled_b: torch.Tensor, a: torch.Tensor) -> None:
        if self.offsets:
            return  # the recorded factors are applied in the forward
        weight = self.writable_weight()
        weight.add_((scaled_b @ a).to(weight.dtype))

    @property
    def offsets(self) -> bool:
        """Merges kept as frozen low-rank offsets beside the weight (a quantized base)."""
        return self.quantize != "none"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        if not self.offsets or not self.lora_merged_A.shape[0]:
            return out
        h = x.to(self.lora_merged_A.dtype) @ self.lora_merged_A.t()
        return out + (h @ self.lora_merged_B.t()).to(out.dtype)


@register
class ReLora(Variant):
    """ReLoRA (Lialin et al., 2023): high-rank training through a sequence of low-rank updates.

    The layer is LoRA, ``y = W x + s · B A x``. After optimizer step ``k·K`` (``k = 1, 2, ...``,
    strictly before the last step; ``K`` = ``merge_every``, or ``total_steps // 4`` when 0):

    1. merge: ``W ← W + s · B A`` (the function of the model is unchanged);
    2. restart: ``A`` Kaiming-uniform, ``B = 0``;
    3. reset the optimizer state of every ``A`` and ``B`` (all moments zeroed and Adam's ``step``
       back to 0, so bias correction restarts as for a fresh tensor); trained heads keep theirs;
    4. re-warm: the loop's schedule is multiplied by ``(j + 1)/(rewarm_steps + 1)`` for the
       ``j``-th step after the merge (``j < rewarm_steps``), a linear ramp from ~0 back to the
       cosine ("jagged cosine").

    With ``T`` steps and ``K = T // 4`` there are 3 merges (4 when ``T`` is not a multiple of
    4); ``T < 4`` gives ``K = 0``: no merge. The paper prunes 99% of the optimizer state by
    magnitude; the study's notes say "prune" and we reset it all (100%).

    Saving: every merge is kept as factors (``lora_merged_B = s·B_k`` stacked, ``lora_merged_A``)
    in persistent buffers, so a fresh base plus the saved adapter is the trained model
    (``load_state_dict`` folds them in again, merge by merge). No peft export: the trained
    update is a LoRA of rank ``(merges + 1)·r`` whose rank is only known after training;
    ``peft_flags`` is ``None``.

    Over a quantized base (``model.quantize=nf4``) nothing is written into the 4-bit ``W``: the
    merges stay in those buffers and the forward adds ``merged_B (merged_A x)``, exactly the
    merged function (no re-rounding of ``W`` per merge, as peft's and the study's dequantize,
    add, re-quantize would do). The cost: ``k·r (in + out)`` frozen numbers and one thin matmul
    pair per layer after ``k`` merges; the trained model still merges exactly into the
    full-precision weights on export.

    Reference: ``relora.py`` of the study's code. Difference: it zeroes a random 99.9% of the
    optimizer state (or prunes it by magnitude) at each merge; lorasweep zeroes all of it.
    """

    key = "relora"
    axis = "rank"
    study = {
        "options": {"rewarm_steps": 10, "a_init": "gaussian"},
        "note": "3 to 5 merges: merge_every = steps // 4",
    }
    summary = "LoRA merged into W every K steps, restarted with reset optimizer state + re-warm"
    layer = ReLoraLayer
    Options = ReLoraOptions
    peft_flags = None
    quantized_base = "offset"

    @property
    def merge_count(self) -> int:
        """Merges folded into the weights so far (saved with the adapter)."""
        return next(iter(self.layers.values())).merges if self.layers else 0

    @property
    def merge_every(self) -> int:
        if self.options.merge_every:
            return self.options.merge_every
        total = getattr(self, "total_steps", None)
        return total // 4 if total else 0

    def is_merge_step(self, step: int) -> bool:
        every, total = self.merge_every, getattr(self, "total_steps", None)
        return every > 0 and step > 0 and step % every == 0 and (total is None or step < total)

    # ------------------------------------------------------------------------------ hooks
    def lr_factor(self, step: int) -> float:
        """``step`` is the scheduler's index: it sets the LR of optimizer step ``step + 1``."""
        every, warm = self.merge_every, self.options.rewarm_steps
        if every <= 0 or warm <= 0:
            return 1.0
        last = (step // every) * every  # the latest merge done before optimizer step step + 1
        if not self.is_merge_step(last) or step - last >= warm:
            return 1.0
        return (step - last + 1) / (warm + 1)

    @torch.no_grad()
    def after_optimizer_step(self, step: int, optimizer: torch.optim.Optimizer) -> None:
        if not self.is_merge_step(step):
            return
        for layer in self.layers.values():
            layer.restart()
        for _, p in self.adapter_parameters():
            _reset_state(optimizer.state.get(p))

    def training_state(self) -> dict:
        """The merge count (the merged factors themselves are buffers of the adapter state)."""
        return {"merges": self.merge_count}

    def load_training_state(self, state: dict) -> None:
        if state["merges"] != self.merge_count:
            raise VariantError(
                f"relora checkpoint records {state['merges']} merges but its adapter holds "
                f"{self.merge_count}: the checkpoint is damaged; delete it to start afresh"
            )

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for lname, layer in self.layers.items():  # size the merge buffers to the saved ones
            for buf in ("lora_merged_A", "lora_merged_B"):
                saved = state.get(f"{lname}.{buf}")
                if saved is not None:
                    current = getattr(layer, buf)
                    setattr(layer, buf, current.new_zeros(saved.shape))
        super().load_state_dict(state)
        for layer in self.layers.values():
            layer.refold()


def _reset_state(state: dict | None) -> None:
    """Zero every tensor of one parameter's optimizer state (moments and step)."""
    for key, value in (state or {}).items():
        if torch.is_tensor(value):
            value.zero_()
        elif key == "step":
            state[key] = 0
