"""curves.png: score against learning rate, one panel per (sweep, task, model), in a grid.

What makes the panels comparable at a glance:

* one colour and marker per variant, the same in every panel, and one legend for the figure;
  LoRA comes first, in black, labelled as the baseline;
* a dotted chance-level line where the metric has one (accuracy: ``1 / classes``; Matthews
  correlation and Pearson: 0);
* variants that score the same at a learning rate stay visible: each is drawn with its own
  marker and a small horizontal offset, ``lr · 10^(δ_i)`` with ``δ_i`` a few hundredths of a
  decade, centred on the true learning rate;
* a diverged learning rate is an ``x``, each variant's best learning rate a star;
* a pruned trial is an open downward triangle at the validation score its pruner judged (its
  last report), so a learning rate the pruner stopped stays on the plot;
* a search's first rung is a dashed line of validation scores, labelled by the sweep's search
  (``adaptive search``, ``transfer search``); a transfer variant's window (the LRs its first
  rung probed first) is a shaded band in its colour and its predicted LR a diamond on that line.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from .collect import VariantSummary
from .select import chance_level
from .transfer import search_label, transfer_index, window_marks

__all__ = ["PREDICTED_LABEL", "PRUNED_LABEL", "WINDOW_LABEL", "build_figure", "chance_level",
           "grid_shape", "plot_curves", "variant_styles"]

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "p", "*")
_OFFSET_DECADES = 0.025  # between neighbouring variants, in decades of learning rate
_BASELINE = "lora"
PRUNED_LABEL = "pruned: validation when stopped"
PREDICTED_LABEL = "transfer search: predicted LR"
WINDOW_LABEL = "transfer search: window probed first"


def grid_shape(panels: int, max_cols: int = 3) -> tuple[int, int]:
    """Rows and columns for ``panels`` panels: one row up to ``max_cols``, then as square as
    possible, at most ``max_cols`` wide (4 -> 2x2, 5 or 6 -> 2x3, 7 to 9 -> 3x3)."""
    panels = max(1, panels)
    cols = panels if panels <= max_cols else min(max_cols, math.ceil(math.sqrt(panels)))
    return math.ceil(panels / cols), cols


def _order(tags: list[str], variant_of: dict[str, str]) -> list[str]:
    """LoRA configurations first, then the others by name."""
    return sorted(set(tags), key=lambda t: (variant_of.get(t) != _BASELINE, t))


def variant_styles(summaries: list[VariantSummary]) -> dict[str, dict[str, Any]]:
    """Colour, marker and legend label per variant tag, shared by every panel."""
    import matplotlib

    variant_of = {s.variant_tag: s.variant for s in summaries}
    colours = matplotlib.colormaps["tab10"].colors
    styles, others = {}, 0
    for tag in _order(list(variant_of), variant_of):
        if variant_of[tag] == _BASELINE:
            styles[tag] = {"color": "black", "marker": "o", "label": f"{tag} (baseline)",
                           "linewidth": 2.2}
        else:
            styles[tag] = {"color": colours[others % len(colours)],
                           "marker": _MARKERS[(others + 1) % len(_MARKERS)], "label": tag,
                           "linewidth": 1.5}
            others += 1
    return styles


def _panels(summaries: list[VariantSummary]) -> dict[tuple[str, str, str], list[VariantSummary]]:
    grouped: dict[tuple[str, str, str], list[VariantSummary]] = defaultdict(list)
    for s in summaries:
        grouped[(s.sweep, s.task, s.model)].append(s)
    return grouped


def build_figure(summaries: list[VariantSummary], transfer: list[dict[str, Any]] | None = None):
    """The matplotlib figure of ``summaries`` (one panel per sweep, task and model);
    ``transfer``: :func:`.transfer.transfer_rows`, whose windows and predictions it marks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = _panels(summaries)
    styles = variant_styles(summaries)
    order = list(styles)
    marks_of = transfer_index(transfer)
    rows, cols = grid_shape(len(panels))
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.9 * rows + 0.5), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, ((sweep, task, model), group) in zip(axes.flat, panels.items(), strict=False):
        group = sorted(group, key=lambda s: order.index(s.variant_tag))
        for i, s in enumerate(group):
            style = styles[s.variant_tag]
            shift = 10 ** (_OFFSET_DECADES * (i - (len(group) - 1) / 2))
            lrs = sorted(s.cells)
            xs = [lr * shift for lr in lrs]
            ax.errorbar(xs, [s.cells[lr].mean for lr in lrs], yerr=[s.cells[lr].std for lr in lrs],
                        color=style["color"], marker=style["marker"], linewidth=style["linewidth"],
                        markersize=5, capsize=3, alpha=0.9, label=style["label"])
            diverged = [lr for lr in lrs if s.cells[lr].diverged]
            if diverged:
                ax.scatter([lr * shift for lr in diverged], [s.cells[lr].mean for lr in diverged],
                           marker="x", s=70, color=style["color"], zorder=5)
            stopped = [(lr, score) for lr, points in s.pruned.items() for _, score in points]
            if stopped:
                ax.scatter([lr * shift for lr, _ in stopped], [score for _, score in stopped],
                           marker="v", s=55, facecolors="none", edgecolors=style["color"],
                           linewidths=1.3, zorder=5)
            if s.best_lr is not None:
                ax.scatter([s.best_lr * shift], [s.peak], marker="*", s=170, color=style["color"],
                           edgecolors="white", linewidths=0.6, zorder=6)
            if s.rungs:  # a search: its first rung (adaptive: every LR; transfer: the window on)
                first = min(s.rungs)
                seen = sorted(s.rungs[first])
                ax.plot([lr * shift for lr in seen], [s.rungs[first][lr] for lr in seen],
                        color=style["color"], linestyle="--", linewidth=1.0, marker=".",
                        alpha=0.6)
                rung_label = f"{search_label(s.search)}: validation at {first:.0%}"
            marks = window_marks(s.rungs, marks_of.get((sweep, task, model, s.variant_tag)))
            if marks:
                _mark_window(ax, marks, shift, style["color"])
        if any(s.rungs for s in group):
            ax.plot([], [], color="grey", linestyle="--", linewidth=1.0, marker=".",
                    label=rung_label)
        if any(marks_of.get((sweep, task, model, s.variant_tag), {}).get("window") for s in group):
            ax.fill_between([], [], color="grey", alpha=0.15, linewidth=0, label=WINDOW_LABEL)
            ax.scatter([], [], marker="D", s=45, facecolors="none", edgecolors="grey",
                       label=PREDICTED_LABEL)
        if any(s.pruned for s in group):
            ax.scatter([], [], marker="v", s=55, facecolors="none", edgecolors="grey",
                       linewidths=1.3, label=PRUNED_LABEL)
        chance = group[0].chance  # the study's record (its labels; a loss: the uniform one's)
        if chance is None and group[0].direction != "minimize":
            chance = chance_level(task, group[0].metric)
        if chance is not None:
            ax.axhline(chance, color="grey", linestyle=":", linewidth=1.2, label="chance")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel(f"test {group[0].metric}")
        shown_model = Path(model).name if "/" in model else model
        ax.set_title(f"{sweep}: {task} · {shown_model}", fontsize="medium")
        ax.grid(True, which="both", alpha=0.3)
    handles = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    labels = [styles[t]["label"] for t in order if styles[t]["label"] in handles]
    labels += [label for label in handles if label not in labels]
    per_row = 5 if cols > 1 else 2  # one panel is too narrow for more
    fig.legend([handles[label] for label in labels], labels, loc="lower center",
               ncol=min(len(labels), per_row), fontsize="small", frameon=False)
    legend_rows = math.ceil(len(labels) / per_row)
    fig.tight_layout(rect=(0, 0.04 + 0.035 * legend_rows / rows, 1, 1))
    return fig


def _mark_window(ax, marks: dict[str, Any], shift: float, color: Any) -> None:
    """A transfer variant's window (a band over its LRs) and predicted LR (a diamond)."""
    lo, hi = marks["window"]
    ax.axvspan(lo * shift / 10 ** 0.1, hi * shift * 10 ** 0.1, color=color, alpha=0.08, zorder=0,
               gid="transfer-window")
    lr, score = marks["predicted"]
    if score is not None:
        ax.scatter([lr * shift], [score], marker="D", s=45, facecolors="none", edgecolors=color,
                   linewidths=1.4, zorder=6, gid="transfer-predicted")


def plot_curves(summaries: list[VariantSummary], path: str | Path,
                transfer: list[dict[str, Any]] | None = None) -> Path:
    """Write ``curves.png`` (``transfer``: as :func:`build_figure` takes it)."""
    import matplotlib.pyplot as plt

    fig = build_figure(summaries, transfer)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
