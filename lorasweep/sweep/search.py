r"""The adaptive learning-rate search: a variant's best grid LR for a fraction of the grid's steps.

**The curves it is built for.** Score against :math:`x = \log_{10}\eta` is unimodal: a flat
region at chance below a rising edge, a peak, then a sharp collapse (often a non-finite loss).
Seeds add noise of about half a point at the peak and much more on the rising edge, and a peak
may sit at the grid's edge. The search works on the grid's own learning rates (the *lattice*
:math:`x_0 < \dots < x_{n-1}`, extended past each edge by ``extend`` points at the edge's spacing,
never above :math:`\eta = 1`), so its answer is a grid point and compares with the grid directly.

**Method: successive halving over the grid, on resumed trials.** Every trial of a learning rate
follows the full-budget schedule (warm-up and decay over all the steps); a trial of *fidelity*
:math:`r < 1` stops after :math:`r` of the steps, is scored on validation alone and keeps its
checkpoint, and the trial of the next rung resumes it (:mod:`lorasweep.train.loop`). A point's
rungs are therefore one run cut in pieces: its full-budget result is the grid's, bit for bit,
and a promotion costs only the steps it adds.

1. *Rung 0*: every grid point, every seed, at fidelity :math:`r_0` = ``probe_fidelity``
   (default 0.3). When the best point is an end of the probed range and ``extend`` allows, the
   next lattice point outward is probed too, within the step budget (the run says so).
2. *Promotions*: rungs at :math:`2r_0, 4r_0, \dots` below 1, then 1. Each keeps the best points
   of the previous rung (at most half of them; as many as the step budget allows, at least
   one; the last rung keeps one). Points are ranked by their mean validation score over seeds;
   scores within ``tie`` (default 0.05) of each other count as equal and those points are
   ranked by their recent training loss (the mean over the last third of the rung's steps),
   which tells apart runs that all sit at chance (:func:`ranked`).
3. The answer is the best full-budget point (with several seeds, their mean).

The transfer search (:mod:`.transfer`) runs the same plan with a *window*: rung 0 starts from a
few lattice points around a predicted LR instead of every grid point (see :func:`plan`).

With the study's 10-point half-decade grid (1e-5..3e-1), one seed and the defaults (budget 0.4,
:math:`r_0` = 0.3) this is 10 points at 0.3, the best 2 resumed to 0.6, the best resumed to 1:
:math:`3 + 0.6 + 0.4 = 4` full trials, 40% of the grid.

**Why this method.** Measured on the embedded task (MiniLM + Rotten Tomatoes, 100 steps, the
fine grid): nothing is learnt before 30-60% of the schedule at any LR, and the peak is one grid
point wide (3.16e-3 at 0.79 test; its neighbours 0.76 and, past the collapse, 0.50). Short runs
with their own compressed schedule are biased towards higher LRs: 40-step runs ranked 1e-2
first, which collapses at 100 steps. The same LR's run stopped at 30% of the full schedule is
already ahead (3.16e-3 at 0.70, every other LR <= 0.55), so a short rung of the *full* schedule
ranks correctly where a short run of its own does not, and resuming it makes the rung cheap.
Golden-section search in log-LR needs ~5 full trials and is blind in the flat chance region;
Optuna's TPE/GP samplers with 4 trials over 4.5 decades sample mostly the flat and collapsed
regions (on the embedded task TPE found the peak in one of its repetitions, not reliably).

**Synchronous rungs.** A rung's promotions are decided once all its points are scored (unlike
ASHA, which promotes from the first finished trials and, with ten points and one or two kept,
would promote on a partial ranking). Workers wait only at a rung's end, and only when no other
study of the sweep (another variant, task or seed set) has trials waiting.

**Trials are ordinary trials.** Each proposal is an enqueued trial with ``lr`` and ``seed``
params and the user attributes ``grid_point`` (its key), ``search`` and ``budget`` (the
fidelity, 1.0 at full). The plan is a pure function of the study's trials, so a killed search
resumes where it stopped, nothing is repeated, and any number of workers on any launcher can
extend it: proposals are made under the study's lock (:mod:`.lock`).
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from typing import Any

from ..text import format_lr

__all__ = ["DEFAULT_OPTIONS", "PLANNED", "Observation", "Plan", "Proposal", "SearchError",
           "check_window", "grid_point", "lattice", "parse_options", "plan", "point_key",
           "ranked", "rungs", "schedule", "window_around"]

#: ``window`` and ``transfer_budget``: the transfer search's (:mod:`.transfer`): how many lattice
#: points a variant's first rung probes around its predicted LR, and its step budget (a fraction
#: of the grid's, its edge extensions included; a widened window may spend up to ``budget``).
DEFAULT_OPTIONS: dict[str, Any] = {"budget": 0.4, "probe_fidelity": 0.3, "extend": 2, "tie": 0.05,
                                   "window": 3, "transfer_budget": 0.25}
#: The searches whose trials a plan proposes (a grid enqueues every point at once).
PLANNED = ("adaptive", "transfer")
_MAX_LR = 1.0


class SearchError(ValueError):
    """A search option that cannot be used (one line, with the fix)."""


def parse_options(options: dict[str, Any] | None) -> dict[str, Any]:
    opts = {**DEFAULT_OPTIONS, **(options or {})}
    unknown = sorted(set(opts) - set(DEFAULT_OPTIONS))
    if unknown:
        raise SearchError(f"unknown search option {unknown[0]!r}: known are "
                          f"{', '.join(sorted(DEFAULT_OPTIONS))} (e.g. --set search.budget=0.4)")
    for name in ("budget", "probe_fidelity", "transfer_budget"):
        value = opts[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise SearchError(f"search.{name} must be a number in (0, 1], got {value!r}")
    if isinstance(opts["extend"], bool) or not isinstance(opts["extend"], int) or opts["extend"] < 0:
        raise SearchError(f"search.extend must be an integer >= 0, got {opts['extend']!r}")
    window = opts["window"]
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise SearchError(f"search.window must be an integer >= 1, got {window!r} "
                          "(e.g. --set search.window=3)")
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
    #: What tells tied probes apart: a probe's recent training loss (the mean over the last
    #: third of its steps), else its final training loss.
    loss: float | None = None


@dataclasses.dataclass(frozen=True)
class Proposal:
    lr: float
    seed: int
    budget: float
    phase: str  # rung0, rung1, ... (its rung)

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
    trials: int = 0  # the trials its rungs run in all (as far as known: an extension adds)


def rungs(first: float) -> list[float]:
    """The fidelities of the rungs: ``first``, doubling while below 1, then 1."""
    out, f = [], float(first)
    while f < 1.0 - 1e-9:
        out.append(_round(f))
        f *= 2
    return out + [1.0]


def _rung_cost(fidelities: list[float], keep: list[int], seeds: int) -> float:
    """Full-trial equivalents of the rungs, each promotion paying only the steps it adds."""
    return seeds * sum(k * (f - (fidelities[j - 1] if j else 0.0))
                       for j, (f, k) in enumerate(zip(fidelities, keep, strict=True)))


def _keep(points: int, seeds: int, fidelities: list[float], cap: float) -> list[int] | None:
    """How many points each rung keeps within ``cap`` full trials, or None if none fits."""
    keep = [points] + [1] * (len(fidelities) - 1)
    if _rung_cost(fidelities, keep, seeds) > cap + 1e-9:
        return None
    for j in range(1, len(fidelities) - 1):
        while keep[j] < math.ceil(keep[j - 1] / 2):
            wider = keep[:j] + [keep[j] + 1] + keep[j + 1:]
            if _rung_cost(fidelities, wider, seeds) > cap + 1e-9:
                break
            keep = wider
    return keep


def schedule(points: int, seeds: int, options: dict[str, Any] | None = None) -> list[int]:
    """How many points each rung keeps (rung 0: all ``points``), filling the step budget: each
    promotion keeps at most half of the previous rung, and the last rung keeps one.
    SearchError when the budget cannot pay for rung 0 and one point resumed to the end."""
    opts = parse_options(options)
    fidelities = rungs(opts["probe_fidelity"])
    keep = _keep(points, seeds, fidelities, opts["budget"] * points * seeds)
    if keep is None:
        least = (points * fidelities[0] + 1 - fidelities[0]) / points
        raise SearchError(
            f"search.budget={opts['budget']:g} cannot pay for {points} learning "
            f"rate{'s' if points != 1 else ''} probed at "
            f"search.probe_fidelity={opts['probe_fidelity']:g} and one of them resumed to the full "
            f"budget (that needs search.budget >= {math.ceil(least * 100) / 100:g}): raise "
            "search.budget, lower search.probe_fidelity, or use --search grid")
    return keep


def check_window(points: int, options: dict[str, Any] | None = None) -> None:
    """SearchError when ``transfer_budget`` (of a grid of ``points``) cannot pay for a window
    probed at ``probe_fidelity`` and one of its points resumed to the full budget."""
    opts = parse_options(options)
    first, window = rungs(opts["probe_fidelity"])[0], opts["window"]
    need = (window * first + 1 - first) / points
    if opts["transfer_budget"] < need - 1e-9:
        raise SearchError(
            f"search.transfer_budget={opts['transfer_budget']:g} cannot pay for a window of "
            f"{window} learning rates probed at search.probe_fidelity={opts['probe_fidelity']:g} "
            f"and one resumed to the full budget over this {points}-point grid (that needs "
            f"search.transfer_budget >= {math.ceil(need * 100) / 100:g}): raise it, or lower "
            "search.window")


def window_around(lrs: list[float], lr: float, options: dict[str, Any] | None = None) -> list[float]:
    """The ``window`` lattice points nearest ``lr`` in log-LR (the lattice: the grid and its
    ``extend`` points past each edge), as a run of neighbours; at an end of the lattice it
    shifts inward."""
    opts = parse_options(options)
    points, _, _ = lattice(lrs, opts["extend"])
    size = min(opts["window"], len(points))
    near = min(range(len(points)), key=lambda i: (abs(math.log10(points[i] / lr)), i))
    start = min(max(near - (size - 1) // 2, 0), len(points) - size)
    return points[start:start + size]


def _flat(values: list[float], chance: float | None, tie: float) -> bool:
    """Every value within ``tie`` of the others and, where chance is known, of chance."""
    return (max(values) - min(values) <= tie
            and (chance is None or max(values) <= chance + tie))


def _widen(probed: list[int], first: int, last: int) -> list[int]:
    """``probed`` and every other grid point, in step with the first probed point."""
    return sorted(set(probed) | {i for i in range(first, last + 1) if (i - probed[0]) % 2 == 0})


def _score(obs: list[Observation], worst: float) -> tuple[float, float] | None:
    """(mean value, -mean loss) over seeds when every one is done; None while any is pending."""
    if not obs or any(o.state == "pending" for o in obs):
        return None
    values = [o.value if o.state == "complete" and o.value is not None else worst for o in obs]
    losses = [o.loss if o.loss is not None and math.isfinite(o.loss) else math.inf
              for o in obs]
    return sum(values) / len(values), -sum(losses) / len(losses)


def ranked(scores: dict[int, tuple[float, float]], tie: float) -> list[int]:
    """Points best first. Scores within ``tie`` of each other do not tell points apart: the
    best remaining score and those within ``tie`` of it form a group, ranked by their recent
    training loss (lowest first); then the next group from what remains. Equal ranks go to the
    lower LR.

    At chance (0.50 for a run that predicts one class, 0.52 for one that drifts) the training
    loss still orders the runs: the rung's runs of one seed trained on the same batches, so
    their losses compare pairwise, and the loss falls as soon as an LR starts to learn, before
    held-out scores move. Measured on the embedded task at 30% of the schedule, where LoRA,
    DoRA or LoRA+ sat at chance at every LR (with training seed 1): the lowest recent loss was
    each variant's best grid LR (LoRA+ 3.16e-4, LoRA and DoRA 3.16e-3), while the lowest
    validation loss was at the lowest LRs, which had not moved (a model still at chance that
    has begun to learn is confidently wrong on held-out data)."""
    left, out = set(scores), []
    while left:
        top = max(scores[i][0] for i in left)
        group = sorted((i for i in left if scores[i][0] >= top - tie),
                       key=lambda i: (-scores[i][1], -scores[i][0], i))
        out += group
        left -= set(group)
    return out


def plan(lrs: list[float], seeds: list[int], observations: list[Observation],
         options: dict[str, Any] | None = None, worst: float = 0.0,
         retry_failed: int = 1, window: list[float] | None = None,
         chance: float | None = None) -> Plan:
    """The next proposals given the trials so far (a pure function; see the module docstring).

    ``retry_failed``: a point whose trials all failed is proposed again while it has failed fewer
    than this many times; past that it counts as the worst score.

    ``window`` (the transfer search): rung 0 probes only these lattice points, within
    ``transfer_budget``; the edge extension walks outward from them as from the grid's edges.
    When every point of the window scores within ``tie`` of the others and of ``chance`` (the
    flat region, where nothing tells the LRs apart), or when the walk from its edge reaches
    ``transfer_budget`` still at an edge, rung 0 widens to every other grid point (in step with
    the window's first point), and the budget to ``budget``: a wrong prior costs steps. A best
    probe with an unprobed lattice neighbour (past an end, or a gap of the widened window) has
    that neighbour probed too, within the budget.
    """
    opts = parse_options(options)
    points, first, last = lattice(lrs, opts["extend"])
    index = {lr: i for i, lr in enumerate(points)}
    fidelities, seeds = rungs(opts["probe_fidelity"]), list(seeds)
    grid = float((last - first + 1) * len(seeds))
    cap = (opts["budget"] if window is None else opts["transfer_budget"]) * grid
    by_point: dict[tuple[int, float], list[Observation]] = defaultdict(list)
    failures: dict[tuple[int, int, float], int] = defaultdict(int)
    for o in observations:
        i = index.get(_round(o.lr))
        if i is None:
            continue  # a point of another grid (the lattice changed): ignore it
        if o.state == "failed":  # not counted: its retry (or its worst score) stands for it
            failures[(i, o.seed, _round(o.budget))] += 1
        else:
            by_point[(i, _round(o.budget))].append(o)
    proposals: list[Proposal] = []
    notes: list[str] = []

    def scored(members: list[int], rung: int) -> dict[int, tuple[float, float]]:
        """The scores of ``members`` at ``rung`` that are known; proposes the missing trials."""
        out = {}
        fidelity = fidelities[rung]
        for i in members:
            obs = list(by_point[(i, fidelity)])
            for s in [s for s in seeds if s not in {o.seed for o in obs}]:
                if failures[(i, s, fidelity)] >= retry_failed:
                    obs.append(Observation(points[i], s, fidelity, "failed"))
                else:
                    proposals.append(Proposal(points[i], s, fidelity, f"rung{rung}"))
            score = _score(obs, worst) if len(obs) == len(seeds) else None
            if score is not None:
                out[i] = score
        return out

    def cost(i: int, fidelity: float) -> float:
        """What a trial of point ``i`` at ``fidelity`` trains: the steps past the rung below,
        which it resumes (from the start when that rung has no trial of the point)."""
        lower = [f for f in fidelities if f < fidelity]
        return fidelity - (lower[-1] if lower and by_point.get((i, lower[-1])) else 0.0)

    def spent() -> float:
        """Full-trial equivalents done, running or proposed."""
        return (sum(len(obs) * cost(i, f) for (i, f), obs in list(by_point.items()))
                + sum(cost(index[p.lr], p.budget) for p in proposals))

    def trials(count: int) -> int:
        """The trials of the rungs when rung 0 has ``count`` points."""
        return len(seeds) * sum(_keep(count, len(seeds), fidelities, cap) or [count])

    def unfinished() -> Plan:
        return Plan(proposals, False, None, spent(), cap, grid, notes, trials(len(probed)))

    # Rung 0: every grid point (or the window), extended outward while the best point is an end
    # of the range; a flat window widens first.
    probed = (list(range(first, last + 1)) if window is None
              else sorted({index[_round(lr)] for lr in window if _round(lr) in index}))
    widened = window is None
    while True:
        scores = scored(probed, 0)
        if len(scores) < len(probed):
            return unfinished()
        shown = ", ".join(format_lr(lr) for lr in window or [])
        if not widened and _flat([v for v, _ in scores.values()], chance, opts["tie"]):
            probed, cap, widened = _widen(probed, first, last), max(cap, opts["budget"] * grid), True
            notes.append(f"the window (lr={shown}) was flat at fidelity {fidelities[0]:g}: "
                         "widened to every other grid point")
            continue
        best = ranked(scores, opts["tie"])[0]
        # a lattice neighbour of the best probe not probed yet: past an end of the probed range
        # (the edge extension), or a gap a widened window left (every other grid point)
        beside = [j for j in (best - 1, best + 1) if 0 <= j < len(points) and j not in probed]
        if not beside:
            break
        step = beside[0]
        side, edge = ("lower" if step < best else "upper"), not min(probed) < step < max(probed)
        if _keep(len(probed) + 1, len(seeds), fidelities, cap) is None and not widened:
            probed, cap, widened = _widen(probed, first, last), max(cap, opts["budget"] * grid), True
            notes.append(f"the walk from the window (lr={shown}) reached the step budget still at "
                         "its edge: widened to every other grid point")
            continue
        if _keep(len(probed) + 1, len(seeds), fidelities, cap) is None:
            at = format_lr(points[best])
            notes.append(f"best probe at the grid's {side} edge (lr={at}): the step budget allows "
                         "no probe past it" if edge else
                         f"the step budget allows no probe beside the best (lr={at})")
            break
        probed.append(step)
        notes.append(f"best probe at the {side} edge: extended the search to "
                     f"lr={format_lr(points[step])}" if edge else
                     f"probed lr={format_lr(points[step])} beside the best probe "
                     f"(lr={format_lr(points[best])}), between the widened window's points")
    values = [value for value, _ in scores.values() if value > worst]
    if len(values) >= 2 and max(values) - min(values) <= opts["tie"]:
        notes.append(f"every probe at fidelity {fidelities[0]:g} scored within {opts['tie']:g} of "
                     "the others: their recent training losses ranked them, and the answer may be a "
                     "guess (raise search.probe_fidelity and search.budget, or use --search grid)")
    keep = _keep(len(probed), len(seeds), fidelities, cap) or [1] * len(fidelities)

    # Promotions: the best of each rung resume to the next.
    for rung in range(1, len(fidelities)):
        kept = ranked(scores, opts["tie"])[:keep[rung]]
        scores = scored(kept, rung)
        if len(scores) < len(kept):
            return unfinished()
    best = ranked(scores, opts["tie"])[0]
    if not first <= best <= last:
        notes.append(f"best lr={format_lr(points[best])} lies outside the grid "
                     f"({format_lr(points[first])}..{format_lr(points[last])}): extended within bounds")
    return Plan(proposals, True, points[best], spent(), cap, grid, notes, trials(len(probed)))
