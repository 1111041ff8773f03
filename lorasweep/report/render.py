"""Render summaries: a rich terminal table, report.md, results.csv, results.json, curves.png."""

from __future__ import annotations

import csv
import dataclasses
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from .._json import json_safe
from ..text import format_lr, plain
from .collect import VariantSummary

__all__ = ["render_terminal", "write_report"]


def _by_task(summaries: list[VariantSummary]) -> dict[tuple[str, str, str], list[VariantSummary]]:
    """One table (and one plot) per sweep, task and model."""
    grouped: dict[tuple[str, str, str], list[VariantSummary]] = defaultdict(list)
    for s in summaries:
        grouped[(s.sweep, s.task, s.model)].append(s)
    return grouped


def _lrs(group: list[VariantSummary]) -> list[float]:
    return sorted({lr for s in group for lr in s.cells})


def _cell_text(s: VariantSummary, lr: float) -> str:
    c = s.cells.get(lr)
    if c is None:
        return "-"
    text = f"{c.mean:.3f}" + (f" ± {c.std:.3f}" if c.n > 1 else "")
    return text + (" (div)" if c.diverged else "")


def _band_text(s: VariantSummary) -> str:
    if s.band is None:
        return "-"
    return f"{format_lr(s.band[0])} – {format_lr(s.band[1])} ({s.band_decades:.1f} dec)"


def _delta_text(s: VariantSummary) -> str:
    if s.variant == "lora":
        return "baseline"
    return "-" if s.delta_vs_lora is None else f"{s.delta_vs_lora:+.3f}"


def render_terminal(summaries: list[VariantSummary], console: Any) -> None:
    from rich.table import Table

    for (sweep, task, model), group in _by_task(summaries).items():
        lrs = _lrs(group)
        table = Table(title=plain(f"{sweep}: {task} on {model}, test {group[0].metric} by learning rate"))
        table.add_column("variant", style="bold")
        for lr in lrs:
            table.add_column(format_lr(lr), justify="right")
        for col in ("best LR", "peak", "good-LR band", "Δ vs LoRA"):
            table.add_column(col, justify="right")
        for s in group:
            cells = [f"[bold green]{_cell_text(s, lr)}[/]" if lr == s.best_lr else _cell_text(s, lr)
                     for lr in lrs]
            table.add_row(plain(s.variant_tag), *cells, format_lr(s.best_lr), f"{s.peak:.3f}",
                          _band_text(s), _delta_text(s))
        console.print(table)


def _markdown(summaries: list[VariantSummary], rows: list[dict[str, Any]], tolerance: float) -> str:
    lines = ["# Learning-rate sensitivity report", ""]
    for (sweep, task, model), group in _by_task(summaries).items():
        lrs = _lrs(group)
        metric = group[0].metric
        lines += [f"## {sweep}: {task} on `{model}`", "",
                  f"Test {metric} (mean ± std over seeds) per learning rate; **bold**: each "
                  "variant's best learning rate.", ""]
        lines.append("| variant | " + " | ".join(format_lr(lr) for lr in lrs) + " |")
        lines.append("|---|" + "---:|" * len(lrs))
        for s in group:
            cells = [f"**{_cell_text(s, lr)}**" if lr == s.best_lr else _cell_text(s, lr) for lr in lrs]
            lines.append(f"| {s.variant_tag} | " + " | ".join(cells) + " |")
        lines += ["", f"| variant | best LR | peak {metric} | good-LR band (within {tolerance:g}) "
                  "| Δ peak vs tuned LoRA |", "|---|---:|---:|---|---:|"]
        for s in group:
            lines.append(f"| {s.variant_tag} | {format_lr(s.best_lr)} | {s.peak:.3f} | {_band_text(s)} | "
                         f"{_delta_text(s)} |")
        lines.append("")
    failed = [r for r in rows if r["state"] == "fail"]
    pending = [r for r in rows if r["state"] in ("waiting", "running")]
    if failed or pending:
        lines.append(f"{len(failed)} failed and {len(pending)} unfinished trials are not in the tables.")
    lines += ["", "![score against learning rate](curves.png)", ""]
    return "\n".join(lines)


def _plot(summaries: list[VariantSummary], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grouped = _by_task(summaries)
    fig, axes = plt.subplots(1, len(grouped), figsize=(6.5 * len(grouped), 4.5), squeeze=False)
    for ax, ((sweep, task, model), group) in zip(axes[0], grouped.items(), strict=True):
        for s in group:
            lrs = sorted(s.cells)
            means = [s.cells[lr].mean for lr in lrs]
            stds = [s.cells[lr].std for lr in lrs]
            line = ax.errorbar(lrs, means, yerr=stds, marker="o", capsize=3, label=s.variant_tag)
            diverged = [lr for lr in lrs if s.cells[lr].diverged]
            if diverged:
                ax.scatter(diverged, [s.cells[lr].mean for lr in diverged], marker="x", s=80,
                           color=line[0].get_color(), zorder=5)
            ax.scatter([s.best_lr], [s.peak], marker="*", s=180, color=line[0].get_color(), zorder=6)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel(f"test {group[0].metric}")
        ax.set_title(f"{sweep}: {task} · {Path(model).name if '/' in model else model}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(summaries: list[VariantSummary], rows: list[dict[str, Any]], out_dir: str | Path,
                 tolerance: float = 0.01) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in ("report.md", "results.csv", "results.json", "curves.png")}
    paths["report.md"].write_text(_markdown(summaries, rows, tolerance))
    fields = list(rows[0]) if rows else ["study"]
    with paths["results.csv"].open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(json_safe(r) for r in rows)
    payload = {
        "summaries": [
            {**{k: v for k, v in dataclasses.asdict(s).items() if k != "cells"},
             "band_decades": s.band_decades,
             "cells": [{"lr": lr, **dataclasses.asdict(c)} for lr, c in sorted(s.cells.items())]}
            for s in summaries
        ],
        "trials": [json_safe(r) for r in rows],
    }
    paths["results.json"].write_text(json.dumps(payload, indent=2))
    if summaries:
        _plot(summaries, paths["curves.png"])
    else:
        paths.pop("curves.png")
    return paths
