"""report.md: per task the curves as tables, the tuned results, the study's shifts, what is left out."""

from __future__ import annotations

from typing import Any

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
    selection_note,
    short_names,
    times,
    tuned_text,
    unlisted_trials,
)
from .reference import compare
from .select import VariantSummary

__all__ = ["markdown", "reference_lines"]


def reference_lines(summaries: list[VariantSummary]) -> list[str]:
    """The table "best LR vs LoRA's: study / here" for the swept variants the study has."""
    rows = compare(summaries)
    if not rows:
        return []
    lines = ["### Best learning rate vs LoRA's: the study / here", "",
             f"The study: {rows[0]['study']}. A shift reproduces when both sides put the variant's "
             "best learning rate above LoRA's, below it, or within a factor of 2.", "",
             "| variant | study best LR | study / LoRA's | here best LR | here / LoRA's | "
             "reproduced |", "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        agrees = {True: "yes", False: "no", None: "-"}[r["agrees"]]
        lines.append(f"| {r['variant_tag']} | {lr_text(r['study_best_lr'])} | "
                     f"{times(r['study_ratio'])} | {lr_text(r['here_best_lr'])} | "
                     f"{times(r['here_ratio'])} | {agrees} |")
    return lines + [""]


def _lr_table(group: list[VariantSummary], lrs: list[float], validation: bool,
              names: dict[str, str]) -> list[str]:
    lines = ["| variant | " + " | ".join(lr_text(lr) for lr in lrs) + " |",
             "|---|" + "---:|" * len(lrs)]
    for s in group:
        cells = [cell_text(s, lr, validation) for lr in lrs]
        cells = [f"**{c}**" if lr == s.best_lr else c for lr, c in zip(lrs, cells, strict=True)]
        lines.append(f"| {names[s.variant_tag]} | " + " | ".join(cells) + " |")
    return lines


def _unlisted(rows: list[dict[str, Any]]) -> list[str]:
    left = unlisted_trials(rows)
    if not left:
        return []
    lines = ["## Trials not in the curves", "",
             "| variant | task | learning rate | seed | state | reason |", "|---|---|---:|---:|---|---|"]
    for r in sorted(left, key=lambda r: (r["variant_tag"], r["task"], r["lr"] or 0, r["seed"] or 0)):
        reason = (r.get("fail_reason") or "").replace("|", "/").replace("\n", " ")[:160]
        lines.append(f"| {r['variant_tag']} | {r['task']} | {lr_text(r['lr'])} | {r['seed']} | "
                     f"{r['state']} | {reason or '-'} |")
    return lines + [""]


def markdown(summaries: list[VariantSummary], rows: list[dict[str, Any]], tolerance: float,
             image: str | None = "curves.png") -> str:
    lines = ["# Learning-rate sensitivity report", ""]
    if not summaries:
        failed = sum(r["state"] == "fail" for r in rows)
        lines += [f"No completed trials yet: {failed} failed, "
                  f"{sum(r['state'] in ('waiting', 'running') for r in rows)} unfinished, "
                  f"{sum(r['state'] == 'pruned' for r in rows)} pruned. Their reasons are below.",
                  ""]
    for (sweep, task, model), group in by_task(summaries).items():
        lrs = probed_lrs(group)
        names, caption = short_names(group)
        notes = [c for c in (caption and caption.capitalize() + ".",
                             rung_note(group) + "." if any(s.rungs for s in group) else None) if c]
        metric = group[0].metric
        pruners = sorted({s.pruner or "none" for s in group})
        lines += [f"## {sweep}: {task} on `{model}`", "", selection_note(group),
                  f"Pruner: {', '.join(pruners)}.", "",
                  f"Test {metric} (mean ± std over seeds) per learning rate; **bold**: each "
                  "variant's selected learning rate; (div): a seed diverged.", *notes, ""]
        lines += _lr_table(group, lrs, False, names)
        lines += ["", f"Validation {metric} (mean over seeds) per learning rate: what selects.", ""]
        lines += _lr_table(group, lrs, True, names)
        lines += ["", f"Tuned: test and validation {metric} at the selected learning rate; "
                  f"{rules_text(group, tolerance)}.", "",
                  "| variant | best LR | test | val | seeds | good-LR band | LR/LoRA | Δ LoRA |",
                  "|---|---:|---:|---:|---:|---|---:|---:|"]
        for s in group:
            lines.append(f"| {names[s.variant_tag]} | {lr_text(s.best_lr)} | {tuned_text(s)} | "
                         f"{s.validation_score:.3f} | {s.seeds} | {band_text(s)} | "
                         f"{ratio_text(s)} | {delta_text(s)} |")
        lines.append("")
        lines += [f"- {s.variant_tag}: {s.remark}" for s in group if s.remark]
        if any(s.p_value is not None for s in group):
            lines.append("Δ marked * : p < 0.05 (Welch's t-test over seeds); (n.s.): not significant.")
        lines.append("")
        lines += reference_lines(group)
    lines += _unlisted(rows)
    if image:
        lines += [f"![score against learning rate]({image})", ""]
    return "\n".join(lines)
