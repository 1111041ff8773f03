"""run_trial: one TrialSpec in, one result out (model -> variant -> prepare -> train -> save)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import platform
import resource
import socket
import sys
import time
from pathlib import Path
from typing import Any

from .. import _phase as phase
from .._json import json_safe
from ..config import TrialSpec, rung_step
from . import signals
from .checkpoint import Checkpoints
from .loop import Reporter, micro_batches, total_steps, train
from .model import ModelOptions

__all__ = ["SMOKE_TEST_ENV", "TrialResult", "provenance", "run_trial", "smoke_budget",
           "smoke_train"]


@dataclasses.dataclass
class TrialResult:
    value: float  # the objective: validation score (the task's worst score if diverged)
    pruned: bool
    metrics: dict[str, Any]
    attrs: dict[str, Any]


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def provenance(device: Any) -> dict[str, Any]:
    import torch
    import transformers

    from .. import __version__

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {
        "lorasweep_version": __version__,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "python_version": sys.version.split()[0],
        "host": socket.gethostname(),
        "device": f"{device.type}: {name}",
    }


def _peak_memory_mb(device: Any) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS


def _vocab_size(model: Any) -> int | None:
    config = getattr(model, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text, "vocab_size", None)


def _claim(run_dir: Path, study: str) -> None:
    """A run folder belongs to one study: refuse one that another study's trial wrote."""
    config = run_dir / "config.json"
    if config.exists():
        owner = json.loads(config.read_text()).get("study")
        if owner != study:
            raise RuntimeError(f"run folder {run_dir} belongs to study {owner!r}, not {study!r}")
    run_dir.mkdir(parents=True, exist_ok=True)


#: Testing aid: with this set (to 1), every trial runs a token budget (one step of four short
#: examples, eight evaluation examples per split), so a sequence of commands can be checked for
#: running as written in seconds; their scores mean nothing. The trial records ``smoke_test``.
SMOKE_TEST_ENV = "LORASWEEP_SMOKE_TEST"


def smoke_train(train: Any) -> Any:
    """A ``TrainConfig`` capped to the smoke-test budget when ``LORASWEEP_SMOKE_TEST`` is set
    (as it is, unchanged, otherwise)."""
    if os.environ.get(SMOKE_TEST_ENV, "") in ("", "0"):
        return train
    return dataclasses.replace(train, steps=1, epochs=None, eval_every=0,
                               batch_size=min(train.batch_size, 4),
                               grad_accum=1, max_length=min(train.max_length, 32),
                               estimation_batches=min(train.estimation_batches, 1))


def smoke_budget(spec: TrialSpec) -> TrialSpec:
    """``spec`` capped to the smoke-test budget when ``LORASWEEP_SMOKE_TEST`` is set."""
    if os.environ.get(SMOKE_TEST_ENV, "") in ("", "0"):
        return spec
    train = smoke_train(spec.train)
    limit = spec.task_options.get("eval_limit")
    options = {**spec.task_options, "eval_limit": min(limit or 8, 8)}
    return dataclasses.replace(spec, train=train, task_options=options)


def _counted(batches: Any, total: int) -> Any:
    """The estimation batches, each one reported as the ``estimating`` phase's progress when
    the variant asks for the next (a variant without an estimation pass asks for none)."""
    for done, batch in enumerate(batches):
        phase.report("estimating", done, total)
        yield batch
        phase.report("estimating", done + 1, total)


def run_trial(spec: TrialSpec, reporter: Reporter | None = None) -> TrialResult:
    import torch

    from ..tasks import make_task
    from ..variants import apply_variant, base_storage, get_variant, save_adapter
    from .cache import worker_cache

    smoke = smoke_budget(spec)
    spec, smoke = smoke, smoke is not spec
    started = time.perf_counter()
    phase.report("initialising", 0)
    run_dir = Path(spec.run_dir)
    _claim(run_dir, spec.study)
    (run_dir / "config.json").write_text(json.dumps(spec.to_dict(), indent=2, sort_keys=True))
    device = _device(spec.train.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # the class the study resolved (a plugin's module:Class): its data is checked where it is loaded
    task = make_task(spec.task_class or spec.task, **spec.task_options)
    cache = worker_cache()  # what trials of this worker share: the model (pristine), the data
    reused = cache.stats.model_reuses
    with signals.interruptible():  # loading: a stop request ends it at once
        data = cache.task_data(task, spec.task, spec.task_options)
        loaded = cache.model(spec.model, task, spec.task, spec.seed, spec.model_options, device)
    model, tokenizer, heads = loaded.model, loaded.tokenizer, loaded.heads
    torch.manual_seed(spec.seed)
    v = spec.variant
    # The model is already on the trial's device: SVD and data-driven inits run there.
    quantize = ModelOptions.parse(spec.model_options).quantize
    apply_variant(model, v.key, rank=v.rank, alpha=v.alpha, dropout=v.dropout,
                  target_modules=v.target_modules, modules_to_save=heads, quantize=quantize,
                  **v.options)
    model.to(device)
    variant = get_variant(model)

    checkpoints = Checkpoints.for_trial(spec)
    resume = checkpoints.load()
    schedule_steps = total_steps(spec.train, len(data.train))
    last = rung_step(schedule_steps, spec.budget)
    if resume is not None and resume["loop"]["step"] > last:  # past this trial's rung: not its own
        print(f"warning: ignoring checkpoint {checkpoints.path.name} at step "
              f"{resume['loop']['step']}, past this trial's last step {last}", flush=True)
        resume = None
    if resume is None:
        prepare_started = time.perf_counter()
        estimation = itertools.islice(
            micro_batches(task, tokenizer, data.train, spec.train, seed=spec.seed + 10_000),
            spec.train.estimation_batches,
        )
        batches = _counted(({k: t.to(device) for k, t in b.items()} for b in estimation),
                           spec.train.estimation_batches)
        with signals.interruptible():  # an estimation pass may take minutes: stoppable at once
            facts = {**variant.prepare(model, batches),
                     "seconds": time.perf_counter() - prepare_started}
        prepared = json.loads(json.dumps(json_safe(facts), default=str))  # plain data, saved
        checkpoints.trial = {"prepare": prepared, "resumes": 0}
    else:  # what prepare computed is in the checkpoint's adapter tensors
        checkpoints.trial = {**resume["trial"], "resumes": resume["trial"]["resumes"] + 1}
        prepared = checkpoints.trial["prepare"]
    resumed_from = resume["loop"]["step"] if resume is not None else 0

    train_started = time.perf_counter()
    # an adaptive search's rung (budget < 1) stops early, is decided on validation alone and
    # leaves its checkpoint for the next rung
    worst = spec.diverged_score  # the study's; a spec stored before it: the task's own
    if worst is None:
        worst = task.diverged_score(_vocab_size(model) if spec.direction == "minimize" else None)
    result = train(model, variant, task, tokenizer, data, spec.train, spec.lr, spec.seed, device,
                   reporter, checkpoints, resume, fidelity=spec.budget,
                   direction=spec.direction, worst=worst)
    train_call = time.perf_counter() - train_started
    rung = last < schedule_steps
    if not result.diverged and not result.pruned and not rung:
        save_adapter(model, run_dir / "adapter", base_model=spec.model)
    if not rung or result.diverged:  # over: its result (and adapter) replace the checkpoint
        checkpoints.delete()

    trainable = sum(p.numel() for _, p in variant.adapter_parameters())
    metric = task.metric_name
    metrics = {
        "final_loss": result.final_loss,
        "validation_loss": result.validation_loss,  # a rung's; a metric named loss wins below
        "recent_loss": result.recent_loss,
        "steps": result.steps,
        "diverged": result.diverged,
        "tokens_per_second": result.tokens_per_second,
        # the task's metric last: a metric named "loss" (sft) is the validation loss itself
        f"validation_{metric}": result.validation,
        f"test_{metric}": result.test,
        f"best_validation_{metric}": result.best_validation,
        # a minimized task's validation score before the first step (a maximized one has none)
        **({f"initial_validation_{metric}": result.initial_validation}
           if spec.direction == "minimize" else {}),
        # what a task derives from its scores (sft's loss: the perplexity)
        **task.extra_metrics(result.validation, result.test),
    }
    attrs = {
        "metric": metric,
        "config": spec.to_dict(),
        "variant_config": variant.describe(),
        "trainable_params": trainable,
        "wall_time_s": (wall := time.perf_counter() - started),
        "train_time_s": result.train_seconds,
        # steps and evaluation (the loop's call); the rest of the wall time is the overhead
        "train_call_s": train_call,
        "overhead_s": wall - train_call,
        "model_reused": cache.stats.model_reuses > reused,
        "prepare": prepared,
        "resumed_from_step": resumed_from,
        "schedule_steps": schedule_steps,  # the full schedule's steps (a rung stops before)
        "resumes": checkpoints.trial["resumes"],
        "checkpoint": checkpoints.summary(),
        "peak_memory_mb": _peak_memory_mb(device),
        "base": base_storage(model, quantize),
        "history": result.history,
        "loss_curve": result.loss_curve,
        "validation_is_test": data.test is data.validation,
        "run_dir": str(run_dir),
        **({"smoke_test": True} if smoke else {}),
        **provenance(device),
    }
    kept = ("wall_time_s", "peak_memory_mb", "base", "prepare", "resumed_from_step", "resumes")
    summary = {**metrics, **{k: attrs[k] for k in kept}}
    (run_dir / "metrics.json").write_text(json.dumps(json_safe(summary), indent=2))
    value = result.best_validation if task.objective == "best" else result.validation
    return TrialResult(value, result.pruned, metrics, attrs)
