"""What logging costs per step on the default sweep (embedded MiniLM, sentiment, LoRA r8, batch 32).

    python benchmarks/bench_trackers.py [--steps 40] [--rounds 2] [--lr 1e-3]

Runs the default sweep's trial (its model, task, variant and training settings; the step budget
can be shortened; the final scoring looks at 32 examples only and is not what is measured) in
interleaved rounds, side by side in one process, with the reporters a worker would give it:

- *silent*: no reporter (no event log, nothing written to a store);
- *event log*: the worker's reporter on an in-memory Optuna trial: ``events.jsonl`` (a line per
  step) and the progress attribute, no tracker (what every trial pays);
- *tensorboard*: the same with ``--log tensorboard`` (every step: ``log.every=1``);
- *mlflow*: the same with ``--log mlflow`` on a local SQLite store (every step);
- *wandb offline*: the same with ``--log wandb`` under ``WANDB_MODE=offline`` (every step).

Printed: the training seconds of each (median over rounds), the ratios to *silent* and to
*event log* (the tracker's own cost per step), and the milliseconds the reporter spends on each step's record (the event log line and the trackers'
calls; opening a tracker's run is left out), timed around each call: on a loaded
machine the ratios blur, these do not.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path


def _spec(root: Path, name: str, steps: int, lr: float):
    from lorasweep.config import SweepSpec, TrialSpec
    from lorasweep.sweep.spec import sweep_tasks, train_for

    default = SweepSpec()
    task = sweep_tasks(default)[0]
    train = dataclasses.replace(train_for(default, task), steps=steps, checkpoint_every=0,
                                eval_every=0)
    options = {**default.task_options, "eval_limit": 32}  # scoring is not what is measured
    return TrialSpec(sweep="bench", study=f"bench-{name}", storage="", trial_number=0,
                     model=default.model, task=task, task_options=options,
                     model_options={}, variant=default.variants[0], lr=lr, seed=0, train=train,
                     run_dir=str(root / name / f"lr={lr:g},seed=0"))


def _reporter(spec, backends: list[str] | None):
    """None for *silent*; else the worker's own reporter on a real (in-memory) trial."""
    if backends is None:
        return None
    import optuna

    from lorasweep.sweep.worker import TrialEvents, _OptunaReporter

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial = optuna.create_study().ask()
    return _OptunaReporter(trial, TrialEvents(), spec, {"backends": backends, "every": 1})


def main() -> None:
    import torch

    from lorasweep.train.trial import run_trial

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    ways: dict[str, list[str] | None] = {"silent": None, "event log": [],
                                         "tensorboard": ["tensorboard"], "mlflow": ["mlflow"],
                                         "wandb offline": ["wandb"]}
    seconds: dict[str, list[float]] = {w: [] for w in ways}
    handling: dict[str, list[float]] = {w: [] for w in ways}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
        os.environ.update(WANDB_MODE="offline", WANDB_DIR=str(root / "wb"))
        run_trial(_spec(root, "warmup", 2, args.lr))  # load caches, first-call costs
        for r in range(args.rounds):
            order = list(ways)[r % len(ways):] + list(ways)[: r % len(ways)]
            for way in order:
                spec = _spec(root, f"{way.replace(' ', '')}-{r}", args.steps, args.lr)
                reporter = _reporter(spec, ways[way])
                spent = [0.0]
                if reporter is not None:
                    inner = reporter.on_event

                    def timed(record, inner=inner, spent=spent):
                        started = time.perf_counter()
                        inner(record)
                        if record["event"] == "step":  # opening a tracker run is not per step
                            spent[0] += time.perf_counter() - started

                    reporter.on_event = timed
                result = run_trial(spec, reporter)
                handling[way].append(spent[0] / args.steps)
                if reporter is not None:
                    reporter.finish(result.metrics, "completed")
                    reporter.close()
                seconds[way].append(result.attrs["train_time_s"])
                print(f"round {r} {way:<11} train {result.attrs['train_time_s']:.2f} s",
                      flush=True)
    silent, logged = statistics.median(seconds["silent"]), statistics.median(seconds["event log"])
    print(f"\nsteps {args.steps}, rounds {args.rounds}, threads {torch.get_num_threads()}")
    for way, values in seconds.items():
        med = statistics.median(values)
        print(f"{way:<12} train {med:8.2f} s ({med / args.steps * 1000:7.1f} ms/step)   "
              f"ratio to silent {med / silent:.3f}   to event log {med / logged:.3f}   "
              f"records {statistics.median(handling[way]) * 1000:6.2f} ms/step")


if __name__ == "__main__":
    main()
