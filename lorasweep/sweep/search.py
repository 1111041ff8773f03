r"""The adaptive learning-rate search: a variant's best grid LR for a fraction of the grid's steps.

**The curves it is built for.** Score against :math:`x = \log_{10}\eta` is unimodal: a flat
region at chance below a rising edge, a peak, then a sharp collapse (often a non-finite loss).
Seeds add noise of about half a point at the peak and much more on the rising edge, and a peak
may sit at the grid's edge. The search works on the grid's own learning rates (the *lattice*
:math:`x_0 < \dots < x_{n-1}`, extended past each edge by ``extend`` points at the edge's spacing,
never above :math:`\eta = 1`), so its answer is a grid point and compares with the grid directly.

**Method: a cheap bracket, then a directed hill climb at full budget.**

1. *Bracket* (one seed, fidelity :math:`f` = ``probe_fidelity`` of the training budget, its own
   warm-up and decay): every other grid point from the lowest. The best probe locates the peak
   to one coarse step: among the probes scoring within ``tie`` (default 0.05) of the top probe
   score, the one with the lowest validation loss (the training loss over the validation split,
   teacher-forced for generation; probes measure it instead of scoring the test split). Short
   probes are noisy and, on tasks where a fresh head needs many steps, all at chance (on the
   embedded task, 12- to 16-step probes score 0.50-0.55 at every LR): the loss, continuous and
   sensitive from the first steps, then decides; where probes do separate, the score decides.
   When every probe scores within ``tie`` of every other (none stands out: the probes were too
   short to learn anything), the same points are probed again at twice the fidelity, as long as
   the step budget keeps room for one full-budget trial after them; otherwise the run says that
   the bracket is a guess. An edge extension is likewise made only within that budget.
   When :math:`b` is an end of the probed range and the extension allows, the probe continues
   two lattice steps outward until it is not (the run says so: ``note``).
2. *Climb* (full budget, every seed): evaluate :math:`x_b`, then its neighbour
   :math:`x_{b+d}` with :math:`d = +1` only if the bracket scored :math:`x_{b+2}` above
   :math:`x_{b-2}` (by the same rule: score, or loss within ``tie``) and :math:`d = -1` otherwise (short runs favour higher LRs, so down is the
   default). Then repeat from the best full-budget point :math:`x^*`: evaluate a neighbour of
   :math:`x^*` not yet evaluated; stop when both neighbours of :math:`x^*` are known (a local, hence
   by unimodality global, maximum), or when the next trial would pass the step budget
   (``budget`` x the grid's cost).

With the study's 10-point half-decade grid (1e-5..3e-1), :math:`f = 0.2` and one seed this
costs :math:`5 \cdot 0.2 + 3 = 4` full trials (40% of the grid) when the bracket is right to
one fine step; a fourth full trial would pass the default budget, so the climb stops there.

**Why not the alternatives.** Golden-section search in log-LR needs ~5 full trials on 11 points
and is blind in the flat chance region (two probes at chance, one below the rising edge and one
past the collapse, do not say where the peak is). Optuna's TPE/GP samplers with 4 trials over
4.5 decades sample mostly the flat and collapsed regions; their strength, many cheap trials, is
what an LR sweep lacks. Successive halving/Hyperband ranks LRs by their partial runs: partial
runs of a decaying schedule favour higher LRs (short-horizon bias) and, without resuming trials
from checkpoints, every promotion pays its run again. The bracket here uses short runs only to
locate the peak coarsely, and the decision is made at the full budget, on validation scores.

**Trials are ordinary trials.** Each proposal is an enqueued trial with ``lr`` and ``seed``
params and the user attributes ``grid_point`` (its key), ``search`` and ``budget`` (the fraction
of the training budget, 1.0 at full). The plan is a pure function of the study's trials, so a
killed search resumes where it stopped, nothing is repeated, and any number of workers on any
launcher can extend it: proposals are made under the study's lock (:mod:`.lock`).
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from typing import Any

from ..text import format_lr

__all__ = ["DEFAULT_OPTIONS", "Observation", "Plan", "Proposal", "SearchError", "grid_point",
           "lattice", "parse_options", "plan", "point_key"]

DEFAULT_OPTIONS: dict[str, Any] = {"budget": 0.4, "probe_fidelity": 0.2, "extend": 2, "tie": 0.05}
_MAX_LR = 1.0


class SearchError(ValueError):
    """A search option that cannot be used (one line, with the fix)."""


def parse_options(options: dict[str, Any] | None) -> dict[str, Any]:
    opts = {**DEFAULT_OPTIONS, **(options or {})}
    unknown = sorted(set(opts) - set(DEFAULT_OPTIONS))
    if unknown:
        raise SearchError(f"unknown search option {unknown[0]!r}: known are "
                          f"{', '.join(sorted(DEFAULT_OPTIONS))} (e.g. --set search.budget=0.4)")
    for name in ("budget", "probe_fidelity"):
        value = opts[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise SearchError(f"search.{name} must be a number in (0, 1], got {value!r}")
    if isinstance(opts["extend"], bool) or not isinstance(opts["extend"], int) or opts["extend"] < 0:
        raise SearchError(f"search.extend must be an integer >= 0, got {opts['extend']!r}")
    tie = opts["tie"]
    if isinstance(tie, bool) or not isinstance(tie, (int, float)) or not 0 <= tie < 1:
        raise SearchError(f"search.tie must be a number in [0, 1), got {tie!r} (e.g. --set search.tie=0.05)")
    return opts


def _round(lr: float) -> float:
    return float(f"{lr:.6g}")


def lattice(lrs: list[float], extend: int) -> tuple[list[float], int, int]:
    """The sorted grid plus ``extend`` points past each edge; returns (points, first, last) where
    ``points[first:last + 1]`` is the grid itself."""
    grid = sorted({_round(lr) for lr in lrs})
    if len(grid) < 2:
        return grid, 0, len(grid) - 1
    low_step, high_step = grid[1] / grid[0], grid[-1] / grid[-2]
    below = [_round(grid[0] / low_step**k) for k in range(extend, 0, -1)]
    above = [p for k in range(1, extend + 1) if (p := _round(grid[-1] * high_step**k)) <= _MAX_LR]
    return below + grid + above, len(below), len(below) + len(grid) - 1


def grid_point(lr: float, seed: int) -> str:
    """A grid point's key and run-folder name, its LR written as everywhere: ``lr=1e-3,seed=0``."""
    return f"lr={format_lr(lr)},seed={seed}"


def point_key(lr: float, seed: int, budget: float = 1.0) -> str:
    """The trial's ``grid_point``: the grid's key at full budget, tagged with its fraction else."""
    key = grid_point(lr, seed)
    return key if budget >= 1.0 else f"{key},budget={budget:g}"


@dataclasses.dataclass(frozen=True)
class Observation:
    """One trial as the search sees it."""

    lr: float
    seed: int
    budget: float
    state: str  # complete | pending | failed
    value: float | None = None
    #: What tells tied probes apart: a probe's validation loss, else its final training loss.
    loss: float | None = None


@dataclasses.dataclass(frozen=True)
class Proposal:
    lr: float
    seed: int
    budget: float
    phase: str  # bracket | climb

    @property
    def key(self) -> str:
        return point_key(self.lr, self.seed, self.budget)


@dataclasses.dataclass
class Plan:
    proposals: list[Proposal]
    finished: bool
    best_lr: float | None
    spent: float  # full-trial equivalents, done or pending
    cap: float
    grid: float  # the grid's cost in full trials: grid points x seeds
    notes: list[str]


def _score(obs: list[Observation], worst: float) -> tuple[float, float] | None:
    """(mean value, -mean loss) over seeds when every one is done; None while any is pending."""
    if not obs or any(o.state == "pending" for o in obs):
        return None
    values = [o.value if o.state == "complete" and o.value is not None else worst for o in obs]
    losses = [o.loss if o.loss is not None and math.isfinite(o.loss) else math.inf
              for o in obs]
    return sum(values) / len(values), -sum(losses) / len(losses)


def _probe_best(scores: dict[int, tuple[float, float]], tie: float) -> int:
    """The bracket's best probe: among those scoring within ``tie`` of the top score, the one
    with the lowest training loss (then the lowest LR)."""
    top = max(value for value, _ in scores.values())
    return max((i for i in scores if scores[i][0] >= top - tie), key=lambda i: (scores[i][1], -i))


def _flat(scores: dict[int, tuple[float, float]], tie: float, worst: float) -> bool:
    """Whether the probes all score within ``tie`` of each other (those at the task's worst
    score, a non-finite loss, aside): none stands out, so none locates the peak."""
    values = [value for value, _ in scores.values() if value > worst]
    return len(values) >= 2 and max(values) - min(values) <= tie


def _probe_above(a: tuple[float, float], b: tuple[float, float], tie: float) -> bool:
    """Whether probe ``a`` beats ``b``: by score, or by training loss when the scores tie."""
    return a[1] > b[1] if abs(a[0] - b[0]) <= tie else a[0] > b[0]


def plan(lrs: list[float], seeds: list[int], observations: list[Observation],
         options: dict[str, Any] | None = None, worst: float = 0.0,
         retry_failed: int = 1) -> Plan:
    """The next proposals given the trials so far (a pure function; see the module docstring).

    ``retry_failed``: a point whose trials all failed is proposed again while it has failed fewer
    than this many times; past that it counts as the worst score.
    """
    opts = parse_options(options)
    points, first, last = lattice(lrs, opts["extend"])
    index = {lr: i for i, lr in enumerate(points)}
    f, seeds = float(opts["probe_fidelity"]), list(seeds)
    grid = float((last - first + 1) * len(seeds))
    cap = opts["budget"] * grid
    by_point: dict[tuple[int, float], list[Observation]] = defaultdict(list)
    failures: dict[tuple[int, int, float], int] = defaultdict(int)
    spent = 0.0
    for o in observations:
        i = index.get(_round(o.lr))
        if i is None:
            continue  # a point of another grid (the lattice changed): ignore it
        if o.state == "failed":  # not counted: its retry (or its worst score) stands for it
            failures[(i, o.seed, o.budget)] += 1
        else:
            spent += o.budget
            by_point[(i, o.budget)].append(o)
    proposals: list[Proposal] = []
    notes: list[str] = []

    def known(i: int, budget: float, run_seeds: list[int]) -> list[Observation] | None:
        """The point's observations, or None (and proposals) while it is incomplete."""
        obs = by_point[(i, budget)]
        missing = [s for s in run_seeds if s not in {o.seed for o in obs}]
        out = list(obs)
        for s in missing:
            if failures[(i, s, budget)] >= retry_failed:
                out.append(Observation(points[i], s, budget, "failed"))
            else:
                proposals.append(Proposal(points[i], s, budget, "bracket" if budget < 1 else "climb"))
        return None if len(out) < len(run_seeds) else out

    # 1. Bracket: every other grid point at the probe fidelity, extended past an edge peak.
    # Probes that cannot tell the learning rates apart are run again, twice as long.
    probes = list(range(first, last + 1, 2))
    scores: dict[int, tuple[float, float]] = {}

    def all_scored() -> bool:
        """Score the probes at fidelity ``f`` (proposing the missing); whether all are known."""
        for i in probes:
            if i not in scores:
                obs = known(i, f, seeds[:1])
                sc = None if obs is None else _score(obs, worst)
                if sc is not None:
                    scores[i] = sc
        return len(scores) == len(probes)

    while True:
        if not all_scored():
            return Plan(proposals, False, None, spent + _cost(proposals), cap, grid, notes)
        if not _flat(scores, opts["tie"], worst) or 2 * f >= 1.0:
            break
        # decided once: when its first longer probe exists, later spending cannot undo it
        begun = any(by_point[(i, 2 * f)] for i in probes)
        if not begun and spent + len(probes) * 2 * f + 1.0 > cap + 1e-9:  # 1: the first climb
            notes.append(f"probes at fidelity {f:g} all scored within {opts['tie']:g} of each other "
                         "and the step budget allows no longer ones: the bracket is a guess "
                         "(raise search.budget or search.probe_fidelity, or use --search grid)")
            break
        notes.append(f"probes at fidelity {f:g} all scored within {opts['tie']:g} of each other: "
                     f"probing again at {2 * f:g}")
        f, scores = 2 * f, {}
    while True:
        if not all_scored():
            return Plan(proposals, False, None, spent + _cost(proposals), cap, grid, notes)
        b = _probe_best(scores, opts["tie"])
        step = -2 if b == min(probes) else 2 if b == max(probes) else 0
        nxt = b + step if 0 <= b + step < len(points) else b + step // 2
        if step == 0 or not 0 <= nxt < len(points) or nxt in probes:
            break
        if not by_point[(nxt, f)] and spent + _cost(proposals) + f + 1.0 > cap + 1e-9:
            notes.append(f"bracket peak at its edge (lr={points[b]:.3g}): the step budget allows no "
                         "probe past it")
            break
        probes.append(nxt)
        side = "lower" if step < 0 else "upper"
        notes.append(f"bracket peak at its {side} edge: extended the search to lr={points[nxt]:.3g}")
    lo, hi = scores.get(b - 2, (-math.inf, -math.inf)), scores.get(b + 2, (-math.inf, -math.inf))
    direction = 1 if _probe_above(hi, lo, opts["tie"]) else -1

    # 2. Climb at full budget from the bracket's best, one neighbour at a time. Full-budget
    # points already done (a grid run in the same study, say) are used as they are.
    full = {i: sc for (i, budget), obs in by_point.items() if budget == 1.0
            and {o.seed for o in obs} >= set(seeds) and (sc := _score(obs, worst)) is not None}
    current: int | None = b
    while current is not None:
        if current not in full:
            before = len(proposals)
            obs = known(current, 1.0, seeds)
            score = None if obs is None else _score(obs, worst)
            if score is None:
                if full and spent + _cost(proposals[before:]) > cap + 1e-9:
                    del proposals[before:]
                    notes.append("step budget spent before both neighbours of the best lr ran")
                break
            full[current] = score
        best = max(full, key=lambda i: (full[i], -i))
        ahead = best + (direction if best == b else (1 if best > b else -1))
        current = next((i for i in (ahead, 2 * best - ahead)
                        if 0 <= i < len(points) and i not in full), None)
    best = max(full, key=lambda i: (full[i], -i)) if full else None
    finished = not proposals and all(o.state != "pending" for obs in by_point.values() for o in obs)
    if finished and best is not None and not first <= best <= last:
        notes.append(f"best lr={points[best]:.3g} lies outside the grid "
                     f"({points[first]:.3g}..{points[last]:.3g}): extended within bounds")
    return Plan(proposals, finished, points[best] if best is not None else None,
                spent + _cost(proposals), cap, grid, notes)


def _cost(proposals: list[Proposal]) -> float:
    return sum(p.budget for p in proposals)
