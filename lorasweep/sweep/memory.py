"""Will a trial fit? The memory a trial needs, estimated before the first one, against what each
worker has.

A trial that does not fit is killed by the kernel (or by CUDA) minutes in, after loading and
estimating, and every worker of the run the same way. :func:`check_memory` runs with the sweep's
other checks, before anything is written, and refuses such a sweep in one line that names the
estimate, what each worker has, and the settings to lower.

**The estimate** (bytes; read from the model's config alone: ``AutoConfig``, and the model built
on PyTorch's meta device, so no weight is loaded):

- *weights*: every parameter at the dtype the trial loads (fp32 on CPU, bf16 on CUDA with
  ``model.dtype=auto``); with ``model.quantize=nf4`` the target linears at NF4's bytes
  (``nf4_weight_bytes`` of the quantisation seam);
- *adapter*: ``r * (in + out)`` per target linear, plus the fully trained heads, at 16 bytes per
  parameter (fp32 value, gradient, AdamW's two moments);
- *activations*: ``(K_LAYER * hidden + K_ATTENTION * heads * length) * length * batch * layers``
  bytes (what each layer keeps for backward, and its attention probabilities, which grow with the
  square of the length), plus, for a causal LM, ``K_LOGITS * vocab * length * batch`` (the fp32
  logits over the vocabulary, their softmax and gradient): ``batch`` is ``train.batch_size``, one
  micro-batch (``--grad-accum`` adds none);
- *gradient estimate* (variants that initialise from the gradient of the frozen weights:
  LoRA-GA, LoRA-One, GoRA): one fp32 sum per target weight plus one gradient in flight; the
  estimation batches run one at a time, so their number adds time, not memory. It replaces the
  adapter's share while it runs (the optimizer does not exist yet);
- *runtime*: ``RUNTIME_BYTES`` for the interpreter, PyTorch and transformers themselves.

**Calibration** (``benchmarks/bench_memory.py``, CPU, fp32, LoRA r=8, one optimizer step on
random ids at the full length, peak RSS of a fresh process minus its RSS before the step; the
estimate's activations, adapter and optimizer against it):

    model (hidden, layers, heads)      batch x length   measured    estimate   ratio
    MiniLM-L6, BERT (384, 6, 12)       16 x 128          744 MiB     991 MiB   1.33
                                       32 x 256         3578 MiB    5401 MiB   1.51
    SmolLM2-135M, Llama (576, 30, 9)    4 x 128          782 MiB    1821 MiB   2.33
                                        8 x 256         4381 MiB    8591 MiB   1.96

Fitted alone, BERT keeps about 132 bytes per hidden unit, token and layer (its dropout masks
among them) and 8 per head and position; the Llama about 17 and 18, besides its logits. One
constant each, the larger of the two rounded up, keeps the estimate above every measured peak and
within ``CALIBRATION_FACTOR`` of it (tests/unit/test_memory_estimate.py measures a real step).

**What each worker has**: on CPU, the available memory (``psutil``), capped by the cgroup's
``memory.max`` less its ``memory.current`` (containers, SLURM's cgroups) and by
``LORASWEEP_MEMORY_LIMIT`` (e.g. ``2GiB``: a budget of its own), divided by the local launcher's
workers; on CUDA, the GPU's free memory (``torch.cuda.mem_get_info``, read in a short-lived
process so that this one holds no CUDA context), divided by the workers sharing a GPU. SLURM's
workers run on other machines, with their own memory: not checked here. ``LORASWEEP_MEMORY_CHECK
=off`` turns the check off (an estimate can be wrong for an unusual model).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
from pathlib import Path
from typing import Any

from ..config import SweepSpec, TrainConfig
from .spec import SweepError, sweep_tasks, train_for

__all__ = ["CALIBRATION_FACTOR", "K_ATTENTION", "K_LAYER", "K_LOGITS", "LIMIT_ENV", "OFF_ENV",
           "RUNTIME_BYTES", "ModelFacts", "TrialMemory", "activation_bytes", "check_memory",
           "model_facts", "parse_bytes", "trial_memory", "worker_memory"]

#: Bytes kept per hidden unit, token and layer for backward (fp32, measured: see the docstring).
K_LAYER = 140
#: Bytes kept per attention head, token and position attended to, per layer (the probabilities).
K_ATTENTION = 20
#: Bytes per vocabulary entry and token of a causal LM's logits (fp32 logits, softmax, gradient).
K_LOGITS = 12
#: The interpreter, PyTorch and transformers besides the model (measured: 330-450 MiB of RSS
#: beside the weights, in the calibration's processes; rounded up).
RUNTIME_BYTES = 600 * 2**20
#: The estimate is within this factor above the measured peak (the calibration's spread).
CALIBRATION_FACTOR = 2.5
#: A memory budget of its own (``2GiB``, ``512MiB``, bytes): the most a machine gives the run.
LIMIT_ENV = "LORASWEEP_MEMORY_LIMIT"
#: ``off`` turns the check off.
OFF_ENV = "LORASWEEP_MEMORY_CHECK"
_ADAPTER_BYTES = 16  # per trained parameter: fp32 value, gradient, AdamW's two moments
_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6,
          "mib": 2**20, "g": 2**30, "gb": 10**9, "gib": 2**30, "t": 2**40, "tb": 10**12,
          "tib": 2**40}


@dataclasses.dataclass
class ModelFacts:
    """What the estimate reads of a model: from its config and its meta-device build."""

    params: int  # every parameter, tied ones once
    hidden: int
    layers: int
    heads: int
    vocab: int  # 0: no logits over a vocabulary (a classifier)
    head_params: int  # the fully trained heads (a classifier's)
    linears: dict[str, tuple[int, int]]  # every nn.Linear: name -> (in, out)
    model: Any = dataclasses.field(repr=False, default=None)  # the meta-device model
    tokens: int | None = None  # tokens per example fixed by the model (vision patches), else None


@dataclasses.dataclass
class TrialMemory:
    """One trial's estimate, by part (bytes)."""

    weights: int
    adapter: int
    activations: int
    estimation: int
    runtime: int = RUNTIME_BYTES

    @property
    def total(self) -> int:
        return self.weights + self.activations + max(self.adapter, self.estimation) + self.runtime

    def parts_text(self) -> str:
        parts = [f"weights {_gib(self.weights)}", f"adapter and optimizer {_gib(self.adapter)}",
                 f"activations {_gib(self.activations)}"]
        if self.estimation:
            parts.append(f"gradient estimate {_gib(self.estimation)}")
        return ", ".join(parts)


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def parse_bytes(text: str) -> int:
    """``2GiB``, ``512 MiB``, ``1.5G``, ``1000000`` -> bytes; ValueError otherwise."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r} (e.g. 2GiB, 512MiB)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def model_facts(model_id: str, task_key: str, model_options: dict[str, Any] | None = None
                ) -> ModelFacts:
    """The model of ``task_key``'s kind, built from its config on the meta device."""
    import torch
    from torch import nn
    from transformers.utils import logging as hf_logging

    from ..tasks import find_task
    from ..train.model import ModelOptions, model_config, resolve_model

    options = ModelOptions.parse(model_options)
    path, gguf = resolve_model(model_id)
    task = find_task(task_key)
    kind = getattr(task, "model_kind", None)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        config = copy.deepcopy(model_config(path, gguf, options.trust_remote_code))
        with torch.device("meta"):
            model, tokens = _meta_model(config, kind, getattr(task, "num_labels", 2), options)
    finally:
        hf_logging.set_verbosity(verbosity)
    text = getattr(config, "vision_config", None) if kind == "image-classification" else None
    text = text or getattr(config, "text_config", None) or config
    heads = [m for name in ("classifier", "score") if (m := getattr(model, name, None)) is not None]
    return ModelFacts(
        params=sum(p.numel() for p in model.parameters()),
        hidden=int(text.hidden_size), layers=int(text.num_hidden_layers),
        heads=int(text.num_attention_heads),
        vocab=int(text.vocab_size) if kind == "causal-lm" else 0,
        head_params=sum(p.numel() for h in heads for p in h.parameters()),
        linears={n: (m.in_features, m.out_features) for n, m in model.named_modules()
                 if isinstance(m, nn.Linear)},
        model=model, tokens=tokens)


def _meta_model(config: Any, kind: str | None, num_labels: int, options: Any) -> tuple[Any, int | None]:
    import transformers

    remote = {"trust_remote_code": options.trust_remote_code}
    if kind == "causal-lm":
        return transformers.AutoModelForCausalLM.from_config(config, **remote), None
    if kind == "image-classification":
        from ..tasks.image_model import CLIPImageClassifier

        vision = getattr(config, "vision_config", config)
        tower = transformers.CLIPVisionModel(vision)
        patches = (vision.image_size // vision.patch_size) ** 2 + 1
        return CLIPImageClassifier(tower, num_labels), patches
    config.num_labels = max(num_labels, 1)
    return transformers.AutoModelForSequenceClassification.from_config(config, **remote), None


def activation_bytes(facts: ModelFacts, batch: int, length: int) -> int:
    """What one micro-batch keeps for backward (see the module docstring)."""
    length = facts.tokens or length
    tokens = batch * length
    per_layer = K_LAYER * facts.hidden + K_ATTENTION * facts.heads * length
    return int(per_layer * facts.layers * tokens + K_LOGITS * facts.vocab * tokens)


def _estimates_gradients(cls: type) -> bool:
    from ..variants._gradients import GradientOptions

    options = getattr(cls, "Options", None)
    return isinstance(options, type) and issubclass(options, GradientOptions)


def trial_memory(facts: ModelFacts, variant: Any, train: TrainConfig, model_options: dict[str, Any]
                 | None = None, device_type: str = "cpu") -> TrialMemory:
    """The estimate for one trial of ``variant`` (a :class:`~lorasweep.config.VariantSpec`)."""
    from ..train.model import ModelOptions
    from ..variants import get_variant_class
    from ..variants._quant import nf4_weight_bytes
    from ..variants.inject import resolve_targets

    options = ModelOptions.parse(model_options)
    bf16 = options.dtype == "bf16" or (options.dtype == "auto" and device_type == "cuda")
    width = 2 if bf16 else 4
    targets = [facts.linears[n] for n in resolve_targets(facts.model, variant.target_modules)]
    weights = facts.params * width
    if options.quantize == "nf4":
        weights -= sum(i * o * width - nf4_weight_bytes(i * o) for i, o in targets)
    adapter = (sum(variant.rank * (i + o) for i, o in targets) + facts.head_params) * _ADAPTER_BYTES
    estimation = 0
    if _estimates_gradients(get_variant_class(variant.key)) and train.estimation_batches:
        estimation = 4 * sum(i * o for i, o in targets) + 4 * max(i * o for i, o in targets)
    return TrialMemory(weights=weights, adapter=adapter, estimation=estimation,
                       activations=activation_bytes(facts, train.batch_size, train.max_length))


def _cgroup_free() -> int | None:
    """What the cgroup (v2) of this process may still use, or None without a limit."""
    root = Path("/sys/fs/cgroup")
    try:
        limit = (root / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(int(limit) - int((root / "memory.current").read_text().strip()), 0)
    except (OSError, ValueError):
        return None


def _gpu_free(device: str) -> int:
    """Free bytes of the CUDA device, read in a short-lived process (no CUDA context here)."""
    import subprocess
    import sys

    index = device.partition(":")[2] or "0"
    code = f"import torch; print(torch.cuda.mem_get_info({index})[0])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    return int(out.stdout.strip().splitlines()[-1])


def worker_memory(spec: SweepSpec, device_type: str, device: str = "cuda") -> tuple[int, str]:
    """Bytes each worker has, and how that was found (for the refusal line)."""
    workers = spec.workers if spec.launcher == "local" else 1
    if device_type == "cuda":
        import torch

        sharing = max(1, math.ceil(workers / max(torch.cuda.device_count(), 1)))
        free = _gpu_free(device)
        whose = f"{_gib(free)} free on the GPU"
        return free // sharing, whose + (f" / {sharing} workers on it" if sharing > 1 else "")
    import psutil

    free, whose = psutil.virtual_memory().available, "available"
    cgroup = _cgroup_free()
    if cgroup is not None and cgroup < free:
        free, whose = cgroup, "left under the cgroup's memory.max"
    limit = os.environ.get(LIMIT_ENV)
    if limit:
        try:
            given = parse_bytes(limit)
        except ValueError as err:
            raise SweepError(f"{LIMIT_ENV}: {err}") from None
        if given < free:
            free, whose = given, f"set by {LIMIT_ENV}"
    text = f"{_gib(free)} {whose}"
    return free // workers, text + (f" / {workers} workers" if workers > 1 else "")


def _device_type(train: TrainConfig) -> tuple[str, str]:
    if train.device != "auto":
        return train.device.partition(":")[0], train.device
    import torch

    return ("cuda", "cuda") if torch.cuda.is_available() else ("cpu", "cpu")


def _largest_trial(spec: SweepSpec) -> tuple | None:
    """``(bytes, variant, task, train, TrialMemory, (device type, device))`` of the sweep's
    largest trial, or None where no trial runs on a CPU or CUDA device."""
    from ..train.trial import smoke_train

    worst = None
    for task in sweep_tasks(spec):
        train = smoke_train(train_for(spec, task))  # the budget a trial runs (smoke tests: capped)
        device_type, device = _device_type(train)
        if device_type not in ("cpu", "cuda"):
            continue
        facts = model_facts(spec.model, task, spec.model_options)
        for variant in spec.variants:
            need = trial_memory(facts, variant, train, spec.model_options, device_type)
            if worst is None or need.total > worst[0]:
                worst = (need.total, variant, task, train, need, (device_type, device))
    return worst


def check_memory(spec: SweepSpec) -> None:
    """Refuse a sweep whose largest trial (over its tasks and variants) cannot fit in what each
    worker has: a :class:`SweepError` naming the estimate and the settings to lower."""
    if os.environ.get(OFF_ENV, "").strip().lower() in ("off", "0", "false", "no") \
            or spec.launcher == "slurm" or os.environ.get("LORASWEEP_TRIAL_FUNCTION"):
        return  # off; workers elsewhere; trials that are a stand-in for run_trial (tests)
    try:
        worst = _largest_trial(spec)
    except SweepError:
        raise
    except Exception:  # a model the meta device cannot build: the estimate is best effort
        return
    if worst is None:
        return
    total, variant, task, train, need, (device_type, device) = worst
    have, whose = worker_memory(spec, device_type, device)
    if total <= have:
        return
    raise SweepError(
        f"a trial of {variant.tag} on {task} needs about {_gib(total)} ({need.parts_text()}, "
        f"batch {train.batch_size} x length {train.max_length}) but each worker has "
        f"{_gib(have)} ({whose}): lower --max-length (now {train.max_length}), "
        f"--batch-size (now {train.batch_size}) with --grad-accum to keep the "
        f"effective batch of {train.batch_size * train.grad_accum}, or --workers, or try it small "
        f"with --try; {OFF_ENV}=off runs it anyway")
