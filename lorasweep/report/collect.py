"""Store -> tidy table: one row per grid-point trial, then per-variant learning-rate summaries.

The report reads the study store only (never a worker's memory), so it can be made at any time,
from any machine that reaches the store, while a sweep is still running.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections import defaultdict
from typing import Any

__all__ = ["Cell", "VariantSummary", "collect_rows", "study_status", "summarise"]

_STATES = ("waiting", "running", "complete", "failed", "pruned")


def _open(storage_url: str | None):
    from ..sweep.store import default_storage_url, open_storage

    return open_storage(storage_url or default_storage_url(), create=False)


def _studies(storage: Any, sweep: str | None):
    import optuna

    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        attrs = summary.user_attrs
        if "sweep" not in attrs or (sweep is not None and attrs["sweep"] != sweep):
            continue
        yield optuna.load_study(study_name=summary.study_name, storage=storage)


def collect_rows(storage_url: str | None, sweep: str | None = None) -> list[dict[str, Any]]:
    """One row per trial of a grid point (stray and superseded failures excluded)."""
    rows = []
    storage = _open(storage_url)
    for study in _studies(storage, sweep):
        s = study.user_attrs
        trials = study.get_trials(deepcopy=False)
        retried = _retried_points(trials)
        for t in trials:
            if "grid_point" not in t.user_attrs:
                continue
            if t.state.name == "FAIL" and t.user_attrs["grid_point"] in retried:
                continue
            u = t.user_attrs
            metric = u.get("metric")
            score = u.get(f"test_{metric}") if metric else None
            rows.append({
                "sweep": s["sweep"], "task": s["task"], "task_group": s.get("task_group"),
                "model": s["model"],
                "variant": s["variant"], "variant_tag": s["variant_tag"], "study": study.study_name,
                "trial": t.number, "state": t.state.name.lower(),
                "lr": t.params.get("lr", u.get("config", {}).get("lr")),
                "seed": t.params.get("seed"),
                "metric": metric, "value": t.value,
                "score": score if score is not None else t.value,
                "diverged": bool(u.get("diverged", False)),
                "wall_time_s": u.get("wall_time_s"), "peak_memory_mb": u.get("peak_memory_mb"),
                "tokens_per_second": u.get("tokens_per_second"),
                "trainable_params": u.get("trainable_params"),
                "fail_reason": u.get("fail_reason"),
            })
    return rows


def _retried_points(trials: list) -> set[str]:
    """Grid points with a trial that is not a failure: their earlier failures were retried."""
    return {t.user_attrs.get("grid_point") for t in trials
            if t.state.name in ("COMPLETE", "PRUNED", "WAITING", "RUNNING")}


def study_status(storage_url: str | None, sweep: str | None = None) -> list[dict[str, Any]]:
    """Per study: how many trials wait, run, completed, failed (not since retried), pruned."""
    out = []
    storage = _open(storage_url)
    for study in _studies(storage, sweep):
        counts = dict.fromkeys(_STATES, 0)
        trials = study.get_trials(deepcopy=False)
        retried = _retried_points(trials)
        for t in trials:
            if "grid_point" not in t.user_attrs:
                continue
            state = t.state.name.lower()
            if state == "fail" and t.user_attrs["grid_point"] in retried:
                continue  # failed, then retried: the retry is what counts
            counts["failed" if state == "fail" else state] += 1
        s = study.user_attrs
        out.append({"study": study.study_name, "sweep": s["sweep"], "task": s["task"],
                    "model": s["model"], "variant": s["variant_tag"], **counts})
    return out


@dataclasses.dataclass
class Cell:
    """Score of one (variant, lr) over seeds."""

    mean: float
    std: float
    n: int
    diverged: int


@dataclasses.dataclass
class VariantSummary:
    sweep: str
    task: str
    model: str
    variant: str
    variant_tag: str
    metric: str
    cells: dict[float, Cell]
    best_lr: float | None
    peak: float | None
    band: tuple[float, float] | None  # lowest and highest LR within tolerance of the peak
    delta_vs_lora: float | None = None

    @property
    def band_decades(self) -> float | None:
        return None if self.band is None else math.log10(self.band[1] / self.band[0])


def _group_averages(summaries: list[VariantSummary], rows: list[dict[str, Any]],
                    band_tolerance: float) -> list[VariantSummary]:
    """For task groups (``glue``): per variant and LR, the mean over the group's tasks.

    A learning rate enters the average only where every task of the group has a score, as the
    study averages the nine GLUE tasks.
    """
    groups: dict[tuple, set[str]] = defaultdict(set)
    for r in rows:
        if r.get("task_group"):
            groups[(r["sweep"], r["task_group"], r["model"])].add(r["task"])
    out = []
    for (sweep, group, model), tasks in sorted(groups.items()):
        by_variant: dict[str, list[VariantSummary]] = defaultdict(list)
        for s in summaries:
            if (s.sweep, s.model) == (sweep, model) and s.task in tasks:
                by_variant[s.variant_tag].append(s)
        for tag, members in sorted(by_variant.items()):
            if {m.task for m in members} != tasks:
                continue  # not every task has results yet
            lrs = set.intersection(*(set(m.cells) for m in members))
            if not lrs:
                continue
            cells = {lr: Cell(statistics.fmean(m.cells[lr].mean for m in members),
                              statistics.fmean(m.cells[lr].std for m in members),
                              min(m.cells[lr].n for m in members),
                              sum(m.cells[lr].diverged for m in members)) for lr in sorted(lrs)}
            best_lr = max(cells, key=lambda lr: cells[lr].mean)
            peak = cells[best_lr].mean
            good = [lr for lr, c in cells.items() if c.mean >= peak - band_tolerance]
            out.append(VariantSummary(sweep, f"{group} (avg of {len(tasks)})", model,
                                      members[0].variant, tag, "average", cells, best_lr, peak,
                                      (min(good), max(good))))
    return out


def summarise(rows: list[dict[str, Any]], band_tolerance: float = 0.01) -> list[VariantSummary]:
    """Mean ± std per (variant, lr) over completed seeds; best LR, peak, good-LR band, Δ vs LoRA.

    The good-LR band runs from the lowest to the highest grid LR whose mean score is within
    ``band_tolerance`` (absolute) of the variant's peak.
    """
    groups: dict[tuple, dict[float, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["state"] == "complete" and r["score"] is not None:
            key = (r["sweep"], r["task"], r["model"], r["variant"], r["variant_tag"], r["metric"])
            groups[key][r["lr"]].append(r)
    out = []
    for (sweep, task, model, variant, tag, metric), by_lr in sorted(groups.items()):
        cells = {}
        for lr, rs in sorted(by_lr.items()):
            scores = [r["score"] for r in rs]
            std = statistics.stdev(scores) if len(scores) > 1 else 0.0
            cells[lr] = Cell(statistics.fmean(scores), std, len(scores), sum(r["diverged"] for r in rs))
        best_lr = max(cells, key=lambda lr: cells[lr].mean)
        peak = cells[best_lr].mean
        good = [lr for lr, c in cells.items() if c.mean >= peak - band_tolerance]
        out.append(VariantSummary(sweep, task, model, variant, tag, metric, cells, best_lr, peak,
                                  (min(good), max(good))))
    out += _group_averages(out, rows, band_tolerance)
    for s in out:
        lora = [o for o in out if (o.sweep, o.task, o.model) == (s.sweep, s.task, s.model)
                and o.variant == "lora"]
        if lora and s.peak is not None:
            s.delta_vs_lora = s.peak - max(o.peak for o in lora)
    return out
