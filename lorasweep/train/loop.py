"""The one training loop. Variants plug in through hooks; the loop never asks which one it runs.

Reads top to bottom: optimizer from the variant's parameter groups -> warm-up + decay schedule ->
steps of (accumulated) micro-batches -> clip -> hooks -> step -> periodic evaluation reported to
the trial -> final evaluation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch

from ..config import TrainConfig
from ..tasks import Task, TaskData
from ..variants import Variant

__all__ = ["DIVERGENCE_FACTOR", "Diverged", "Reporter", "diverged_loss", "TrainResult", "lr_lambda", "train", "total_steps"]


class Diverged(Exception):
    """The loss became NaN or infinite: the learning rate is too high for this variant."""


#: A run whose training loss ends this many times above its first logged loss diverged.
DIVERGENCE_FACTOR = 2.0
_CURVE_POINTS = 100  # training-loss points kept per trial (for the report's loss curves)


def diverged_loss(curve: list[list[float]], factor: float = DIVERGENCE_FACTOR) -> bool:
    """The divergence rule on a loss curve ``[[step, loss], ...]``.

    With :math:`\ell_1` the first logged loss and :math:`\bar\ell_{end}` the mean of the last
    five logged losses, a run diverged when :math:`\bar\ell_{end} > f\,\ell_1` (``f`` = 2) or
    a loss is not finite: a loss that ends far above where it started learned nothing usable,
    even when it stayed finite (0.69 -> 7.6e6 at a learning rate of 1e8).
    """
    losses = [loss for _, loss in curve]
    if not losses:
        return False
    if not all(math.isfinite(x) for x in losses):
        return True
    tail = losses[-5:]
    return sum(tail) / len(tail) > factor * losses[0]


class Reporter(Protocol):
    def on_start(self, total_steps: int) -> None: ...
    def on_step(self, step: int, loss: float) -> None: ...
    def report(self, step: int, value: float) -> bool:
        """Record an intermediate score; True means stop this trial (pruned)."""


class SilentReporter:
    def on_start(self, total_steps: int) -> None:
        pass

    def on_step(self, step: int, loss: float) -> None:
        pass

    def report(self, step: int, value: float) -> bool:
        return False


@dataclasses.dataclass
class TrainResult:
    validation: float
    test: float
    best_validation: float
    steps: int
    final_loss: float
    diverged: bool
    pruned: bool
    train_seconds: float
    tokens: int
    history: list[dict[str, float]]
    loss_curve: list[list[float]] = dataclasses.field(default_factory=list)  # [[step, loss]]

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.train_seconds if self.train_seconds > 0 else 0.0


def total_steps(cfg: TrainConfig, n_train: int) -> int:
    if cfg.steps is not None:
        return cfg.steps
    per_epoch = math.ceil(n_train / (cfg.batch_size * cfg.grad_accum))
    return max(1, math.ceil((cfg.epochs or 1.0) * per_epoch))


def lr_lambda(cfg: TrainConfig, steps: int) -> Callable[[int], float]:
    """Linear warm-up to 1, then cosine or linear decay to 0 (or constant)."""
    warmup = int(cfg.warmup_ratio * steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if cfg.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, steps - warmup)
        if cfg.schedule == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def autocast_for(cfg: TrainConfig, device: torch.device) -> Callable[[], Any]:
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    if bf16:
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


_GROUP_BATCHES = 32  # batches per length-sorted pool


def micro_batches(task: Task, tokenizer: Any, examples: list[dict[str, Any]], cfg: TrainConfig,
                  seed: int) -> Iterator[dict[str, torch.Tensor]]:
    """Endless seeded shuffles of the training set, collated into micro-batches.

    Batches are grouped by length: each shuffled pool of ``_GROUP_BATCHES`` batches is sorted by
    length, cut into batches, and the batches are shuffled again. Every batch is still a random
    draw of similar-length examples, and padding (most of the compute on short texts) shrinks.
    """
    generator = torch.Generator().manual_seed(seed)
    size = cfg.batch_size
    pool = size * _GROUP_BATCHES
    while True:
        order = torch.randperm(len(examples), generator=generator).tolist()
        batches = []
        for start in range(0, len(order) - size + 1, pool):
            chunk = sorted(order[start : start + pool], key=lambda i: task.length(examples[i]))
            batches += [chunk[i : i + size] for i in range(0, len(chunk) - size + 1, size)]
        for b in torch.randperm(len(batches), generator=generator).tolist():
            yield task.collate(tokenizer, [examples[i] for i in batches[b]], cfg.max_length)


def train(model: torch.nn.Module, variant: Variant, task: Task, tokenizer: Any, data: TaskData,
          cfg: TrainConfig, lr: float, seed: int, device: torch.device,
          reporter: Reporter | None = None) -> TrainResult:
    reporter = reporter or SilentReporter()
    autocast = autocast_for(cfg, device)
    steps = total_steps(cfg, len(data.train))
    variant.begin_training(steps)
    optimizer = torch.optim.AdamW(variant.param_groups(lr, cfg.weight_decay))
    schedule = lr_lambda(cfg, steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: schedule(s) * variant.lr_factor(s)
    )
    params = [p for group in optimizer.param_groups for p in group["params"]]
    batches = micro_batches(task, tokenizer, data.train, cfg, seed)

    def evaluate(examples: list[dict[str, Any]]) -> float:
        return task.evaluate(model, tokenizer, examples, cfg.batch_size, cfg.max_length, autocast)

    history: list[dict[str, float]] = []
    curve: list[list[float]] = []
    every = max(1, steps // _CURVE_POINTS)
    best = -math.inf
    loss_value, tokens, diverged, pruned = math.nan, 0, False, False
    reporter.on_start(steps)
    model.train()
    started = time.perf_counter()
    step = 0
    try:
        for step in range(1, steps + 1):
            loss_sum = 0.0
            for _ in range(cfg.grad_accum):
                batch = {k: v.to(device) for k, v in next(batches).items()}
                mask = batch.get("attention_mask")
                tokens += int(mask.sum()) if mask is not None else len(next(iter(batch.values())))
                with autocast():
                    loss = model(**batch).loss
                    extra = variant.extra_loss()
                    if extra is not None:
                        loss = loss + extra
                if not torch.isfinite(loss):
                    raise Diverged(f"non-finite loss at step {step}")
                (loss / cfg.grad_accum).backward()
                loss_sum += float(loss.detach())
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            variant.before_optimizer_step()
            optimizer.step()
            variant.after_optimizer_step(step, optimizer)
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss_value = loss_sum / cfg.grad_accum
            if step == 1 or step % every == 0 or step == steps:
                curve.append([step, loss_value])
            reporter.on_step(step, loss_value)
            if cfg.eval_every and step % cfg.eval_every == 0 and step < steps:
                score = evaluate(data.validation)
                best = max(best, score)
                history.append({"step": step, "validation": score, "loss": loss_value})
                if reporter.report(step, score):
                    pruned = True
                    break
    except Diverged:
        diverged = True
    seconds = time.perf_counter() - started
    if diverged:
        worst = task.worst_score
        history.append({"step": step, "validation": worst, "loss": math.nan})
        return TrainResult(worst, worst, worst, step, math.nan, True, False, seconds, tokens, history,
                           curve)
    if curve and curve[-1][0] != step:
        curve.append([step, loss_value])
    diverged = diverged_loss(curve)  # finite, but far above where it started: scored, flagged
    validation = evaluate(data.validation)
    best = max(best, validation)
    history.append({"step": step, "validation": validation, "loss": loss_value})
    if pruned:
        test = math.nan
    elif data.test is data.validation:  # tasks that score their validation split as test (GLUE)
        test = validation
    else:
        test = evaluate(data.test)
    return TrainResult(validation, test, best, step, loss_value, diverged, pruned, seconds, tokens,
                       history, curve)
