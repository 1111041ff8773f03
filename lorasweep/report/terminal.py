"""The report's terminal lines beside its tables: what the tables leave out, and why; and the
comparison with the study's published curves (``report --reference``).

Nothing is dropped from a report silently: failed trials (with their one-line reason), pruned
trials and trials still waiting or running are counted and named here; diverged learning rates
are in the tables, marked ``(div)``, at the task's worst score.
"""

from __future__ import annotations

from typing import Any

from ..sweep.outcome import one_line, trial_label
from ..text import plain, plural
from ._format import lr_text, times

__all__ = ["reference_table", "render_left_out"]

_SHOWN = 10  # trials named per kind; the rest are counted (results.csv lists them all)


def _label(row: dict[str, Any]) -> str:
    return f"{trial_label(row['variant_tag'], row['lr'], row['seed'], budget=row.get('budget'))} ({row['task']})"


def render_left_out(rows: list[dict[str, Any]], console: Any) -> None:
    """Print the failed, pruned and unfinished trials (and the diverged count), if any."""
    failed = [r for r in rows if r["state"] == "fail"]
    pruned = [r for r in rows if r["state"] == "pruned"]
    pending = [r for r in rows if r["state"] in ("waiting", "running")]
    diverged = [r for r in rows if r["state"] == "complete" and r.get("diverged")]
    if diverged:
        console.print(plain(f"{plural(len(diverged), 'trial')} diverged: in the tables as (div), "
                            "at the task's worst score"), highlight=False, soft_wrap=True)
    if not (failed or pruned or pending):
        return
    parts = [plural(len(failed), "failed trial"), plural(len(pruned), "pruned trial"),
             plural(len(pending), "unfinished trial")]
    console.print(plain("not in the tables: " + ", ".join(parts)), highlight=False, soft_wrap=True)
    for kind, group in (("failed", failed), ("pruned", pruned), ("unfinished", pending)):
        for r in group[:_SHOWN]:
            reason = f": {one_line(r.get('fail_reason') or 'no reason recorded')}" if kind == "failed" else ""
            console.print(plain(f"  {kind:<10} {_label(r)}{reason}"), highlight=False, soft_wrap=True)
        if len(group) > _SHOWN:
            console.print(plain(f"  ... and {len(group) - _SHOWN} more {kind} (see results.csv)"),
                          highlight=False)


def reference_table(rows: list[dict[str, Any]]) -> Any:
    """:func:`~lorasweep.report.reference.compare`'s rows as a table: each variant's best
    learning rate and its ratio to LoRA's, in the study and here, and whether they agree."""
    from rich.table import Table

    table = Table(title="best learning rate vs LoRA's: the study / here")
    for col in ("task", "variant", "study best LR", "study / LoRA's", "here best LR",
                "here / LoRA's", "reproduced"):
        table.add_column(col, justify="left" if col in ("task", "variant") else "right")
    for r in rows:
        table.add_row(plain(r["task"]), plain(r["variant_tag"]), lr_text(r["study_best_lr"]),
                      times(r["study_ratio"]), lr_text(r["here_best_lr"]),
                      times(r["here_ratio"]), {True: "yes", False: "no", None: "-"}[r["agrees"]])
    return table


