"""The one training loop. Variants plug in through hooks; the loop never asks which one it runs.

Reads top to bottom: optimizer from the variant's parameter groups -> warm-up + decay schedule ->
steps of (accumulated) micro-batches -> clip -> hooks -> step -> periodic evaluation reported to
the trial -> checkpoint (on its schedule, or when asked to stop) -> final evaluation. A resumed
trial loads a checkpoint first and continues from its step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch

from ..config import TrainConfig, rung_step
from ..tasks import Task, TaskData
from ..variants import Variant
from . import signals
from .checkpoint import Checkpoints, rng_state, set_rng_state
from .signals import StopRequests, TrialStopped

__all__ = [
    "DIVERGENCE_FACTOR",
    "Diverged",
    "Reporter",
    "TrainResult",
    "TrialStopped",
    "batch_order",
    "diverged_loss",
    "lr_lambda",
    "micro_batches",
    "total_steps",
    "train",
]


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
    def on_checkpoint(self, saved: dict[str, Any]) -> None:
        """A checkpoint was written (step, bytes, seconds, time); optional."""
    def on_event(self, record: dict[str, Any]) -> None:
        """A record for the trial's event log (:mod:`.events`); optional. First ``{"event":
        "start", "step": s}`` (training continues after step ``s``), then a ``step`` record per
        optimizer step and an ``eval`` record per evaluation, the last one ``final``."""


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
    #: Mean loss of the model on the validation split, for an adaptive search's rungs
    #: (``fidelity`` < 1) of tasks whose scoring pass gives it (classifiers); NaN otherwise.
    validation_loss: float = math.nan
    #: Mean training loss (the task's, without a variant's extra term such as AdaLoRA's
    #: orthogonality penalty) over the last third of the steps up to the trial's last. Every LR of a
    #: seed trains on the same batches, so this compares LRs pairwise, and it falls as soon as an
    #: LR starts to learn, before held-out scores leave chance: the adaptive search ranks a
    #: rung's tied scores by it.
    recent_loss: float = math.nan
    #: A minimized task's validation loss before the first step (the adapter at its init, NaN
    #: for a maximized task): the loss training starts from, which the report's good-LR band of
    #: a loss is measured from (a pretrained model's loss is far below a uniform predictor's).
    initial_validation: float = math.nan

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


def batch_order(task: Task, examples: list[dict[str, Any]], batch_size: int,
                seed: int) -> Iterator[list[int]]:
    """Endless seeded shuffles of the training set, as lists of example indices.

    Batches are grouped by length: each shuffled pool of ``_GROUP_BATCHES`` batches is sorted by
    length, cut into batches, and the batches are shuffled again. Every batch is still a random
    draw of similar-length examples, and padding (most of the compute on short texts) shrinks.
    A training set smaller than one batch is one batch of all its examples (it drew none, and
    the loop waited for its first batch forever); an empty one is a ``ValueError``.
    """
    if not examples:
        raise ValueError("the training split is empty: no batch can be drawn from it")
    batch_size = min(batch_size, len(examples))
    generator = torch.Generator().manual_seed(seed)
    pool = batch_size * _GROUP_BATCHES
    while True:
        order = torch.randperm(len(examples), generator=generator).tolist()
        batches = []
        for start in range(0, len(order) - batch_size + 1, pool):
            chunk = sorted(order[start : start + pool], key=lambda i: task.length(examples[i]))
            batches += [chunk[i : i + batch_size]
                        for i in range(0, len(chunk) - batch_size + 1, batch_size)]
        for b in torch.randperm(len(batches), generator=generator).tolist():
            yield batches[b]


def micro_batches(task: Task, tokenizer: Any, examples: list[dict[str, Any]], cfg: TrainConfig,
                  seed: int, start: int = 0) -> Iterator[dict[str, torch.Tensor]]:
    """:func:`batch_order` collated into micro-batches, from the ``start``-th on (a resumed
    trial skips the batches it drew before without collating them)."""
    order = itertools.islice(batch_order(task, examples, cfg.batch_size, seed), start, None)
    for indices in order:
        yield task.collate(tokenizer, [examples[i] for i in indices], cfg.max_length)


@dataclasses.dataclass
class _Progress:
    """What the loop accumulates, saved with every checkpoint."""

    step: int = 0
    tokens: int = 0
    loss: float = math.nan
    best: float = -math.inf
    seconds: float = 0.0  # training seconds of earlier processes (resumed trials)
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)
    curve: list[list[float]] = dataclasses.field(default_factory=list)  # [[step, loss]]
    recent_since: int = 0  # the recent-loss window: steps after this one ...
    recent_sum: float = 0.0  # ... their summed training loss ...
    recent_steps: int = 0  # ... and how many there were (a resumed rung restarts the window)
    initial: float = math.nan  # a minimized task's validation loss before the first step


def _group_name(index: int, group: dict[str, Any]) -> str:
    return str(group.get("name") or f"group{index}")


def _group_norms(optimizer: torch.optim.Optimizer) -> dict[str, float] | None:
    """Each parameter group's gradient norm (None with one group: the total norm is its own)."""
    if len(optimizer.param_groups) < 2:
        return None
    return {_group_name(i, g): float(torch.nn.utils.get_total_norm(
        [p.grad for p in g["params"] if p.grad is not None]))
        for i, g in enumerate(optimizer.param_groups)}


def train(model: torch.nn.Module, variant: Variant, task: Task, tokenizer: Any, data: TaskData,
          cfg: TrainConfig, lr: float, seed: int, device: torch.device,
          reporter: Reporter | None = None, checkpoints: Checkpoints | None = None,
          resume: dict[str, Any] | None = None, fidelity: float = 1.0,
          direction: str = "maximize", worst: float | None = None) -> TrainResult:
    """Train ``steps`` optimizer steps; with ``checkpoints``, save the whole state on their
    schedule and when the process is asked to stop (then raise :class:`TrialStopped`); with
    ``resume`` (a loaded checkpoint), continue from its step, bit for bit as if never stopped.

    ``fidelity`` < 1 (a rung of the adaptive search): follow the same schedule but stop after
    that fraction of its steps, score validation alone (test NaN) and measure the validation
    loss, and save a checkpoint there, from which the next rung resumes.

    ``direction`` (the study's): whether the best evaluation is the highest or the lowest;
    ``worst`` (the study's): what a diverged run records (None: the task's ``worst_score``)."""
    own = StopRequests() if signals.active() is None else None
    try:
        with own or contextlib.nullcontext():
            return _train(model, variant, task, tokenizer, data, cfg, lr, seed, device,
                          reporter or SilentReporter(), checkpoints, resume, fidelity,
                          direction, worst)
    finally:
        if own is not None:
            own.forward()


def _train(model: torch.nn.Module, variant: Variant, task: Task, tokenizer: Any, data: TaskData,
           cfg: TrainConfig, lr: float, seed: int, device: torch.device, reporter: Reporter,
           checkpoints: Checkpoints | None, resume: dict[str, Any] | None,
           fidelity: float = 1.0, direction: str = "maximize",
           worst: float | None = None) -> TrainResult:
    pick = min if direction == "minimize" else max  # the better of two evaluations
    autocast = autocast_for(cfg, device)
    steps = total_steps(cfg, len(data.train))
    last = rung_step(steps, fidelity)  # this trial's last step: the schedule's end, or a rung's
    if resume is not None:  # before the optimizer: a variant may re-create tensors (ranks)
        variant.load_state_dict({k: v.to(device) for k, v in resume["adapter"].items()})
    variant.quantize_base()  # after every write into W (inits, prepare, a resume's refold)
    variant.begin_training(steps)
    optimizer = torch.optim.AdamW(variant.param_groups(lr, cfg.weight_decay))
    schedule = lr_lambda(cfg, steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: schedule(s) * variant.lr_factor(s)
    )
    params = [p for group in optimizer.param_groups for p in group["params"]]
    progress = _Progress(best=math.inf if direction == "minimize" else -math.inf)
    if resume is not None:
        variant.load_training_state(resume["variant"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        progress = _Progress(**resume["loop"])
        for point in progress.history:  # the new trial gets the scores reported before
            reporter.report(int(point["step"]), point["validation"])
    batches = micro_batches(task, tokenizer, data.train, cfg, seed, progress.step * cfg.grad_accum)
    since = last - max(1, round(last / 3))  # the recent loss: the last third of this trial's steps
    if progress.recent_since != since:  # a new trial, or the next rung of a resumed one
        progress.recent_since, progress.recent_sum, progress.recent_steps = since, 0.0, 0

    saved_at = [progress.step] if resume is not None else []  # the step the last checkpoint holds

    def phase() -> Any:  # an evaluation: a stop request ends it at once (no step to finish)
        return signals.interruptible(saved_at[-1] if saved_at else 0, bool(saved_at))

    def evaluate(examples: list[dict[str, Any]]) -> float:
        with phase():
            return task.evaluate(model, tokenizer, examples, cfg.batch_size, cfg.max_length,
                                 autocast)

    def save(rng: dict[str, Any] | None = None) -> None:
        state = {"adapter": variant.state_dict(), "variant": variant.training_state(),
                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "rng": rng or rng_state(), "loop": dataclasses.asdict(progress)}
        saved = checkpoints.save(state)
        saved_at.append(progress.step)
        on_checkpoint = getattr(reporter, "on_checkpoint", None)
        if on_checkpoint is not None:
            on_checkpoint(saved)

    history, curve, step = progress.history, progress.curve, progress.step
    every = max(1, steps // _CURVE_POINTS)
    diverged = pruned = False
    logging = getattr(reporter, "on_event", None) is not None  # else no norms to compute
    on_event = reporter.on_event if logging else (lambda record: None)  # type: ignore[attr-defined]
    on_event({"event": "start", "step": progress.step, "total": last})
    reporter.on_start(last)
    if resume is None and direction == "minimize":  # one forward pass over validation
        progress.initial = evaluate(data.validation)
        on_event({"event": "eval", "step": 0, "validation": progress.initial})
    model.train()
    if resume is not None:
        set_rng_state(resume["rng"])  # last: nothing may draw between here and the next step
    started = last_save = time.perf_counter()
    try:
        for step in range(progress.step + 1, last + 1):
            loss_sum = task_sum = 0.0
            for _ in range(cfg.grad_accum):
                batch = {k: v.to(device) for k, v in next(batches).items()}
                mask = batch.get("attention_mask")
                progress.tokens += int(mask.sum()) if mask is not None else len(next(iter(batch.values())))
                with autocast():
                    loss = task_loss = model(**batch).loss
                    extra = variant.extra_loss()
                    if extra is not None:
                        loss = loss + extra
                if not torch.isfinite(loss):
                    raise Diverged(f"non-finite loss at step {step}")
                (loss / cfg.grad_accum).backward()
                loss_sum += float(loss.detach())
                task_sum += float(task_loss.detach())
            norms = _group_norms(optimizer) if logging else None  # before clipping rewrites them
            if cfg.max_grad_norm > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            elif not logging:
                grad_norm = math.nan
            else:
                grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params
                                                           if p.grad is not None])
            variant.before_optimizer_step()
            optimizer.step()
            used = {_group_name(i, g): float(g["lr"]) for i, g in enumerate(optimizer.param_groups)
                    } if logging else {}
            variant.after_optimizer_step(step, optimizer)
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            progress.loss = loss_sum / cfg.grad_accum
            if step > since:  # the task's loss alone: a variant's regulariser is not learning
                progress.recent_sum += task_sum / cfg.grad_accum
                progress.recent_steps += 1
            if step == 1 or step % every == 0 or step == last:
                curve.append([step, progress.loss])
            if logging:
                on_event({"event": "step", "step": step, "loss": progress.loss, "lr": used,
                          "grad_norm": float(grad_norm),
                          "grad_norm_groups": norms or {
                              _group_name(0, optimizer.param_groups[0]): float(grad_norm)},
                          "tokens": progress.tokens})
            reporter.on_step(step, progress.loss)
            if cfg.eval_every and step % cfg.eval_every == 0 and step < last:
                score = evaluate(data.validation)
                progress.best = pick(progress.best, score)
                history.append({"step": step, "validation": score, "loss": progress.loss})
                on_event({"event": "eval", "step": step, "validation": score,
                          "loss": progress.loss})
                if reporter.report(step, score):
                    pruned = True
                    break
            progress.step = step
            stop = signals.requested()
            periodic = step < last and checkpoints is not None and checkpoints.due(
                step, time.perf_counter() - last_save)
            if checkpoints is not None and checkpoints.enabled and (periodic or stop):
                progress.seconds += time.perf_counter() - started
                started = time.perf_counter()
                save()
                last_save = time.perf_counter()
            if stop is not None:
                raise TrialStopped(stop, step, checkpoints is not None and checkpoints.enabled)
    except Diverged:
        diverged = True
    seconds = progress.seconds + time.perf_counter() - started
    if diverged:
        worst = float(task.worst_score) if worst is None else worst
        history.append({"step": step, "validation": worst, "loss": math.nan})
        return TrainResult(worst, worst, worst, step, math.nan, True, False, seconds,
                           progress.tokens, history, curve, initial_validation=progress.initial)
    if curve and curve[-1][0] != step:
        curve.append([step, progress.loss])
    diverged = diverged_loss(curve)  # finite, but far above where it started: scored, flagged
    boundary = rng_state()  # a rung's checkpoint: the generators as the next step finds them
    rung = last < steps and not pruned
    with phase():
        validation, loss = task.evaluate_with_loss(model, tokenizer, data.validation,
                                                   cfg.batch_size, cfg.max_length, autocast)
    validation_loss = loss if rung else math.nan  # a rung's, where the scoring pass gives it
    progress.best = best = pick(progress.best, validation)
    if history and history[-1]["step"] == step:  # a rung's retry resumed at its own last step
        history.pop()
    history.append({"step": step, "validation": validation, "loss": progress.loss})
    if rung and checkpoints is not None and checkpoints.enabled:  # with its evaluation in history
        progress.seconds = seconds
        save(boundary)
    if pruned or rung:
        test = math.nan
    elif data.test is data.validation:  # tasks that score their validation split as test (GLUE)
        test = validation
    else:
        test = evaluate(data.test)
    recent = progress.recent_sum / progress.recent_steps if progress.recent_steps else math.nan
    on_event({"event": "eval", "step": step, "validation": validation, "loss": progress.loss,
              "final": True, **({"test": test} if not math.isnan(test) else {})})
    return TrainResult(validation, test, best, step, progress.loss, diverged, pruned, seconds,
                       progress.tokens, history, curve, validation_loss, recent,
                       progress.initial)
