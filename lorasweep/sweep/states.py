"""How a study's trials stand: the one place their states are counted.

Only a grid point's trials count. A trial popped without a grid point is a stray: failed at once,
never run, never counted. A failed trial whose grid point has a later or finished trial (waiting,
running, complete or pruned) was retried: that other trial is what counts for the point, and
the failure counts as ``retried``, not ``failed``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

__all__ = ["STATES", "STOPPED_ATTR", "by_point", "count_states", "counted", "failures", "live_points"]

#: A study's user attribute: why a worker stopped it (its first trials failed alike), or None.
STOPPED_ATTR = "stopped"
#: The states :func:`count_states` counts, as lorasweep names them.
STATES = ("waiting", "running", "complete", "failed", "pruned")
_NAMES = {"WAITING": "waiting", "RUNNING": "running", "COMPLETE": "complete", "PRUNED": "pruned",
          "FAIL": "failed"}
_LIVE = ("WAITING", "RUNNING", "COMPLETE", "PRUNED")


def counted(trials: Iterable[Any]) -> list[Any]:
    """The trials of a grid point (strays left out), in the given order."""
    return [t for t in trials if "grid_point" in t.user_attrs and not t.user_attrs.get("stray")]


def by_point(trials: Iterable[Any]) -> dict[str, list[Any]]:
    """The counted trials of each grid point."""
    points: dict[str, list[Any]] = {}
    for trial in counted(trials):
        points.setdefault(trial.user_attrs["grid_point"], []).append(trial)
    return points


def live_points(trials: Iterable[Any]) -> set[str]:
    """Grid points with a trial that waits, runs or finished without failing: their failures
    were retried, and nothing is enqueued for them again."""
    return {t.user_attrs["grid_point"] for t in counted(trials) if t.state.name in _LIVE}


def failures(trials: Iterable[Any]) -> Counter:
    """How many times each grid point's trial failed."""
    return Counter(t.user_attrs["grid_point"] for t in counted(trials) if t.state.name == "FAIL")


def count_states(trials: Iterable[Any]) -> Counter:
    """The counted trials per state (:data:`STATES`); a failure since retried counts as
    ``retried``, not ``failed``; ``diverged`` counts the complete trials that diverged."""
    trials = counted(trials)
    live = live_points(trials)
    counts: Counter = Counter(dict.fromkeys(STATES, 0))
    for t in trials:
        state = _NAMES.get(t.state.name)
        if state is None:
            continue
        if state == "failed" and t.user_attrs["grid_point"] in live:
            state = "retried"
        counts[state] += 1
        counts["diverged"] += state == "complete" and bool(t.user_attrs.get("diverged"))
    return counts
