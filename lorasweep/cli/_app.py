"""The Typer app, the consoles, the options several commands share, and the one ``error:`` line."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.markup import escape

from .. import __version__
from .._console import DisplayConsole
from ..paths import STORE_FILE

__all__ = ["JsonOpt", "StorageOpt", "SweepOpt", "app", "console", "err_console", "fail",
           "listing", "user_errors"]

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
console = DisplayConsole(width=None if sys.stdout.isatty() else 160)
err_console = DisplayConsole(stderr=True)

# Options shared by several commands, defined once.
SweepOpt = Annotated[str | None, typer.Option("--sweep", show_default="all sweeps", help="Sweep name.")]
StorageOpt = Annotated[str | None, typer.Option("--storage", show_default=str(STORE_FILE), help="Study store: sqlite:///FILE, postgresql+psycopg://..., or journal:FILE.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def fail(message: str) -> None:
    """Bad input: one ``error:`` line on stderr, exit code 2."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def user_errors() -> tuple[type[Exception], ...]:
    """The errors that are bad input (shown by :func:`fail`), not bugs."""
    from ..config import ConfigError
    from ..sweep.store import StorageError

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


def listing(entries: list[dict[str, Any]], columns: tuple[str, ...], as_json: bool) -> None:
    """``entries`` as a table of ``columns``, or as JSON."""
    from rich.table import Table

    from ..text import plain

    if as_json:
        typer.echo(json.dumps(entries, indent=2))
        return

    table = Table()
    for col in columns:
        table.add_column(col.replace("_", " "))
    for e in entries:  # formulas such as [B, B_S] are text, not markup
        table.add_row(*(plain(e[c]) for c in columns))
    console.print(table)
