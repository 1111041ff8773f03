"""Checkpoint cost on the default sweep (embedded MiniLM, sentiment, LoRA r8, batch 32).

    python benchmarks/bench_checkpoint.py [--steps 80] [--every 10] [--rounds 2] [--lr 1e-3]

Runs the default sweep's trial (its model, task, variant and training settings; the step budget
can be shortened; the final scoring looks at 32 examples only, it is not what is measured) in
interleaved rounds, three ways side by side in one process:

- *off*: ``train.checkpoint_every=0``;
- *default*: the default (a checkpoint every 10 minutes of training: none in a short trial, so
  this measures the per-step stop-request check alone);
- *every N*: a checkpoint every ``--every`` steps.

Printed: the training seconds of each (median over rounds), the ratios to *off*, and, from the
*every N* runs, the checkpoint's size and the mean seconds one save takes; then the seconds to
load it back (``torch.load``), and the saves' own share of the training time (their timed
seconds over the run's), which a loaded machine's noise does not blur as it blurs the ratios.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path


def _spec(root: Path, name: str, steps: int, every: int | None, lr: float):
    from lorasweep.config import SweepSpec, TrialSpec
    from lorasweep.sweep.spec import sweep_tasks, train_for

    default = SweepSpec()
    task = sweep_tasks(default)[0]
    train = dataclasses.replace(train_for(default, task), steps=steps, checkpoint_every=every)
    options = {**default.task_options, "eval_limit": 32}  # scoring is not what is measured
    return TrialSpec(sweep="bench", study=f"bench-{name}", storage="", trial_number=0,
                     model=default.model, task=task, task_options=options,
                     model_options={}, variant=default.variants[0], lr=lr, seed=0, train=train,
                     run_dir=str(root / name / f"lr={lr:g},seed=0"))


class _Saves:
    """Keeps the facts of every save (size, seconds)."""

    def __init__(self) -> None:
        self.saved: list[dict] = []

    def on_start(self, total: int) -> None: ...
    def on_step(self, step: int, loss: float) -> None: ...
    def report(self, step: int, value: float) -> bool:
        return False

    def on_checkpoint(self, saved: dict) -> None:
        self.saved.append(saved)


def main() -> None:
    import torch

    from lorasweep.train.checkpoint import checkpoint_path
    from lorasweep.train.trial import run_trial

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    ways = {"off": 0, "default": None, f"every {args.every}": args.every}
    seconds: dict[str, list[float]] = {w: [] for w in ways}
    saves: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run_trial(_spec(root, "warmup", 2, 0, args.lr))  # load caches, first-call costs
        for r in range(args.rounds):
            order = list(ways)[r % len(ways):] + list(ways)[: r % len(ways)]
            for way in order:
                spec = _spec(root, f"{way.replace(' ', '')}-{r}", args.steps, ways[way], args.lr)
                recorder = _Saves()
                result = run_trial(spec, recorder)
                seconds[way].append(result.attrs["train_time_s"])
                if ways[way]:
                    saves += recorder.saved
                print(f"round {r} {way:<9} train {result.attrs['train_time_s']:.2f} s, "
                      f"{len(recorder.saved)} checkpoints", flush=True)
        # one more save to time loading it back
        spec = _spec(root, "load", args.every + 1, args.every, args.lr)

        class _Stop(_Saves):
            def on_step(self, step: int, loss: float) -> None:
                if step == args.every + 1:
                    raise KeyboardInterrupt

        try:
            run_trial(spec, _Stop())
        except KeyboardInterrupt:
            pass
        started = time.perf_counter()
        torch.load(checkpoint_path(spec), map_location="cpu", weights_only=True)
        load_s = time.perf_counter() - started

    off = statistics.median(seconds["off"])
    print(f"\nsteps {args.steps}, rounds {args.rounds}, threads {torch.get_num_threads()}")
    for way, values in seconds.items():
        med = statistics.median(values)
        print(f"{way:<10} train {med:8.2f} s   ratio to off {med / off:.3f}")
    if saves:
        size = saves[-1]["bytes"]
        mean_save = statistics.mean(s["seconds"] for s in saves)
        print(f"checkpoint {size / 2**20:.2f} MiB ({size} bytes); save {mean_save * 1000:.0f} ms "
              f"(mean of {len(saves)}); load {load_s * 1000:.0f} ms")
        every = statistics.median(seconds[f"every {args.every}"])
        step_s = off / args.steps
        print(f"saves' share of the 'every {args.every}' training time: "
              f"{sum(s['seconds'] for s in saves) / args.rounds / every:.2%}; "
              f"one save = {mean_save / step_s:.3f} steps of {step_s:.2f} s; at the default "
              f"interval (600 s of training) the saves cost {mean_save / 600:.4%}")


if __name__ == "__main__":
    main()
