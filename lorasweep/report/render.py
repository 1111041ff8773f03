"""Render summaries: a rich terminal table, report.md, report.html, results.csv/json, curves.png."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any

from .._json import json_safe
from ..text import plain
from ._format import (
    band_text,
    by_task,
    cell_text,
    delta_text,
    lr_text,
    probed_lrs,
    ratio_text,
    rules_text,
    rung_note,
    selection_title,
    short_names,
    tuned_text,
)
from .plot import plot_curves
from .select import BAND_TOLERANCE, SELECTION_RULE, VariantSummary, band_rule, selection_rule
from .terminal import render_left_out

__all__ = ["render_terminal", "results_payload", "running_table", "write_report"]

#: Row fields too bulky for the CSV (they stay in results.json and the HTML report).
_BULKY = ("loss_curve", "provenance")


def render_terminal(summaries: list[VariantSummary], console: Any,
                    rows: list[dict[str, Any]] | None = None,
                    tolerance: float = BAND_TOLERANCE) -> None:
    """Per sweep, task and model: the curve (every learning rate probed) and the tuned results,
    two tables that fit 80 columns for the default sweep's seven learning rates."""
    from rich import box
    from rich.table import Table

    for (sweep, task, model), group in by_task(summaries).items():
        lrs = probed_lrs(group)
        names, caption = short_names(group)
        how = selection_title(group)
        notes = [c for c in (caption, rung_note(group) if any(s.rungs for s in group) else None) if c]
        curve = Table(title=plain(f"{sweep}: {task} on {model}, test {group[0].metric} by "
                                  "learning rate"), caption=plain("; ".join(notes)) or None,
                      box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
        curve.add_column("variant", style="bold", no_wrap=True)
        for lr in lrs:
            curve.add_column(lr_text(lr), justify="right", no_wrap=True)
        tuned = Table(title=plain(f"tuned ({how})"), caption=plain(rules_text(group, tolerance)),
                      box=box.SIMPLE_HEAD, pad_edge=False)
        tuned.add_column("variant", style="bold", no_wrap=True)
        for col in ("best LR", "test", "val", "good-LR band", "LR/LoRA", "Δ LoRA"):
            tuned.add_column(col, justify="right", no_wrap=col != "good-LR band")
        for s in group:
            cells = [f"[bold green]{cell_text(s, lr)}[/]" if lr == s.best_lr else cell_text(s, lr)
                     for lr in lrs]
            curve.add_row(plain(names[s.variant_tag]), *cells)
            tuned.add_row(plain(names[s.variant_tag]), lr_text(s.best_lr), tuned_text(s),
                          f"{s.validation_score:.3f}", band_text(s), ratio_text(s), delta_text(s))
        console.print(curve)
        console.print(tuned)
        for s in group:
            if s.remark:
                console.print(plain(f"{s.variant_tag}: {s.remark}"), highlight=False)
    render_left_out(rows or [], console)  # failed (with reasons), pruned, unfinished, diverged


def results_payload(summaries: list[VariantSummary], rows: list[dict[str, Any]],
                    tolerance: float) -> dict[str, Any]:
    """results.json: the rule, one selection per (task, variant), the summaries and every trial."""
    selections = [{
        "sweep": s.sweep, "task": s.task, "model": s.model, "variant": s.variant,
        "variant_tag": s.variant_tag, "metric": s.metric, "selected_lr": s.best_lr,
        "selection": s.selection, "test_score": s.peak, "test_std": s.test_std,
        "validation_score": s.validation_score, "seeds": s.seeds, "band": s.band,
        "band_decades": s.band_decades, "lr_ratio_vs_lora": s.lr_ratio_vs_lora,
        "delta_vs_lora": s.delta_vs_lora, "p_value": s.p_value, "remark": s.remark,
        "pruner": s.pruner, "direction": s.direction,
        "rule": selection_rule(s.minimize),
    } for s in summaries]
    return json_safe({
        "rule": SELECTION_RULE,
        "band_tolerance": tolerance, "band_rule": band_rule(tolerance),
        "selections": selections,
        "summaries": [
            {**{k: v for k, v in dataclasses.asdict(s).items() if k != "cells"},
             "band_decades": s.band_decades,
             "cells": [{"lr": lr, **{k: v for k, v in dataclasses.asdict(c).items()}}
                       for lr, c in sorted(s.cells.items())]}
            for s in summaries
        ],
        "trials": rows,
    })


def write_report(summaries: list[VariantSummary], rows: list[dict[str, Any]], out_dir: str | Path,
                 tolerance: float = BAND_TOLERANCE, transfer: list[dict[str, Any]] | None = None
                 ) -> dict[str, Path]:
    """report.md, report.html, results.csv, results.json and (with results) curves.png;
    ``transfer``: :func:`.transfer.transfer_rows`, a section of report.md and report.html, and
    each transfer variant's window and prediction marked on the curves."""
    from .html import write_html
    from .markdown import markdown
    from .transfer import transfer_markdown

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in ("report.md", "report.html", "results.csv",
                                           "results.json", "curves.png")}
    if summaries:
        plot_curves(summaries, paths["curves.png"], transfer)
    else:
        paths.pop("curves.png")
        (out / "curves.png").unlink(missing_ok=True)  # never leave an older sweep's plot
    paths["report.md"].write_text(markdown(summaries, rows, tolerance,
                                           image="curves.png" if summaries else None)
                                  + transfer_markdown(transfer or []))
    write_html(summaries, rows, paths["report.html"], tolerance, transfer)
    fields = [k for k in rows[0] if k not in _BULKY] if rows else ["study"]
    with paths["results.csv"].open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(json_safe(r) for r in rows)
    paths["results.json"].write_text(json.dumps(results_payload(summaries, rows, tolerance),
                                                indent=2))
    return paths


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return (f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s") + " ago"


def running_table(running: list[tuple[dict[str, Any], dict[str, Any]]]) -> Any:
    """``lorasweep status``'s second table: per running trial, whether it runs or is lost (its
    last heartbeat too old), and its last checkpoint."""
    from rich.table import Table

    table = Table(title="running trials", caption="lost: no heartbeat within the grace period, "
                  "so no process runs it; a worker's next pop fails and retries it"
                  if any(t["lost"] for _, t in running) else None)
    for col in ("variant", "grid point", "state", "checkpoint step", "checkpoint age", "checkpoint size"):
        table.add_column(col, justify="left" if col in ("variant", "grid point", "state") else "right")
    for study, t in running:
        size = t["checkpoint_bytes"]
        state = (f"lost (last heartbeat {_age(t['heartbeat_age_s'])})" if t["lost"] else "running")
        table.add_row(plain(study["variant"]), plain(t["grid_point"]), state,
                      "-" if t["checkpoint_step"] is None else str(t["checkpoint_step"]),
                      _age(t["checkpoint_age_s"]),
                      "-" if size is None else f"{size / 2**20:.1f} MB")
    return table
