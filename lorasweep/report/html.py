"""report.html: one self-contained file (plotly with its JavaScript inlined; no network, no server).

Per task: the learning-rate curves of every variant (log x, mean line, ±std band over seeds,
diverged points marked ✕, pruned trials an open triangle at the validation score where they
were stopped, the selected learning rate starred, values on hover) with the study's
curves in a second panel where the study has the task's family; the table of tuned results; the
training-loss curve of every trial; the cost of each variant relative to LoRA. A search's rungs
are dotted, named by the sweep's search; for a transfer search, each variant's window is shaded
(its points open squares), its predicted LR an open diamond, and a table says what the search
trusted (:func:`.transfer.transfer_rows`, the terminal's and report.md's data). At the end, every
trial's provenance (resolved config, versions, host, device, run folder).
"""

from __future__ import annotations

import html
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from .._json import json_safe
from ._format import (
    band_text,
    by_task,
    delta_text,
    lr_text,
    ratio_text,
    rules_text,
    selection_note,
    times,
    tuned_text,
    unlisted_trials,
)
from .reference import compare, study_curves
from .select import VariantSummary, selection_rule
from .transfer import (
    TRANSFER_HEADERS,
    TRANSFER_TITLE,
    search_label,
    transfer_cells,
    transfer_index,
    window_marks,
)

__all__ = ["write_html"]

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
_STYLE = """body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right}td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}
.note{color:#555}details{margin:2px 0}pre{background:#f7f7f7;padding:6px;overflow-x:auto}"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _table(header: list[str], body: list[list[str]], css: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in body)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


def _colors(summaries: list[VariantSummary]) -> dict[str, str]:
    """One colour per variant configuration across every panel, LoRA first."""
    tags = sorted({s.variant_tag for s in summaries}, key=lambda t: (not t.startswith("lora-"), t))
    return {t: _COLORS[i % len(_COLORS)] for i, t in enumerate(tags)}


def _curves_figure(group: list[VariantSummary], colors: dict[str, str],
                   marks_of: dict[tuple[str, str, str, str], dict[str, Any]] | None = None):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    ref = study_curves(group[0].task)
    swept = {s.variant for s in group}
    ref_variants = [v for v in ref.curves if v in swept] if ref else []
    cols = 2 if ref_variants else 1
    searched = [s for s in group if s.rungs]
    titles = ["here: test score (mean ± std over seeds)"
              + (f"; dotted: validation at a rung of the {search_label(searched[0].search)}"
                 if searched else "")] + ([f"the study: {ref.caption}"] if cols == 2 else [])
    fig = make_subplots(rows=1, cols=cols, subplot_titles=titles, horizontal_spacing=0.08)
    for s in group:
        color = colors[s.variant_tag]
        lrs = sorted(s.cells)
        mean = [s.cells[lr].mean for lr in lrs]
        std = [s.cells[lr].std for lr in lrs]
        hover = [f"{s.variant_tag}<br>lr {lr_text(lr)}<br>test {c.mean:.4f} ± {c.std:.4f}"
                 f"<br>validation {c.validation:.4f}<br>seeds {c.n}<br>fidelity: 100% of the "
                 "schedule" + ("<br>diverged" if c.diverged else "")
                 for lr, c in sorted(s.cells.items())]
        _rung_traces(fig, s, color)
        _window_traces(fig, s, color,
                       (marks_of or {}).get((s.sweep, s.task, s.model, s.variant_tag)))
        fig.add_trace(go.Scatter(x=lrs + lrs[::-1], y=[m + d for m, d in zip(mean, std, strict=False)]
                                 + [m - d for m, d in zip(mean[::-1], std[::-1], strict=False)],
                                 fill="toself", fillcolor=color, opacity=0.15, line={"width": 0},
                                 hoverinfo="skip", showlegend=False, legendgroup=s.variant_tag),
                      row=1, col=1)
        fig.add_trace(go.Scatter(x=lrs, y=mean, mode="lines+markers", name=s.variant_tag,
                                 line={"color": color, "dash": "solid" if s.variant != "lora"
                                       else "dash"}, legendgroup=s.variant_tag,
                                 text=hover, hovertemplate="%{text}<extra></extra>"), row=1, col=1)
        div = [lr for lr in lrs if s.cells[lr].diverged]
        if div:
            fig.add_trace(go.Scatter(x=div, y=[s.cells[lr].mean for lr in div], mode="markers",
                                     marker={"symbol": "x", "size": 12, "color": color},
                                     name=f"{s.variant_tag} diverged", legendgroup=s.variant_tag,
                                     showlegend=False, hoverinfo="skip"), row=1, col=1)
        _pruned_trace(fig, s, color)
        fig.add_trace(go.Scatter(x=[s.best_lr], y=[s.peak], mode="markers",
                                 marker={"symbol": "star", "size": 16, "color": color,
                                         "line": {"width": 1, "color": "black"}},
                                 name=f"{s.variant_tag} selected", legendgroup=s.variant_tag,
                                 showlegend=False, hovertemplate=f"{s.variant_tag} selected "
                                 f"lr {lr_text(s.best_lr)}<extra></extra>"), row=1, col=1)
    for v in ref_variants:
        tag = next(s.variant_tag for s in group if s.variant == v)
        xs, ys = zip(*ref.curves[v], strict=True)
        fig.add_trace(go.Scatter(x=list(xs), y=list(ys), mode="lines+markers",
                                 name=f"{v} (study)", legendgroup=tag, showlegend=False,
                                 line={"color": colors[tag], "dash": "dot"},
                                 hovertemplate=f"{v} (study)<br>lr %{{x:.0e}}<br>%{{y:.2f}}"
                                 "<extra></extra>"), row=1, col=2)
        best = ref.best_lr(v)
        fig.add_trace(go.Scatter(x=[best], y=[max(ys)], mode="markers", showlegend=False,
                                 marker={"symbol": "star", "size": 14, "color": colors[tag]},
                                 hoverinfo="skip"), row=1, col=2)
    fig.update_xaxes(type="log", title_text="learning rate", exponentformat="power")
    fig.update_yaxes(title_text=f"test {group[0].metric}", row=1, col=1)
    if cols == 2:
        fig.update_yaxes(title_text="score (%)", row=1, col=2)
    fig.update_layout(height=460, margin={"t": 50, "b": 40}, legend={"orientation": "v"})
    return fig


def _pruned_trace(fig, s: VariantSummary, color: str) -> None:
    """The variant's pruned trials, each at the validation score its pruner judged."""
    import plotly.graph_objects as go

    stopped = [(lr, step, score) for lr, points in sorted(s.pruned.items()) for step, score in points]
    if not stopped:
        return
    hover = [f"{s.variant_tag}<br>lr {lr_text(lr)}<br>pruned at step {step}<br>validation "
             f"{score:.4f} when stopped" for lr, step, score in stopped]
    fig.add_trace(go.Scatter(x=[lr for lr, _, _ in stopped], y=[score for _, _, score in stopped],
                             mode="markers", name=f"{s.variant_tag} pruned",
                             marker={"symbol": "triangle-down-open", "size": 11, "color": color,
                                     "line": {"width": 1.5}},
                             legendgroup=s.variant_tag, text=hover,
                             hovertemplate="%{text}<extra></extra>"), row=1, col=1)


def _rung_traces(fig, s: VariantSummary, color: str) -> None:
    """An adaptive search's stopped rungs, each a dotted line of validation scores over the
    learning rates it ran: the first rung, over every learning rate, is the sensitivity curve."""
    import plotly.graph_objects as go

    for fraction, by_lr in sorted(s.rungs.items()):
        lrs = sorted(by_lr)
        hover = [f"{s.variant_tag}<br>lr {lr_text(lr)}<br>validation {by_lr[lr]:.4f}<br>"
                 f"fidelity: {fraction:.0%} of the schedule (a rung of the "
                 f"{search_label(s.search)})"
                 for lr in lrs]
        fig.add_trace(go.Scatter(x=lrs, y=[by_lr[lr] for lr in lrs], mode="lines+markers",
                                 name=f"{s.variant_tag} at {fraction:.0%} (validation)",
                                 line={"color": color, "dash": "dot", "width": 1},
                                 marker={"size": 5, "symbol": "circle-open"}, opacity=0.8,
                                 legendgroup=s.variant_tag, text=hover,
                                 hovertemplate="%{text}<extra></extra>"), row=1, col=1)


def _window_traces(fig, s: VariantSummary, color: str, row: dict[str, Any] | None) -> None:
    """A transfer variant's window (a shaded band and open squares on its first rung) and its
    predicted LR (an open diamond on that curve): where the search started, what it trusted."""
    import plotly.graph_objects as go

    marks = window_marks(s.rungs, row)
    if marks is None:
        return
    lo, hi = marks["window"]
    fig.add_vrect(x0=lo / 10 ** 0.1, x1=hi * 10 ** 0.1, fillcolor=color, opacity=0.08,
                  line_width=0, layer="below", row=1, col=1)
    window = ", ".join(lr_text(lr) for lr in row["window"])
    points = marks["points"]
    fig.add_trace(go.Scatter(x=[lr for lr, _ in points], y=[y for _, y in points],
                             mode="markers", name=f"{s.variant_tag} window probed first",
                             marker={"symbol": "square-open", "size": 13, "color": color},
                             legendgroup=s.variant_tag,
                             text=[f"{s.variant_tag}<br>lr {lr_text(lr)}: in the window probed "
                                   f"first ({window})" for lr, _ in points],
                             hovertemplate="%{text}<extra></extra>"), row=1, col=1)
    lr, score = marks["predicted"]
    if score is None:
        return
    prior = row.get("prior_factor")
    why = (f"LoRA's lr {lr_text(row['reference_lr'])} × prior shift x{prior:.2g}"
           if prior is not None and row.get("reference_lr") is not None else "")
    fig.add_trace(go.Scatter(x=[lr], y=[score], mode="markers",
                             name=f"{s.variant_tag} predicted LR",
                             marker={"symbol": "diamond-open", "size": 13, "color": color,
                                     "line": {"width": 2}},
                             legendgroup=s.variant_tag,
                             text=[f"{s.variant_tag}<br>predicted lr {lr:.3g}<br>{why}"],
                             hovertemplate="%{text}<extra></extra>"), row=1, col=1)


def _transfer(rows: list[dict[str, Any]]) -> str:
    """The transfer search's section: what each variant's search trusted (never a full grid)."""
    if not rows:
        return ""
    return (f"<h3>{_e(TRANSFER_TITLE[0].upper() + TRANSFER_TITLE[1:])}</h3>"
            '<p class="note">Each variant\'s first rung probed only the window around LoRA\'s '
            "best learning rate times its prior shift (shaded on the curve, the prediction an "
            "open diamond), then extended or widened as shown: this is a search, not a full "
            "grid; learning rates outside the window ran only where the search walked.</p>"
            + _table(TRANSFER_HEADERS, [transfer_cells(r) for r in rows], "transfer"))


def _rung(r: dict[str, Any]) -> str:
    """`` · 30% of the schedule`` for a rung of the adaptive search (its trials of one point
    differ by that alone), else nothing."""
    budget = r.get("budget")
    return f" · {budget:.0%} of the schedule" if budget is not None and budget < 1 else ""


def _trial_name(r: dict[str, Any]) -> str:
    return f"{r['variant_tag']} · lr {lr_text(r['lr'])} · seed {r['seed']}{_rung(r)}"


def _loss_figure(rows: list[dict[str, Any]], colors: dict[str, str]):
    import plotly.graph_objects as go

    fig = go.Figure()
    named: set[str] = set()
    for r in rows:
        curve = r.get("loss_curve") or []
        if not curve:
            continue
        steps, losses = zip(*curve, strict=True)
        tag = r["variant_tag"]
        fig.add_trace(go.Scatter(  # one legend entry per variant; each trial named on hover
            x=list(steps), y=list(losses), mode="lines", name=tag, showlegend=tag not in named,
            line={"color": colors.get(tag, "#777"), "width": 1}, opacity=0.8, legendgroup=tag,
            hovertemplate=f"{_e(_trial_name(r))}<br>step %{{x}}<br>loss %{{y:.4f}}<extra></extra>"))
        named.add(tag)
    fig.update_yaxes(type="log", title_text="training loss")
    fig.update_xaxes(title_text="step")
    fig.update_layout(height=380, margin={"t": 30, "b": 40}, showlegend=True,
                      legend={"title": {"text": "variant"}})
    return fig


def _cost(group: list[VariantSummary], rows: list[dict[str, Any]]) -> str:
    per: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["state"] != "complete":
            continue
        steps = r.get("steps") or 0
        if r.get("train_time_s") and steps:
            per[r["variant_tag"]]["step_s"].append(r["train_time_s"] / steps)
        for key in ("peak_memory_mb", "trainable_params"):
            if r.get(key) is not None:
                per[r["variant_tag"]][key].append(r[key])
    bases = {r["variant_tag"]: _base(r.get("base")) for r in rows
             if r["state"] == "complete" and r.get("base")}
    means = {tag: {k: statistics.fmean(v) for k, v in d.items()} for tag, d in per.items()}
    lora = next((means.get(s.variant_tag) for s in group if s.variant == "lora"), None)

    def rel(tag: str, key: str, fmt: str) -> str:
        value = means.get(tag, {}).get(key)
        if value is None:
            return "-"
        text = format(value, fmt)
        base = (lora or {}).get(key)
        return text + (f" ({value / base:.2f}x)" if base else "")

    body = [[s.variant_tag, rel(s.variant_tag, "step_s", ".3f"),
             rel(s.variant_tag, "peak_memory_mb", ".0f"),
             rel(s.variant_tag, "trainable_params", ",.0f"),
             bases.get(s.variant_tag, "-")] for s in group]
    return _table(["variant", "time per step (s)", "peak memory (MB)", "trainable parameters",
                   "frozen base"], body)


def _base(base: dict[str, Any]) -> str:
    """A trial's frozen base in words: ``nf4, 4.13 bits/param, 5.70 GB`` (bf16: ``none, 16 ...``)."""
    return (f"{base.get('quantize', 'none')}, {base.get('bits_per_param', 0):g} bits/param, "
            f"{base.get('base_bytes', 0) / 1e9:.3g} GB")


def _reference(group: list[VariantSummary]) -> str:
    rows = compare(group)
    if not rows:
        return ""

    body = [[r["variant_tag"], lr_text(r["study_best_lr"]), times(r["study_ratio"]),
             lr_text(r["here_best_lr"]), times(r["here_ratio"]),
             {True: "yes", False: "no", None: "-"}[r["agrees"]]] for r in rows]
    return ("<h3>Best learning rate vs LoRA's: the study / here</h3>"
            f'<p class="note">The study: {_e(rows[0]["study"])}. A shift reproduces when both '
            "sides put the variant's best learning rate above LoRA's, below it, or within a "
            "factor of 2.</p>" + _table(["variant", "study best LR", "study / LoRA's",
                                          "here best LR", "here / LoRA's", "reproduced"], body,
                                         "reference"))


def _provenance(rows: list[dict[str, Any]]) -> str:
    items = []
    for r in rows:
        prov = json.dumps(json_safe(r.get("provenance") or {}), indent=2, sort_keys=True)
        summary = (f"{r['variant_tag']} · {r['task']} · lr {lr_text(r['lr'])} · seed {r['seed']}"
                   f"{_rung(r)} · {r['state']}" + (f" · {r['fail_reason']}" if r.get("fail_reason") else ""))
        items.append(f"<details><summary>{_e(summary)}</summary><pre>{_e(prov)}</pre></details>")
    return "\n".join(items)


def write_html(summaries: list[VariantSummary], rows: list[dict[str, Any]], path: Path,
               tolerance: float, transfer: list[dict[str, Any]] | None = None) -> Path:
    """``transfer``: :func:`.transfer.transfer_rows` (a section per task, marks on the curves)."""
    import plotly.offline

    colors = _colors(summaries)
    marks_of = transfer_index(transfer)
    parts = ["<h1>Learning-rate sensitivity report</h1>",
             f'<p class="note">{_e(selection_rule(any(s.minimize for s in summaries)))}.</p>']
    if not summaries:
        parts.append(f"<p>No completed trials yet ({len(rows)} trials: failed, pruned or "
                     "unfinished; see below).</p>")
    for (sweep, task, model), group in by_task(summaries).items():
        parts.append(f'<section class="task"><h2>{_e(f"{sweep}: {task} on {model}")}</h2>')
        parts.append(f'<p class="note">{_e(selection_note(group))} Pruner: '
                     f"{_e(', '.join(sorted({s.pruner or 'none' for s in group})))}.</p>")
        fig = _curves_figure(group, colors, marks_of)
        parts.append(fig.to_html(full_html=False, include_plotlyjs=False,
                                 config={"displaylogo": False}))
        metric = group[0].metric
        body = [[s.variant_tag, lr_text(s.best_lr), tuned_text(s), f"{s.validation_score:.3f}",
                 str(s.seeds), band_text(s), ratio_text(s), delta_text(s)] for s in group]
        parts.append(_table(["variant", "selected LR", f"test {metric}", "validation", "seeds",
                             f"good-LR band (within {tolerance:g} of the rise)", "LR / LoRA's",
                             "Δ vs tuned LoRA"], body, "tuned"))
        parts.append(f'<p class="note">{_e(rules_text(group, tolerance))}.</p>')
        parts += [f'<p class="note">{_e(s.variant_tag)}: {_e(s.remark)}</p>'
                  for s in group if s.remark]
        parts.append(_reference(group))
        parts.append(_transfer([r for r in transfer or []
                                if (r["sweep"], r["task"], r["model"]) == (sweep, task, model)]))
        task_rows = [r for r in rows if (r["sweep"], r["model"]) == (sweep, model)
                     and (r["task"] == task or task.startswith(f"{r.get('task_group')} "))]
        parts.append("<h3>Training loss per trial</h3>")
        parts.append(_loss_figure(task_rows, colors).to_html(full_html=False,
                                                             include_plotlyjs=False))
        parts += ["<h3>Cost (relative to LoRA)</h3>", _cost(group, task_rows), "</section>"]
    left = unlisted_trials(rows)
    if left:
        parts.append("<h2>Trials not in the curves</h2>")
        parts.append(_table(["variant", "task", "learning rate", "seed", "state", "reason"],
                            [[r["variant_tag"], r["task"], lr_text(r["lr"]), str(r["seed"]),
                              r["state"], r.get("fail_reason") or "-"] for r in left]))
    parts += ["<h2>Provenance of every trial</h2>", _provenance(rows)]
    page = ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            "<title>lorasweep report</title>"
            f"<style>{_STYLE}</style><script type=\"text/javascript\">"
            f"{plotly.offline.get_plotlyjs()}</script></head><body>\n"
            + "\n".join(parts) + "\n</body></html>\n")
    path.write_text(page)
    return path
