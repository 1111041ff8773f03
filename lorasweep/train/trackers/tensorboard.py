"""TensorBoard: event files in the trial's run folder (``RUN_DIR/tb``), its hyperparameters in the
HParams view (``tensorboard --logdir lorasweep-out/runs/SWEEP``: the view is then the sweep's
learning-rate sensitivity table).

Scalars: ``train/loss``, ``train/lr/<group>``, ``train/grad_norm`` (and ``/<group>``),
``train/tokens`` per step; ``eval/<metric>`` (and ``test/<metric>`` at the end) per evaluation.
A resumed trial opens its writer with ``purge_step`` after the checkpoint's step: TensorBoard then
drops what an earlier attempt wrote from there, and each step reads back once.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ...config import TrialSpec
from . import scalars

__all__ = ["TensorBoardSink", "make_sink"]


def make_sink(replay: bool = False) -> TensorBoardSink:
    return TensorBoardSink(replay)


class TensorBoardSink:
    """``replay``: the whole trial again (``lorasweep export --to tensorboard``), purging what
    the folder had from step 1."""

    def __init__(self, replay: bool = False) -> None:
        self.replay = replay
        self.last_step = 0
        self.writer: Any = None
        self.spec: TrialSpec | None = None
        self.metric = "score"

    def open(self, spec: TrialSpec, resume_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        from . import metric_of

        self.metric = metric_of(spec.task)
        self.spec = spec
        purge = 1 if self.replay else (resume_step + 1 if resume_step else None)
        self.writer = SummaryWriter(str(Path(spec.run_dir) / "tb"), purge_step=purge)

    def log(self, record: dict[str, Any]) -> None:
        step, add = int(record["step"]), self.writer.add_scalar
        self.last_step = step
        for name, value in scalars(record, self.metric).items():
            add(name, value, step)

    def close(self, summary: dict[str, Any], state: str) -> None:
        from .. import trackers

        if self.writer is None:
            return
        if state in ("completed", "diverged", "pruned"):
            params = {k: v for k, v in trackers.tracker_config(self.spec).items()
                      if isinstance(v, (int, float, str, bool))}
            finals = {f"hparam/{k}": float(v) for k, v in summary.items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool)
                      and math.isfinite(v)}
            finals["hparam/diverged"] = float(bool(summary.get("diverged")))
            # at the last step: a later replay's purge drops them with the rest
            self.writer.add_hparams(params, finals, run_name=".", global_step=self.last_step)
        self.writer.close()
        self.writer = None
