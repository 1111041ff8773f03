"""TensorBoard: event files in the trial's run folder (``RUN_DIR/tb``), its hyperparameters in the
HParams view (``tensorboard --logdir lorasweep-out/runs/SWEEP``: the view is then the sweep's
learning-rate sensitivity table).

Scalars: ``train/loss``, ``train/lr/<group>``, ``train/grad_norm`` (and ``/<group>``),
``train/tokens`` per step; ``eval/<metric>`` (and ``test/<metric>`` at the end) per evaluation.
A resumed trial opens its writer with ``purge_step`` after the checkpoint's step: TensorBoard then
drops what an earlier attempt wrote from there, and each step reads back once.

``log.project`` does not apply (the event files live in the trial's run folder), nor does
``log.artifacts`` (TensorBoard keeps no files: the adapter is in the run folder beside them). The
provenance (sweep, study, search, lorasweep's version) is among the hyperparameters.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ...config import TrialSpec
from . import scalars

__all__ = ["TensorBoardSink", "make_sink"]


def make_sink(replay: bool = False, options: dict[str, Any] | None = None) -> TensorBoardSink:
    return TensorBoardSink(replay, options)


class TensorBoardSink:
    """``replay``: the whole trial again (``lorasweep export --to tensorboard``), purging what
    the folder had from step 1."""

    def __init__(self, replay: bool = False, options: dict[str, Any] | None = None) -> None:
        self.replay, self.options = replay, dict(options or {})
        self.ref = ""
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
        self.ref = str(Path(spec.run_dir) / "tb")
        self.writer = SummaryWriter(self.ref, purge_step=purge)

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
            config = trackers.tracker_config(self.spec, self.options.get("search", ""))
            params = {k: v for k, v in config.items() if isinstance(v, (int, float, str, bool))}
            finals = {f"hparam/{k}": float(v) for k, v in summary.items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool)
                      and math.isfinite(v)}
            finals["hparam/diverged"] = float(bool(summary.get("diverged")))
            # at the last step, in the scalars' own event file: a later replay's purge drops
            # them with the rest (in a file of their own, as add_hparams writes them, they
            # could be read before the scalars' file and be purged by it: file names sort
            # by a per-process counter as text, so a tenth file sorts before the ninth)
            from torch.utils.tensorboard.summary import hparams

            writer = self.writer._get_file_writer()
            for summary_pb in hparams(params, finals):
                writer.add_summary(summary_pb, self.last_step)
            for name, value in finals.items():
                self.writer.add_scalar(name, value, self.last_step)
        self.writer.close()
        self.writer = None
