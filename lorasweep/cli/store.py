"""The commands over the study store: ``report``, ``export``, ``status``, ``cancel``, ``delete``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from ..paths import report_dir
from ..text import format_lr
from ._app import JsonOpt, StorageOpt, SweepOpt, app, console, fail, user_errors

__all__ = ["cancel", "delete", "export", "report", "status"]


@app.command()
def report(
    sweep: SweepOpt = None,
    storage: StorageOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="Folder for report.html, report.md, curves.png, results.csv, results.json (default: lorasweep-out/reports/SWEEP, one folder per sweep).")] = None,
    tolerance: Annotated[float, typer.Option("--band-tolerance", help="A learning rate is 'good' when its validation score keeps all but this fraction of the best one's rise above chance (0-1; default 0.1: 90% of the gain over guessing). A variant not above chance gets no band.")] = 0.1,
    reference: Annotated[bool, typer.Option("--reference", help="Print only the comparison with the study's published curves (best LR vs LoRA's: study / here); writes nothing.")] = False,
) -> None:
    """Collate the studies into a learning-rate sensitivity report (read-only on the store)."""
    from ..report import collect_rows, render_terminal, summarise, write_report
    from ..report.transfer import transfer_rows, transfer_table
    from ..sweep.store import storage_errors

    if not 0.0 <= tolerance <= 1.0:
        fail(f"--band-tolerance {tolerance:g} is not a fraction: give one from 0 to 1 (of the "
             "rise above chance)")
    try:
        with storage_errors(storage):
            rows = collect_rows(storage, sweep)
            transfer = transfer_rows(storage, sweep)
    except user_errors() as err:
        fail(str(err))
    if not rows:
        fail(f"no trials found{f' for sweep {sweep!r}' if sweep else ''}: run `lorasweep run` first or check --sweep/--storage")
    summaries = summarise(rows, tolerance)
    if reference:
        _print_reference(summaries)
        return
    render_terminal(summaries, console, rows, tolerance)
    if transfer:
        console.print(transfer_table(transfer))
    paths = write_report(summaries, rows, out or report_dir([r["sweep"] for r in rows]), tolerance,
                         transfer)
    console.print(escape("wrote " + ", ".join(str(p) for p in paths.values())), highlight=False,
                  soft_wrap=True)
    main_file = paths.get("report.html") or paths["report.md"]
    console.print(escape(f"open the report: {main_file.resolve().as_uri()}"), highlight=False,
                  soft_wrap=True)


@app.command()
def export(
    sweep: Annotated[str | None, typer.Option("--sweep", help="The sweep whose tuned adapters to export (with --to: every sweep when not given).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Folder for TASK/VARIANT-TAG/ (adapter, README.md model card, curve.png).")] = None,
    to: Annotated[str | None, typer.Option("--to", help="Instead: replay the finished trials (store + each run's events.jsonl) into a tracker: tensorboard, mlflow or wandb. Again, it adds nothing (wandb: online).")] = None,
    variant: Annotated[str | None, typer.Option("--variant", "-v", help="Only these variant keys or tags, comma-separated.")] = None,
    task: Annotated[str | None, typer.Option("--task", "-t", help="Only this task.")] = None,
    merge: Annotated[bool, typer.Option("--merge", help="Also write the merged full weights (safetensors) for variants that merge.")] = False,
    storage: StorageOpt = None,
) -> None:
    """Export each variant's adapter at its selected learning rate (peft and lorasweep formats),
    or with --to, replay the sweep's trials into a tracker."""
    from ..report import collect_rows, summarise
    from ..report.export import export_tuned

    if to is not None:
        _replay(storage, sweep, to)
        return
    if sweep is None or out is None:
        fail("export needs --sweep NAME and --out DIR (or --to TRACKER to replay into a tracker)")

    try:
        rows = collect_rows(storage, sweep)
    except user_errors() as err:
        fail(str(err))
    if not rows:
        fail(f"no sweep named {sweep!r} in the store: check --sweep/--storage (see `lorasweep status`)")
    wanted = {v.strip() for v in variant.split(",") if v.strip()} if variant else None
    rows = [r for r in rows if (task is None or r["task"] == task)
            and (wanted is None or r["variant"] in wanted or r["variant_tag"] in wanted)]
    summaries = [s for s in summarise(rows) if " (avg of " not in s.task]
    if not summaries:
        fail(f"nothing completed in sweep {sweep!r} matches --variant/--task: see `lorasweep report --sweep {sweep}`")
    for e in export_tuned(summaries, rows, out, merge):
        formats = ["lorasweep"] + (["peft"] if e.peft else []) + (["merged"] if e.merged else [])
        line = (f"{e.task} {e.variant_tag}: lr={format_lr(e.lr)} seed={e.seed} -> {e.folder} "
                f"({', '.join(formats)})" if e.seed >= 0 else f"{e.task} {e.variant_tag}: skipped")
        console.print(escape(line + (f"; {e.note}" if e.note else "")), highlight=False,
                      soft_wrap=True)


def _replay(storage: str | None, sweep: str | None, to: str) -> None:
    from ..report.replay import replay_sweep
    from ..sweep.status import open_read, sweep_summaries

    try:
        if sweep is not None and not list(sweep_summaries(open_read(storage), sweep)):
            fail(f"no sweep named {sweep!r} in the store: check --sweep (see `lorasweep status`)")
        count = replay_sweep(storage, sweep, to)
    except user_errors() as err:
        fail(str(err))
    except RuntimeError as err:  # the tracker refused a record: said in one line, masked
        from ..sweep.store import mask_secrets

        fail(mask_secrets(str(err), storage))
    console.print(escape(f"replayed {count} trials into {to}"), highlight=False, soft_wrap=True)


def _print_reference(summaries: list[Any]) -> None:
    from ..report import compare
    from ..report.terminal import reference_table

    rows = compare(summaries)
    if not rows:
        fail("the study has no published curves for these tasks (it has GLUE, image "
             "classification, GSM8K and HumanEval): sweep one of those families")
    console.print(reference_table(rows))
    console.print(escape(f"the study: {rows[0]['study']}"), highlight=False, soft_wrap=True)


@app.command()
def status(sweep: SweepOpt = None, storage: StorageOpt = None, as_json: JsonOpt = False) -> None:
    """Per study: trials waiting, running, lost (no heartbeat), complete, failed, pruned."""
    from rich.table import Table

    from ..report.render import running_table
    from ..sweep.status import study_status
    from ..sweep.store import storage_errors
    from ..text import plain

    try:
        with storage_errors(storage):
            studies = study_status(storage, sweep)
    except user_errors() as err:
        fail(str(err))
    if sweep is not None and not studies:
        fail(f"no sweep named {sweep!r} in the store: check --sweep (see `lorasweep status`)")
    jobs = _jobs(storage, sweep)
    if as_json:  # each study with its sweep's SLURM jobs, as `status` prints them
        import dataclasses

        for s in studies:
            s["slurm_jobs"] = [dataclasses.asdict(j) for j in jobs if j.sweep == s["sweep"]]
        typer.echo(json.dumps(studies, indent=2))
        return
    adaptive = any(s["search"] == "adaptive" for s in studies)
    table = Table(title="studies", caption="trials: in an adaptive search each rung of a learning "
                  "rate (its run stopped at a fraction of the schedule) is a trial of its own"
                  if adaptive else None)
    counts = ("waiting", "running", *(("lost",) if any(s["lost"] for s in studies) else ()),
              "complete", "failed", "pruned")
    for col in ("sweep", "task", "model", "variant", *counts, "best"):
        table.add_column(col, justify="right" if col in counts else "left")
    for s in studies:
        table.add_row(*(plain(s[c]) for c in ("sweep", "task", "model", "variant", *counts)),
                      plain(_best_text(s)))
    console.print(table)
    running = [(s, t) for s in studies for t in s["running_trials"]]
    if running:
        console.print(running_table(running))
    if jobs:
        from ..launch.jobs import jobs_table

        console.print(jobs_table(jobs))
    _print_dashboard(storage)


def _best_text(study: dict) -> str:
    """``0.912 at lr=1e-3 (max validation_accuracy)``; ``-`` before a full-budget trial."""
    from ..text import format_lr

    if study["best_value"] is None:
        return "-"
    way = "min" if study["direction"] == "minimize" else "max"
    return (f"{study['best_value']:.4g} at lr={format_lr(study['best_lr'])} "
            f"({way} {study['objective']})")


def _print_dashboard(storage: str | None) -> None:
    """How to browse the store in optuna-dashboard, and what not to do there on a live sweep."""
    from ..sweep.urls import dashboard_command

    console.print(escape(f"browse in optuna-dashboard (read only: its delete, rename and tell "
                         f"bypass lorasweep's lock): {dashboard_command(storage)}"),
                  highlight=False, soft_wrap=True)


def _jobs(storage: str | None, sweep: str | None) -> list:
    """The sweeps' SLURM jobs, with their array tasks' states."""
    from ..launch.jobs import sweep_jobs

    return sweep_jobs(storage, sweep)


@app.command()
def cancel(sweep: SweepOpt = None, storage: StorageOpt = None) -> None:
    """Cancel a sweep's SLURM jobs; their running trials go back to waiting at once."""
    from ..launch.jobs import cancel_sweep
    from ..text import plural

    try:
        done = cancel_sweep(storage, sweep)
    except user_errors() as err:
        fail(str(err))
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
    from ..sweep.delete import delete_sweep, plan_delete
    from ..sweep.store import storage_label
    from ..text import plain, plural

    try:
        plan = plan_delete(storage, sweep)
    except user_errors() as err:
        fail(str(err))
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
    except user_errors() as err:
        fail(str(err))
    console.print(plain(f"deleted sweep {sweep}"), highlight=False)
