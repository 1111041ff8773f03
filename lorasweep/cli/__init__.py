"""The lorasweep command line: thin commands over plain functions.

Each command parses its options, calls one function, prints. Heavy libraries load inside those
functions, so ``lorasweep --help`` stays instant. Bad input exits with code 2 and one line that
names the problem and the fix. ``_app``: the app, the shared options and the ``error:`` line;
``run``: ``lorasweep run``; ``store``: the commands over the study store; here: the listings.
"""

from __future__ import annotations

from typing import Annotated

import typer

from . import run as _run  # noqa: F401  (each command module registers its commands, in order)
from . import store as _store  # noqa: F401
from ._app import JsonOpt, StorageOpt, app, console, err_console, fail, listing, user_errors

__all__ = ["app", "main"]


@app.command()
def variants(storage: StorageOpt = None, as_json: JsonOpt = False) -> None:
    """List the variants: key, taxonomy axis, one-line summary, the study's settings, and the
    prior shift of its best LR against LoRA's (the study's tables and the store's sweeps: what
    --search transfer starts from)."""
    from ..sweep.priors import store_priors
    from ..sweep.store import storage_errors
    from ..variants import list_variants

    try:
        with storage_errors(storage):
            known = store_priors(storage)
    except user_errors() as err:
        fail(str(err))
    entries = list_variants()
    for e in entries:
        prior = known.get(e["key"])
        e["prior"] = prior.to_dict() if prior else None
        e["prior_shift"] = ("reference" if e["key"] == "lora" else prior.text() if prior
                            else "none (full adaptive search)")
    listing(entries, ("key", "axis", "summary", "study_settings", "prior_shift"), as_json)


@app.command()
def tasks(
    as_json: JsonOpt = False,
    check: Annotated[bool, typer.Option("--check", help="Load the data of --task and show what it trains on: split sizes, label counts, the first training rows.")] = False,
    task: Annotated[str | None, typer.Option("--task", "-t", help="With --check: the task key (or module:Class).")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", metavar="FILE|FOLDER|HUB_ID", help="With --check: the same as --set task.dataset=...")] = None,
    show: Annotated[int, typer.Option("--show", help="With --check: how many training rows to show.")] = 2,
    model: Annotated[str | None, typer.Option("--model", help="With --check: the model whose tokenizer renders the rows (sft; default: the task's).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", metavar="task.KEY=VALUE", help="With --check: task options, as for `lorasweep run`.")] = None,
) -> None:
    """List the tasks: key, metric, default model, one-line summary (installed plugins too; a
    broken one is marked). With --check: what --task will train on."""
    if not check:
        from ..tasks import list_tasks

        listing(list_tasks(), ("key", "metric", "default_model", "summary"), as_json)
        return
    from ..config import ConfigError
    from ..sweep.spec import apply_overrides
    from ..tasks import TaskError, get_task
    from ..tasks.preview import preview_lines
    from ..train.model import ModelError

    try:
        if task is None:
            raise ConfigError("tasks --check needs --task KEY (see `lorasweep tasks`)")
        overrides = apply_overrides({}, set_ or [])
        options = dict(overrides.get("task_options") or {})
        if dataset is not None:
            options["dataset"] = dataset
        checked = get_task(task, **options)
        bind = getattr(checked, "bind_model", None)  # a task that renders with the model (sft)
        if bind is not None:
            from ..train.model import resolve_model

            train = overrides.get("train") or {}
            bind(*resolve_model(model or checked.default_model),
                 int(train.get("max_length") or checked.default_train.get("max_length", 256)))
        lines = preview_lines(checked, checked.load(), max(0, show))
    except (ConfigError, TaskError, ModelError) as err:
        fail(str(err))
    for line in lines:
        console.print(line, highlight=False, markup=False, soft_wrap=True)


def _plain_warnings() -> None:
    """lorasweep's own warnings (e.g. a variant swept off the rank the study ran it at) as one
    ``warning:`` line on stderr, not Python's file:line dump; other warnings as usual."""
    import warnings

    from rich.markup import escape

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
