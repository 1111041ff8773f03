"""What a transfer search trusted, per variant: its prediction, the window it probed, whether the
window extended or widened, and the chosen LR's shift against LoRA's beside the study's.

Read from the studies' attributes (``transfer``, ``search_state``: :mod:`lorasweep.sweep.transfer`),
never from a worker. A transfer answer is a search's, not a grid's: the report says which LRs
were probed (the window and its extensions), and the curve draws the rungs as the adaptive
search's are drawn.
"""

from __future__ import annotations

from typing import Any

from ..published import study_curves

__all__ = ["TRANSFER_HEADERS", "TRANSFER_TITLE", "search_label", "transfer_cells",
           "transfer_index", "transfer_markdown", "transfer_rows", "transfer_table",
           "window_marks"]

#: The section's title in every report: a transfer answer is a search's, never a full grid's.
TRANSFER_TITLE = "transfer search: what it trusted (a search, not a full grid)"


def transfer_rows(storage_url: str | None, sweep: str | None = None) -> list[dict[str, Any]]:
    """One row per variant study of a transfer search (read-only on the store)."""
    from ..sweep.status import open_read, sweep_summaries

    out = []
    for summary in sweep_summaries(open_read(storage_url), sweep):
        attrs = summary.user_attrs
        state, transfer = attrs.get("search_state") or {}, attrs.get("transfer")
        if attrs.get("search") != "transfer" or not transfer:
            continue
        notes = " ".join(state.get("notes", []))
        ref, best = transfer.get("reference_lr"), state.get("best_lr") if state.get("finished") else None
        curves = study_curves(attrs["task"])
        study_lr = curves.best_lr(attrs["variant"]) if curves else None
        study_lora = curves.best_lr("lora") if curves else None
        prior = transfer.get("prior") or {}
        out.append({
            "sweep": attrs["sweep"], "task": attrs["task"], "model": attrs["model"],
            "variant": attrs["variant"], "variant_tag": attrs.get("variant_tag"),
            "reference_lr": ref, "reused": bool(transfer.get("reused")),
            "prior_factor": prior.get("factor"), "prior_tables": prior.get("tables"),
            "prior_sweeps": prior.get("sweeps"), "predicted_lr": transfer.get("predicted_lr"),
            "window": transfer.get("window"), "extended": "extended the search" in notes,
            "widened": "widened" in notes, "full_search": transfer.get("window") is None,
            "chosen_lr": best, "chosen_ratio": best / ref if best and ref else None,
            "study_ratio": study_lr / study_lora if study_lr and study_lora else None,
        })
    return out


def _lr(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"x{value:.2g}"


def transfer_cells(r: dict[str, Any]) -> list[str]:
    """A row of :func:`transfer_rows` as the reports' cells (:data:`TRANSFER_HEADERS`)."""
    window = ("every grid point (no prior)" if r["full_search"]
              else ", ".join(_lr(lr) for lr in r["window"]))
    trust = ("full adaptive search" if r["full_search"] else
             "widened" if r["widened"] else "extended" if r["extended"] else "window held")
    prior = "-" if r["prior_factor"] is None else (
        f"{_ratio(r['prior_factor'])} ({r['prior_tables']} tables, {r['prior_sweeps']} sweeps)")
    lora = _lr(r["reference_lr"]) + (" (reused)" if r["reused"] else "")
    return [r["task"], r["variant_tag"] or r["variant"], lora, prior, _lr(r["predicted_lr"]),
            window, trust, _lr(r["chosen_lr"]), _ratio(r["chosen_ratio"]), _ratio(r["study_ratio"])]


TRANSFER_HEADERS = ["task", "variant", "LoRA's LR", "prior shift", "predicted LR",
                    "window probed first", "then", "chosen LR", "shift here", "shift (study)"]


def transfer_table(rows: list[dict[str, Any]]) -> Any:
    """A rich table of :func:`transfer_rows`."""
    from rich.table import Table

    from ..text import plain

    table = Table(title=TRANSFER_TITLE)
    for header in TRANSFER_HEADERS:
        table.add_column(header)
    for r in rows:
        table.add_row(*(plain(c) for c in transfer_cells(r)))
    return table


def transfer_markdown(rows: list[dict[str, Any]]) -> str:
    """A section for report.md ("" without a transfer search)."""
    if not rows:
        return ""
    lines = ["", "## Transfer search: what it trusted", "",
             "Each variant's first rung probed only the window around LoRA's best LR times its "
             "prior shift (then extended or widened as shown); this is a search, not a full grid.",
             "", "| " + " | ".join(TRANSFER_HEADERS) + " |", "|" + "---|" * len(TRANSFER_HEADERS)]
    lines += ["| " + " | ".join(transfer_cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def transfer_index(rows: list[dict[str, Any]] | None) -> dict[tuple[str, str, str, str], dict]:
    """:func:`transfer_rows` by (sweep, task, model, variant tag), as the summaries are keyed."""
    return {(r["sweep"], r["task"], r["model"], r["variant_tag"]): r for r in rows or []}


def search_label(search: str | None) -> str:
    """The search a sweep's rungs belong to, in words: ``transfer search``, ``adaptive search``
    (a sweep from before the attribute, with rungs, ran the adaptive search)."""
    return "transfer search" if search == "transfer" else "adaptive search"


def window_marks(rungs: dict[float, dict[float, float]], row: dict[str, Any] | None
                 ) -> dict[str, Any] | None:
    """Where a transfer variant's prediction and window sit on its first rung's curve:
    ``predicted`` (LR, score interpolated in log-LR between the rung's neighbouring points),
    ``window`` (its lowest and highest LR) and ``points`` (each window LR the rung scored, with
    its score). None for a variant that searched without a window (no prior) or no row."""
    import math

    if not row or not row.get("window") or row.get("predicted_lr") is None:
        return None
    first = rungs[min(rungs)] if rungs else {}
    curve = sorted(first.items())
    predicted = row["predicted_lr"]
    score = None
    if curve:
        below = [p for p in curve if p[0] <= predicted] or curve[:1]
        above = [p for p in curve if p[0] >= predicted] or curve[-1:]
        (x0, y0), (x1, y1) = below[-1], above[0]
        t = 0.0 if x0 == x1 else math.log(predicted / x0) / math.log(x1 / x0)
        score = y0 + min(max(t, 0.0), 1.0) * (y1 - y0)
    window = row["window"]
    return {"predicted": (predicted, score), "window": (min(window), max(window)),
            "points": [(lr, y) for lr, y in curve
                       if any(math.isclose(lr, w, rel_tol=1e-6) for w in window)]}
