"""``lorasweep run``: recipe and flags -> a checked sweep -> run it -> print where the results went."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from ..config import SweepSpec, TrainConfig
from ..paths import STORE_FILE
from ..tasks import resolve_task
from ..text import format_lrs
from ._app import StorageOpt, app, console, err_console, fail, user_errors

__all__ = ["print_where", "run", "stopped_line"]

#: What ``run --help`` shows as the defaults: the default task's own (its model, grid, budget,
#: variants, search) and, for the rest, a sweep's.
_SPEC = SweepSpec()
_TASK = resolve_task(_SPEC.task)
_BUDGET = TrainConfig(**_TASK.default_train)


@app.command()
def run(
    variant: Annotated[str | None, typer.Option("--variant", "-v", show_default=f"the task's; {','.join(_TASK.default_variants)} for {_SPEC.task}", help="Variant key(s), comma-separated (see `lorasweep variants`).")] = None,
    task: Annotated[str | None, typer.Option("--task", "-t", show_default=_SPEC.task, help="Task key (see `lorasweep tasks`).")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", show_default=f"the task's; {_TASK.default_model} for {_SPEC.task}", help="embedded:minilm, a hub id or a local folder.")] = None,
    lrs: Annotated[str | None, typer.Option("--lrs", metavar="LR,LR,...", show_default=f"the task's; {format_lrs(_TASK.default_lrs)} for {_SPEC.task}", help="Learning-rate grid, e.g. 1e-5,1e-4,1e-3.")] = None,
    seeds: Annotated[str | None, typer.Option("--seeds", show_default=",".join(map(str, _SPEC.seeds)), help="Seeds, e.g. 0,1,2.")] = None,
    steps: Annotated[int | None, typer.Option("--steps", show_default=f"the task's; {_BUDGET.steps} for {_SPEC.task}", help="Optimizer steps per trial.")] = None,
    epochs: Annotated[float | None, typer.Option("--epochs", help="Epochs per trial (if --steps is not given).")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", show_default=f"the task's; {_BUDGET.batch_size} for {_SPEC.task}", help="Micro-batch size.")] = None,
    max_length: Annotated[int | None, typer.Option("--max-length", show_default=f"the task's; {_BUDGET.max_length} for {_SPEC.task}", help="Tokens per training example (longer ones are cut); lower it when a trial does not fit in memory.")] = None,
    grad_accum: Annotated[int | None, typer.Option("--grad-accum", show_default=f"the task's; {_BUDGET.grad_accum} for {_SPEC.task}", help="Micro-batches per optimizer step (the effective batch is --batch-size x this).")] = None,
    rank: Annotated[int | None, typer.Option("--rank", "-r", show_default=str(_SPEC.variants[0].rank), help="Adapter rank r.")] = None,
    alpha: Annotated[float | None, typer.Option("--alpha", show_default=f"{_SPEC.variants[0].alpha:g}", help="Adapter alpha (scale alpha/r).")] = None,
    sweep: Annotated[str | None, typer.Option("--sweep", show_default=_SPEC.name, help="Sweep name: a sweep keeps one training budget, so a new budget needs a new name.")] = None,
    storage: StorageOpt = None,
    search: Annotated[str | None, typer.Option("--search", show_default=f"the task's; {_TASK.default_search} for {_SPEC.task}; grid with --lrs", help="grid (every learning rate), adaptive (successive halving on resumed runs: every learning rate to 30% of its schedule, the best resumed to the end; at most 40% of the grid's steps by default) or transfer (LoRA's adaptive search first, then each variant's first rung only around LoRA's best LR times its prior shift: see `lorasweep variants`; 25% of the grid's steps per variant by default).")] = None,
    launcher: Annotated[str | None, typer.Option("--launcher", show_default="local with 2 workers on 2+ CPU cores, one worker per GPU on 2+ GPUs, else inline", help="inline (this process), local (worker processes) or slurm (a job array); options via --set launcher.X=V.")] = None,
    workers: Annotated[int | None, typer.Option("--workers", show_default="see --launcher; 1 with a launcher given alone", help="Worker processes (local) or array tasks (slurm).")] = None,
    pruner: Annotated[str | None, typer.Option("--pruner", show_default=_SPEC.pruner, help="none (every grid point runs to the end), median or successive-halving.")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", metavar="FILE|FOLDER|HUB_ID", help="The data of text-classification / sft: a csv, json, jsonl or parquet file (also .gz/.bz2), a folder of train.* / validation.* / test.*, or a hub id (the same as --set task.dataset=...).")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", metavar="DIR", help="Folder of the task's local data files, instead of the hub (the same as --set task.data_dir=DIR; a wrong layout is named in the error).")] = None,
    recipe: Annotated[Path | None, typer.Option("--recipe", help="A recipe YAML (flags override it).")] = None,
    log: Annotated[str | None, typer.Option("--log", help="Experiment trackers the trials log to, comma-separated: tensorboard, mlflow, wandb (default none; options via --set log.every=STEPS, log.project=NAME, log.artifacts=true). Each trial's events.jsonl is written always.")] = None,
    detach: Annotated[bool, typer.Option("--detach", help="With --launcher slurm: return once the job array is submitted (follow it with `lorasweep status`).")] = False,
    set_: Annotated[list[str] | None, typer.Option("--set", metavar="KEY=VALUE", help="Override any setting: train.steps=50, task.eval_limit=200, variant.ratio=8.")] = None,
    try_: Annotated[bool, typer.Option("--try", help="Try the sweep small first: 4 steps of batch 4, 128 tokens, 2 estimation batches, 16 evaluation examples per split (flags and --set still win), as the sweep NAME-try, kept out of NAME's report.")] = False,
    allow_any_lr: Annotated[bool, typer.Option("--allow-any-lr", help="Accept learning rates above 10 (refused as typos otherwise).")] = False,
) -> None:
    """Sweep learning rates for one or more variants (the embedded offline default with no flags)."""
    from ..config import overlay_train, parse_floats, parse_ints
    from ..launch.run import check_spec
    from ..recipe import load_recipe
    from ..sweep.spec import apply_overrides, build_spec

    try:
        data: dict[str, Any] = load_recipe(recipe) if recipe else {}
        flags = {"task": task, "model": model, "name": sweep, "storage": storage,
                 "search": search, "launcher": launcher, "workers": workers, "rank": rank, "alpha": alpha,
                 "pruner": pruner, "data_dir": data_dir, "log": log}
        if launcher is not None and isinstance(data.get("launcher"), dict):
            flags["launcher"] = {**data["launcher"], "key": launcher}  # keep the recipe's options
        data.update({k: v for k, v in flags.items() if v is not None})
        if dataset is not None:
            data["task_options"] = {**(data.get("task_options") or {}), "dataset": dataset}
        if variant is not None:
            data["variants"] = [v.strip() for v in variant.split(",") if v.strip()]
        if lrs is not None:
            data["lrs"] = parse_floats(lrs)
        if seeds is not None:
            data["seeds"] = parse_ints(seeds)
        if allow_any_lr:
            data["allow_any_lr"] = True
        given = {"steps": steps, "epochs": epochs, "batch_size": batch_size,
                 "max_length": max_length, "grad_accum": grad_accum}
        # what is not given comes from the recipe, then from the task's budget
        data["train"] = overlay_train(dict(data.get("train") or {}),
                                      {k: v for k, v in given.items() if v is not None})
        if try_:
            _small(data, given)
        spec = check_spec(build_spec(apply_overrides(data, set_ or [])), detach)
        named = {a.split("=", 1)[0].split(".", 1)[0] for a in set_ or []}
        if not {"launcher", "workers"} & (set(data) | named):  # the faster one for this machine
            from ..launch.local import default_launch  # after the checks: it imports torch
            from ..launch.run import check_launcher

            launcher, workers = default_launch()
            spec = dataclasses.replace(spec, launcher=launcher, workers=workers)
            check_launcher(spec, detach)
    except user_errors() as err:
        fail(str(err))
    _run(spec, detach)


def _small(data: dict[str, Any], given: dict[str, Any]) -> None:
    """``run --try``: the small budget under the flags given, as the sweep ``NAME-try``."""
    from ..config import TRY_EVAL_LIMIT, TRY_SUFFIX, TRY_TRAIN, SweepSpec

    small = {k: v for k, v in TRY_TRAIN.items() if given.get(k) is None}
    if given.get("epochs") is not None and given.get("steps") is None:
        small.pop("steps")
    data["train"] = {**data["train"], **small}
    options = dict(data.get("task_options") or {})
    limit = options.get("eval_limit")
    options["eval_limit"] = min(limit, TRY_EVAL_LIMIT) if isinstance(limit, int) else TRY_EVAL_LIMIT
    data["task_options"] = options
    data["name"] = f"{data.get('name') or SweepSpec.name}{TRY_SUFFIX}"


def _follow(spec: Any) -> str:
    """The options that name this sweep's store in a printed command (password masked)."""
    from ..sweep.store import storage_label

    return f"--sweep {spec.name}" + (f" --storage {storage_label(spec.storage)}" if spec.storage else "")


def _run(spec: Any, detach: bool = False) -> None:
    from ..launch.progress import SweepProgress
    from ..launch.run import run_sweep
    from ..text import plain, plural

    variants = ", ".join(v.tag for v in spec.variants)
    how = f"{spec.search} search over " if spec.search != "grid" else ""
    err_console.print(
        "[bold]sweep[/] " + plain(f"{spec.name}: {spec.task} on {spec.model}; {variants}; "
                                  f"{how}{plural(len(spec.lrs), 'learning rate')} ({format_lrs(spec.lrs)})"
                                  f" x {plural(len(spec.seeds), 'seed')}"),
        highlight=False, soft_wrap=True)
    from ..launch import LaunchError, StoppedWatching, WorkerDied, sigterm_interrupts

    try:
        with sigterm_interrupts():
            outcome = run_sweep(spec, progress_factory=lambda total: SweepProgress(
                total, err_console, workers=spec.workers if spec.launcher != "inline" else 1),
                detach=detach, checked=True)
    except user_errors() as err:
        fail(str(err))
    except (WorkerDied, LaunchError) as err:
        err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except StoppedWatching as stop:
        console.print(f"stopped watching; SLURM job {', '.join(stop.jobs)} keeps running. Follow it: "
                      f"lorasweep status {_follow(spec)}; stop it: lorasweep cancel {_follow(spec)}",
                      highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM (Interrupted): the trials are recorded
        import signal

        signum = getattr(stop, "signum", signal.SIGINT)
        err_console.print(f"stopped by {signal.Signals(signum).name}: the running trials were "
                          f"recorded as stopped; rerun the same command to continue them "
                          f"(see lorasweep status {_follow(spec)})", highlight=False,
                          soft_wrap=True, markup=False)
        raise typer.Exit(128 + signum) from None
    if outcome.detached:
        pending = sum(x.enqueued + x.waiting for x in outcome.syncs)
        console.print(f"submitted SLURM job {', '.join(outcome.jobs) or '(none: nothing to run)'} "
                      f"for {plural(pending, 'trial')}. Follow it: lorasweep status {_follow(spec)}; "
                      f"stop it: lorasweep cancel {_follow(spec)}", highlight=False, soft_wrap=True)
        return
    s = outcome.summary
    for study, reason in s.stopped.items():
        err_console.print(f"[bold red]error:[/] {escape(stopped_line(study, reason))}",
                          highlight=False, soft_wrap=True)
    console.print(
        f"done: {s.completed} completed ({s.diverged} diverged), {plural(s.failed, 'failed attempt')}, "
        f"{s.pruned} pruned; {outcome.skipped} already done, skipped", highlight=False)
    for line in outcome.search_lines():
        console.print(line, highlight=False, markup=False)
    if outcome.running:
        console.print(f"{plural(outcome.running, 'trial')} still running elsewhere (their "
                      "workers' heartbeats are alive).", highlight=False)
    print_where(spec, report=bool(s.completed or outcome.skipped))
    # A study stopped by its first trials' shared error was named above; its queued points are
    # not "failed after retries".
    missing = sum(g.missing + g.waiting for g in outcome.final if g.study not in s.stopped)
    if missing:
        err_console.print(f"[bold red]error:[/] {plural(missing, 'grid point')} failed after "
                          f"{spec.max_retries} retries: their errors are in `lorasweep status` "
                          "and the report; fix the cause and rerun", highlight=False)
    if missing or s.stopped:
        raise typer.Exit(1)


def stopped_line(study: str, reason: str) -> str:
    """The line for a study stopped because its first trials failed alike (after ``error:``)."""
    return (f"{study}: its first trials all failed with: {reason.strip().rstrip('.;,:')}; "
            "stopped it instead of repeating this for every learning rate; fix the cause and "
            "rerun (its waiting trials stay queued)")


def print_where(spec: Any, report: bool = True) -> None:
    """Where a run's results went, and the command that reports them (``report``: the sweep
    has a finished trial to report; without one, no ``next:`` line points at an empty report)."""
    from ..sweep.store import storage_label

    store = storage_label(spec.storage) if spec.storage else str(STORE_FILE)
    console.print(escape(f"results: study store {store}; trial folders {Path(spec.runs_dir) / spec.name}/"),
                  highlight=False, soft_wrap=True)
    if spec.log:
        from ..train.trackers import where_lines

        for line in where_lines(spec.log, spec.name, storage_label, spec.log_options):
            console.print(line, highlight=False, soft_wrap=True, markup=False)
    if not report:
        return
    console.print(escape(f"next: lorasweep report --sweep {spec.name}"
                         + (f" --storage {store}" if spec.storage else "")), highlight=False,
                  soft_wrap=True)
