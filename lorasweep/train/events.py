"""A trial's own event log: ``events.jsonl`` in its run folder, one JSON object a line.

Written always, with no dependency; the report's loss curves and every tracker read it. Records:

- ``{"event": "step", "step", "loss", "lr": {group: lr}, "grad_norm", "grad_norm_groups":
  {group: norm}, "tokens"}``: one per optimizer step. ``lr`` is each parameter group's learning
  rate as the optimizer used it at that step (before the scheduler moved it); ``grad_norm`` is the
  gradient norm before clipping, over all trained tensors and per group (so LoRA+'s A and B, or a
  zero-initialised B's early gradient, are visible); ``tokens`` counts the tokens seen so far.
- ``{"event": "eval", "step", "validation", "loss"}``: one per evaluation; the trial's last one
  has ``"final": true`` (and ``"test"`` where the test split was scored). A minimized task's
  trial also scores validation before its first step: ``{"event": "eval", "step": 0,
  "validation"}``, without a training loss.

A resumed trial continues from its checkpoint's step: :meth:`EventLog.start` first drops every
record after that step (the loop redoes those steps bit for bit), so each step is logged once.
Non-finite numbers are written as ``null`` (strict JSON).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .._json import json_safe

__all__ = ["EVENTS_FILE", "EventLog", "loss_curve", "read_events"]

EVENTS_FILE = "events.jsonl"


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """The records of an event log (a folder holding ``events.jsonl``, or the file itself); a line
    cut short by a killed process is skipped. A missing log gives ``[]``."""
    path = Path(path)
    if path.is_dir():
        path = path / EVENTS_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def loss_curve(run_dir: str | Path | None, points: int = 200) -> list[list[float]]:
    """``[[step, loss], ...]`` from a trial's event log, at most ``points`` of them (evenly spaced
    steps, the first and the last always kept); ``[]`` when the trial has no log."""
    if not run_dir:
        return []
    steps = [[r["step"], r["loss"]] for r in read_events(run_dir)
             if r.get("event") == "step" and r.get("loss") is not None]
    if len(steps) <= points:
        return steps
    stride = (len(steps) - 1) / (points - 1)
    return [steps[round(i * stride)] for i in range(points)]


class EventLog:
    """Appends records to a run folder's ``events.jsonl``; each line is flushed as written, so a
    killed process leaves every record before its last line."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / EVENTS_FILE
        self._file: Any = None
        self._evals: set[int] = set()

    def start(self, step: int) -> None:
        """Open the log for a trial that starts after ``step`` (0: from scratch), dropping what an
        earlier attempt logged after it."""
        self.close()
        kept = [r for r in read_events(self.path) if int(r.get("step", 0)) <= step]
        self._evals = {int(r["step"]) for r in kept if r.get("event") == "eval"}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(tmp, self.path)
        self._file = self.path.open("a", buffering=1)

    def write(self, record: dict[str, Any]) -> bool:
        """Append ``record``; False (nothing written) for an evaluation at a step already logged
        (a rung retried at its own last step evaluates it again, to the same score)."""
        if self._file is None:
            self.start(0)
        if record.get("event") == "eval":
            step = int(record["step"])
            if step in self._evals:
                return False
            self._evals.add(step)
        self._file.write(json.dumps(json_safe(record)) + "\n")
        return True

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
