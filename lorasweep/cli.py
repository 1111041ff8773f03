"""The lorasweep command line: thin commands over plain functions.

Each command parses its options, calls one function, prints. Heavy libraries load inside those
functions, so ``lorasweep --help`` stays instant. Bad input exits with code 2 and one line that
names the problem and the fix.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from . import __version__
from .config import SweepSpec
from .paths import REPORTS_DIR, STORE_FILE
from .text import format_lr, format_lrs

__all__ = ["app", "main"]

app = typer.Typer(
    name="lorasweep",
    help="Learning-rate sweeps of LoRA variants, and their sensitivity reports.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: rich help shows flags such as --help and --json as taking a <bool>.
    rich_markup_mode=None,
)
# Reports are wide tables: when output is not a terminal (logs, CI), do not squeeze them to 80.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)
#: The embedded default sweep, whose settings ``run --help`` shows as the defaults.
_DEFAULT = SweepSpec()

# Options shared by several commands, defined once.
SweepOpt = Annotated[str | None, typer.Option("--sweep", show_default="all sweeps", help="Sweep name.")]
StorageOpt = Annotated[str | None, typer.Option("--storage", show_default=str(STORE_FILE), help="Study store: sqlite:///FILE, postgresql+psycopg://..., or journal:FILE.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _user_errors() -> tuple[type[Exception], ...]:
    from .config import ConfigError
    from .sweep.store import StorageError

    variants = sys.modules.get("lorasweep.variants.base")  # not imported: none was raised
    return (ConfigError, StorageError, *([variants.VariantError] if variants else []))


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lorasweep {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Learning-rate sweeps of LoRA variants, and their sensitivity reports."""


@app.command()
def run(
    variant: Annotated[str | None, typer.Option("--variant", "-v", show_default=_DEFAULT.variants[0].key, help="Variant key(s), comma-separated (see `lorasweep variants`).")] = None,
    task: Annotated[str | None, typer.Option("--task", "-t", show_default=_DEFAULT.task, help="Task key (see `lorasweep tasks`).")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", show_default=f"the task's; {_DEFAULT.model} for {_DEFAULT.task}", help="embedded:minilm, a hub id or a local folder.")] = None,
    lrs: Annotated[str | None, typer.Option("--lrs", metavar="LR,LR,...", show_default=f"the task's; {format_lrs(_DEFAULT.lrs)} for {_DEFAULT.task}", help="Learning-rate grid, e.g. 1e-5,1e-4,1e-3.")] = None,
    seeds: Annotated[str | None, typer.Option("--seeds", show_default=",".join(map(str, _DEFAULT.seeds)), help="Seeds, e.g. 0,1,2.")] = None,
    steps: Annotated[int | None, typer.Option("--steps", show_default=f"the task's; {_DEFAULT.train.steps} for {_DEFAULT.task}", help="Optimizer steps per trial.")] = None,
    epochs: Annotated[float | None, typer.Option("--epochs", help="Epochs per trial (if --steps is not given).")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", show_default=f"the task's; {_DEFAULT.train.batch_size} for {_DEFAULT.task}", help="Micro-batch size.")] = None,
    rank: Annotated[int | None, typer.Option("--rank", "-r", show_default=str(_DEFAULT.variants[0].rank), help="Adapter rank r.")] = None,
    alpha: Annotated[float | None, typer.Option("--alpha", show_default=f"{_DEFAULT.variants[0].alpha:g}", help="Adapter alpha (scale alpha/r).")] = None,
    sweep: Annotated[str | None, typer.Option("--sweep", show_default=_DEFAULT.name, help="Sweep name: a sweep keeps one training budget, so a new budget needs a new name.")] = None,
    storage: StorageOpt = None,
    search: Annotated[str | None, typer.Option("--search", show_default=_DEFAULT.search, help="grid (every learning rate) or adaptive (a short bracket, then a climb at full budget: at most 40% of the grid's steps by default).")] = None,
    launcher: Annotated[str | None, typer.Option("--launcher", show_default=_DEFAULT.launcher, help="inline (this process), local (worker processes) or slurm (a job array); options via --set launcher.X=V.")] = None,
    workers: Annotated[int | None, typer.Option("--workers", show_default=str(_DEFAULT.workers), help="Worker processes (local) or array tasks (slurm).")] = None,
    pruner: Annotated[str | None, typer.Option("--pruner", show_default=_DEFAULT.pruner, help="none (every grid point runs to the end), median or successive-halving.")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", metavar="DIR", help="Folder of the task's local data files, instead of the hub (the same as --set task.data_dir=DIR; a wrong layout is named in the error).")] = None,
    recipe: Annotated[Path | None, typer.Option("--recipe", help="A recipe YAML (flags override it).")] = None,
    detach: Annotated[bool, typer.Option("--detach", help="With --launcher slurm: return once the job array is submitted (follow it with `lorasweep status`).")] = False,
    set_: Annotated[list[str] | None, typer.Option("--set", metavar="KEY=VALUE", help="Override any setting: train.steps=50, task.eval_limit=200, variant.ratio=8.")] = None,
    allow_any_lr: Annotated[bool, typer.Option("--allow-any-lr", help="Accept learning rates above 10 (refused as typos otherwise).")] = False,
) -> None:
    """Sweep learning rates for one or more variants (the embedded offline default with no flags)."""
    from .config import SweepSpec, apply_overrides, load_recipe, parse_floats, parse_ints

    try:
        data: dict[str, Any] = load_recipe(recipe) if recipe else {}
        flags = {"task": task, "model": model, "name": sweep, "storage": storage,
                 "search": search, "launcher": launcher, "workers": workers, "rank": rank, "alpha": alpha,
                 "pruner": pruner, "data_dir": data_dir}
        if launcher is not None and isinstance(data.get("launcher"), dict):
            flags["launcher"] = {**data["launcher"], "key": launcher}  # keep the recipe's options
        data.update({k: v for k, v in flags.items() if v is not None})
        if variant is not None:
            data["variants"] = [v.strip() for v in variant.split(",") if v.strip()]
        if lrs is not None:
            data["lrs"] = parse_floats(lrs)
        if seeds is not None:
            data["seeds"] = parse_ints(seeds)
        if allow_any_lr:
            data["allow_any_lr"] = True
        train = dict(data.get("train") or {})  # what is not given comes from the task's budget
        if steps is not None:
            train.update(steps=steps)
        if epochs is not None:
            train.update(epochs=epochs)
            if steps is None:
                train.pop("steps", None)
        if batch_size is not None:
            train.update(batch_size=batch_size)
        data["train"] = train
        spec = SweepSpec.from_dict(apply_overrides(data, set_ or []))
        spec.validate()
    except _user_errors() as err:
        _fail(str(err))
    _run(spec, detach)


def _follow(spec: Any) -> str:
    """The options that name this sweep's store in a printed command (password masked)."""
    from .sweep.store import storage_label

    return f"--sweep {spec.name}" + (f" --storage {storage_label(spec.storage)}" if spec.storage else "")


def _run(spec: Any, detach: bool = False) -> None:
    from .launch.progress import SweepProgress
    from .sweep.run import run_sweep
    from .text import format_lrs, plain, plural

    variants = ", ".join(v.tag for v in spec.variants)
    how = "adaptive search over " if spec.search == "adaptive" else ""
    err_console.print(
        "[bold]sweep[/] " + plain(f"{spec.name}: {spec.task} on {spec.model}; {variants}; "
                                  f"{how}{plural(len(spec.lrs), 'learning rate')} ({format_lrs(spec.lrs)})"
                                  f" x {plural(len(spec.seeds), 'seed')}"),
        highlight=False, soft_wrap=True)
    from .launch import LaunchError, StoppedWatching, WorkerDied

    try:
        outcome = run_sweep(spec, progress_factory=lambda total: SweepProgress(
            total, err_console, workers=spec.workers if spec.launcher != "inline" else 1),
            detach=detach)
    except _user_errors() as err:
        _fail(str(err))
    except (WorkerDied, LaunchError) as err:
        err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except StoppedWatching as stop:
        console.print(f"stopped watching; SLURM job {', '.join(stop.jobs)} keeps running. Follow it: "
                      f"lorasweep status {_follow(spec)}; stop it: lorasweep cancel {_follow(spec)}",
                      highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    if outcome.detached:
        pending = sum(x.enqueued + x.waiting for x in outcome.syncs)
        console.print(f"submitted SLURM job {', '.join(outcome.jobs) or '(none: nothing to run)'} "
                      f"for {plural(pending, 'trial')}. Follow it: lorasweep status {_follow(spec)}; "
                      f"stop it: lorasweep cancel {_follow(spec)}", highlight=False, soft_wrap=True)
        return
    s = outcome.summary
    for study, reason in s.stopped.items():
        err_console.print(
            f"[bold red]error:[/] {escape(study)}: its first trials all failed with: {escape(reason)}; "
            "stopped it instead of repeating this for every learning rate; fix the cause and rerun "
            "(its waiting trials stay queued)", highlight=False, soft_wrap=True)
    console.print(
        f"done: {s.completed} completed ({s.diverged} diverged), {plural(s.failed, 'failed attempt')}, "
        f"{s.pruned} pruned; {outcome.skipped} already done, skipped", highlight=False)
    for line in outcome.search_lines():
        console.print(line, highlight=False, markup=False)
    if outcome.running:
        console.print(f"{plural(outcome.running, 'trial')} still running elsewhere (their "
                      "workers' heartbeats are alive).", highlight=False)
    _print_where(spec)
    # A study stopped by its first trials' shared error was named above; its queued points are
    # not "failed after retries".
    missing = sum(g.missing + g.waiting for g in outcome.final if g.study not in s.stopped)
    if missing:
        err_console.print(f"[bold red]error:[/] {plural(missing, 'grid point')} failed after "
                          f"{spec.max_retries} retries: their errors are in `lorasweep status` "
                          "and the report; fix the cause and rerun", highlight=False)
    if missing or s.stopped:
        raise typer.Exit(1)


@app.command()
def report(
    sweep: SweepOpt = None,
    storage: StorageOpt = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for report.html, report.md, curves.png, results.csv, results.json.")] = REPORTS_DIR,
    tolerance: Annotated[float, typer.Option("--band-tolerance", help="A learning rate is 'good' within this (absolute) of the best validation score.")] = 0.01,
    reference: Annotated[bool, typer.Option("--reference", help="Print only the comparison with the study's published curves (best LR vs LoRA's: study / here); writes nothing.")] = False,
) -> None:
    """Collate the studies into a learning-rate sensitivity report (read-only on the store)."""
    from .report import collect_rows, render_terminal, summarise, write_report
    from .sweep.store import storage_errors

    try:
        with storage_errors(storage):
            rows = collect_rows(storage, sweep)
    except _user_errors() as err:
        _fail(str(err))
    if not rows:
        _fail(f"no trials found{f' for sweep {sweep!r}' if sweep else ''}: run `lorasweep run` first or check --sweep/--storage")
    summaries = summarise(rows, tolerance)
    if reference:
        _print_reference(summaries)
        return
    render_terminal(summaries, console, rows)
    paths = write_report(summaries, rows, out, tolerance)
    console.print(escape("wrote " + ", ".join(str(p) for p in paths.values())), highlight=False,
                  soft_wrap=True)
    main_file = paths.get("report.html") or paths["report.md"]
    console.print(escape(f"open the report: {main_file.resolve().as_uri()}"), highlight=False,
                  soft_wrap=True)


@app.command()
def export(
    sweep: Annotated[str, typer.Option("--sweep", help="The sweep whose tuned adapters to export.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for TASK/VARIANT-TAG/ (adapter, README.md model card, curve.png).")],
    variant: Annotated[str | None, typer.Option("--variant", "-v", help="Only these variant keys or tags, comma-separated.")] = None,
    task: Annotated[str | None, typer.Option("--task", "-t", help="Only this task.")] = None,
    merge: Annotated[bool, typer.Option("--merge", help="Also write the merged full weights (safetensors) for variants that merge.")] = False,
    storage: StorageOpt = None,
) -> None:
    """Export each variant's adapter at its selected learning rate (peft and lorasweep formats)."""
    from .report import collect_rows, summarise
    from .report.export import export_tuned

    try:
        rows = collect_rows(storage, sweep)
    except _user_errors() as err:
        _fail(str(err))
    if not rows:
        _fail(f"no sweep named {sweep!r} in the store: check --sweep/--storage (see `lorasweep status`)")
    wanted = {v.strip() for v in variant.split(",") if v.strip()} if variant else None
    rows = [r for r in rows if (task is None or r["task"] == task)
            and (wanted is None or r["variant"] in wanted or r["variant_tag"] in wanted)]
    summaries = [s for s in summarise(rows) if " (avg of " not in s.task]
    if not summaries:
        _fail(f"nothing completed in sweep {sweep!r} matches --variant/--task: see `lorasweep report --sweep {sweep}`")
    for e in export_tuned(summaries, rows, out, merge):
        formats = ["lorasweep"] + (["peft"] if e.peft else []) + (["merged"] if e.merged else [])
        line = (f"{e.task} {e.variant_tag}: lr={format_lr(e.lr)} seed={e.seed} -> {e.folder} "
                f"({', '.join(formats)})" if e.seed >= 0 else f"{e.task} {e.variant_tag}: skipped")
        console.print(escape(line + (f"; {e.note}" if e.note else "")), highlight=False,
                      soft_wrap=True)


def _print_reference(summaries: list[Any]) -> None:
    from rich.table import Table

    from .report import compare
    from .report._format import lr_text

    rows = compare(summaries)
    if not rows:
        _fail("the study has no published curves for these tasks (it has GLUE, image "
              "classification, GSM8K and HumanEval): sweep one of those families")
    table = Table(title="best learning rate vs LoRA's: the study / here")
    for col in ("task", "variant", "study best LR", "study / LoRA's", "here best LR",
                "here / LoRA's", "reproduced"):
        table.add_column(col, justify="left" if col in ("task", "variant") else "right")
    for r in rows:
        table.add_row(escape(r["task"]), escape(r["variant_tag"]), lr_text(r["study_best_lr"]),
                      _ratio(r["study_ratio"]), lr_text(r["here_best_lr"]),
                      _ratio(r["here_ratio"]), {True: "yes", False: "no", None: "-"}[r["agrees"]])
    console.print(table)
    console.print(escape(f"the study: {rows[0]['study']}"), highlight=False, soft_wrap=True)


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}x"


def _print_where(spec: Any) -> None:
    """Where a run's results went, and the command that reports them."""
    from .paths import STORE_FILE
    from .sweep.store import storage_label

    store = storage_label(spec.storage) if spec.storage else str(STORE_FILE)
    console.print(escape(f"results: study store {store}; trial folders {Path(spec.runs_dir) / spec.name}/"),
                  highlight=False, soft_wrap=True)
    console.print(escape(f"next: lorasweep report --sweep {spec.name}"
                         + (f" --storage {store}" if spec.storage else "")), highlight=False,
                  soft_wrap=True)


@app.command()
def status(sweep: SweepOpt = None, storage: StorageOpt = None, as_json: JsonOpt = False) -> None:
    """Per study: trials waiting, running, complete, failed, pruned."""
    from rich.table import Table

    from .report import study_status
    from .report.render import running_table
    from .sweep.store import storage_errors
    from .text import plain

    try:
        with storage_errors(storage):
            studies = study_status(storage, sweep)
    except _user_errors() as err:
        _fail(str(err))
    if sweep is not None and not studies:
        _fail(f"no sweep named {sweep!r} in the store: check --sweep (see `lorasweep status`)")
    if as_json:
        typer.echo(json.dumps(studies, indent=2))
        return
    table = Table(title="studies")
    for col in ("sweep", "task", "model", "variant", "waiting", "running", "complete", "failed", "pruned"):
        table.add_column(col, justify="right" if col in ("waiting", "running", "complete", "failed", "pruned") else "left")
    for s in studies:
        table.add_row(*(plain(s[c]) for c in ("sweep", "task", "model", "variant", "waiting", "running", "complete", "failed", "pruned")))
    console.print(table)
    running = [(s, t) for s in studies for t in s["running_trials"]]
    if running:
        console.print(running_table(running))
    _print_jobs(storage, sweep)


def _print_jobs(storage: str | None, sweep: str | None) -> None:
    """The sweeps' SLURM jobs, with their array tasks' states (none printed if there are none)."""
    from .launch.jobs import jobs_table, sweep_jobs

    jobs = sweep_jobs(storage, sweep)
    if jobs:
        console.print(jobs_table(jobs))


@app.command()
def cancel(sweep: SweepOpt = None, storage: StorageOpt = None) -> None:
    """Cancel a sweep's SLURM jobs; their running trials go back to waiting at once."""
    from .launch.jobs import cancel_sweep
    from .text import plural

    try:
        done = cancel_sweep(storage, sweep)
    except _user_errors() as err:
        _fail(str(err))
    if not done.jobs:
        console.print("no active SLURM job" + (f" for sweep {sweep}" if sweep else ""), highlight=False)
        return
    console.print(f"cancelled SLURM job {', '.join(done.jobs)}; {plural(done.freed, 'running trial')} "
                  "back to waiting (the next `lorasweep run` takes them up)", highlight=False)


@app.command()
def delete(
    sweep: Annotated[str, typer.Option("--sweep", help="The sweep to delete (see `lorasweep status`).")],
    storage: StorageOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (for scripts).")] = False,
) -> None:
    """Delete a sweep: its studies in the store and its run folders (refused while trials run)."""
    from .sweep.delete import delete_sweep, plan_delete
    from .sweep.store import storage_label
    from .text import plain, plural

    try:
        plan = plan_delete(storage, sweep)
    except _user_errors() as err:
        _fail(str(err))
    console.print(plain(f"sweep {sweep}: {plural(len(plan.studies), 'study', 'studies')}, "
                        f"{plural(plan.trials, 'trial')} in {storage_label(plan.storage_url)}"),
                  highlight=False, soft_wrap=True)
    for folder in plan.folders:
        console.print(plain(f"  folder {folder}"), highlight=False, soft_wrap=True)
    if not yes and not typer.confirm("delete them?", default=False):
        console.print("nothing deleted")
        raise typer.Exit(1)
    try:
        delete_sweep(plan)
    except _user_errors() as err:
        _fail(str(err))
    console.print(plain(f"deleted sweep {sweep}"), highlight=False)


@app.command()
def variants(as_json: JsonOpt = False) -> None:
    """List the variants: key, taxonomy axis, one-line summary, the study's settings."""
    from .variants import list_variants

    _listing(list_variants(), ("key", "axis", "summary", "study_settings"), as_json)


@app.command()
def tasks(as_json: JsonOpt = False) -> None:
    """List the tasks: key, metric, default model, one-line summary."""
    from .tasks import list_tasks

    _listing(list_tasks(), ("key", "metric", "default_model", "summary"), as_json)


def _listing(entries: list[dict[str, Any]], columns: tuple[str, ...], as_json: bool) -> None:
    from rich.table import Table

    from .text import plain

    if as_json:
        typer.echo(json.dumps(entries, indent=2))
        return

    table = Table()
    for col in columns:
        table.add_column(col.replace("_", " "))
    for e in entries:  # formulas such as [B, B_S] are text, not markup
        table.add_row(*(plain(e[c]) for c in columns))
    console.print(table)


def _plain_warnings() -> None:
    """lorasweep's own warnings (e.g. a variant swept off the rank the study ran it at) as one
    ``warning:`` line on stderr, not Python's file:line dump; other warnings as usual."""
    import warnings

    show = warnings.showwarning

    def _show(message, category, filename, lineno, file=None, line=None):
        if category.__module__.startswith("lorasweep"):
            err_console.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False,
                              soft_wrap=True)
        else:
            show(message, category, filename, lineno, file, line)

    warnings.showwarning = _show


def main() -> None:
    _plain_warnings()
    app(prog_name="lorasweep")


if __name__ == "__main__":
    sys.exit(main())
